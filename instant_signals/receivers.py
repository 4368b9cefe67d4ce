"""The ``post_save``/``post_delete`` handlers of one registry (it connects and owns them).

A save walks: these receivers → the registry (which declarations, which channels, previous
values from ``tracking``) → the delivery backend. A failure never breaks the caller's save,
except in durable mode, where a change must not commit without its event.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ContextDecorator
from contextvars import ContextVar
from typing import Any, Callable, Sequence

from django.db import models

from . import conf, delivery, tracking
from .declarations import Change
from .envelope import CREATED, DELETED, UPDATED

#: ``changes(instance, event, previous=None)``: what a registry makes of an event of a row.
ChangesOf = Callable[..., list[Change]]

logger = logging.getLogger("instant_signals")

_disabled: ContextVar[bool] = ContextVar("instant_signals_disabled", default=False)


class disable_broadcasts(ContextDecorator):
    """Publish no model events inside this block (or decorated function); thread and async safe.

    Snapshots are still taken, so the first event after the block compares with what the block
    saved."""

    def __enter__(self) -> disable_broadcasts:
        self._token = _disabled.set(True)
        return self

    def __exit__(self, *exc: object) -> None:
        _disabled.reset(self._token)


def broadcasting_enabled() -> bool:
    return not _disabled.get() and bool(conf.app_setting("ENABLED"))


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


class Receivers:
    """Signal handlers bound to one registry (through its ``changes`` method)."""

    def __init__(self, changes: ChangesOf):
        self.changes = changes

    def post_save(self, sender: type[models.Model], instance: models.Model, created: bool,
                  raw: bool = False, using: str = "default", **kwargs: Any) -> None:
        if raw:
            return
        if broadcasting_enabled():
            self.record(instance, CREATED if created else UPDATED, using)
        tracking.snapshot(instance, using)

    def post_delete(self, sender: type[models.Model], instance: models.Model,
                    using: str = "default", **kwargs: Any) -> None:
        if broadcasting_enabled():
            self.record(instance, DELETED, using)

    def record(self, instance: models.Model, event: str, using: str,
               previous: dict[str, Any] | None = None) -> None:
        self.record_all([(instance, previous)], event, using)

    def record_all(self, rows: Sequence[tuple[models.Model, dict[str, Any] | None]],
                   event: str, using: str) -> None:
        """Record ``event`` of each (instance, previous values or None) together: outside a
        transaction they go out in one request."""
        try:
            changes = [c for instance, previous in rows
                       for c in self.changes(instance, event, previous=previous)]
            if changes:
                delivery.get_backend().record_many(changes, using)
        except Exception:
            if delivery.is_durable():
                raise  # the change must roll back with its lost event
            labels = sorted({type(instance)._meta.label for instance, _ in rows})
            logger.exception("instant_signals: could not broadcast %s %s", ", ".join(labels),
                             event)
