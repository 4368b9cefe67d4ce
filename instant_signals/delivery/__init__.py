"""Delivery backends: how recorded changes reach Centrifugo. ``get_backend()`` is the one place
that reads ``INSTANT_SIGNALS["DELIVERY"]``.

A backend has ``record(change, using)`` and ``record_many(changes, using)``. Adding a mode is
one module in this package and one line in ``BACKENDS``. Backends are imported when first used
(the outbox one needs the app's models, which cannot load while Django starts).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .. import conf
from ..declarations import Change

BACKENDS = {
    "on_commit": "instant_signals.delivery.on_commit.OnCommitBackend",
    "outbox": "instant_signals.delivery.outbox.OutboxBackend",
}


class Backend(Protocol):
    name: str

    def record(self, change: Change, using: str) -> None: ...

    def record_many(self, changes: Iterable[Change], using: str) -> None: ...


def get_backend() -> Backend:
    """The backend ``INSTANT_SIGNALS["DELIVERY"]`` names."""
    return _backend(conf.app_setting("DELIVERY"))


@lru_cache(maxsize=None)
def _backend(mode: str) -> Backend:
    try:
        path = BACKENDS[mode]
    except (KeyError, TypeError):
        raise ImproperlyConfigured(
            f"INSTANT_SIGNALS['DELIVERY'] must be one of {sorted(BACKENDS)}, not {mode!r}"
        ) from None
    backend: Backend = import_string(path)()
    return backend


def is_durable() -> bool:
    """Durable mode: a change must not commit without its event (errors roll it back)."""
    return get_backend().name == "outbox"
