"""What declarations make of one event of one row: a ``Change`` per declaration.

Moved below the registry so capture modes compute changes from the declarations the registry
pushed down (``table.Table``), without calling back up into it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterable

from django.db import models

from .. import tracking
from ..declarations import Change, Declaration, Seen, pk_of
from ..envelope import CREATED, DELETED, UPDATED

_version_lock = threading.Lock()
_last_version = 0


def next_version() -> int:
    """A per-row version: microseconds since the epoch, strictly increasing in this process.

    Taken in the save's post_save/post_delete, while the database holds the row's write lock, so
    a later write of the row (waiting for that lock) gets a larger one on machines whose clocks
    agree. Microseconds keep it below 2**53, exact as a JavaScript number."""
    global _last_version
    now = time.time_ns() // 1000
    with _version_lock:
        _last_version = now if now > _last_version else _last_version + 1
        return _last_version


def changes_of(declarations: Iterable[Declaration], instance: models.Model, event: str,
               previous: dict[str, Any] | None = None) -> list[Change]:
    """What each declaration makes of ``event`` of ``instance``. ``previous``: the row's values
    before (default: its snapshot; None when the row was never loaded here)."""
    pk = pk_of(instance)
    version = next_version()
    if event != CREATED and previous is None:
        previous = tracking.previous(instance)
    out = []
    before: Seen | None
    after: Seen | None
    for d in declarations:
        if event == CREATED:
            before, after = None, d.seen(instance, CREATED)
        else:
            if previous is not None:
                before = d.seen_before(instance, previous, event)
            else:  # never loaded here (built by hand, loaddata, a migration): taken as unchanged
                before = d.seen(instance, event)
            after = None if event == DELETED else d.seen(instance, UPDATED)
        out.append(Change(d, pk, before, after, version))
    return out
