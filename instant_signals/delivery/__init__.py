"""Delivery backends: how recorded changes reach Centrifugo. ``get_backend()`` is the one place
that reads ``INSTANT_SIGNALS["DELIVERY"]``.

A backend declares ``name`` (the ``DELIVERY`` value that picks it) and ``durable`` (a change
must not commit without its event, so errors roll the change back), and has one method,
``record_many(changes, using)``. Adding a mode is one module in this package and one line in
``BACKENDS``; system checks and ``is_durable()`` read the backends' own attributes. Backends are
imported when first used (the outbox one needs the app's models, which cannot load while Django
starts).

Inside ``testing.capture_broadcasts()`` every mode hands its changes to the capture backend
instead, before any real backend sees them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .. import conf, reporting
from ..declarations import Change

#: The delivery backends, one dotted path each; their ``name`` is the ``DELIVERY`` value.
BACKENDS = (
    "instant_signals.delivery.on_commit.OnCommitBackend",
    "instant_signals.delivery.outbox.OutboxBackend",
)


class Backend(Protocol):
    name: str
    durable: bool

    def record_many(self, changes: Iterable[Change], using: str) -> None: ...


@lru_cache(maxsize=None)
def backends() -> dict[str, Backend]:
    """Every backend by name, in ``BACKENDS`` order."""
    found: dict[str, Backend] = {}
    for path in BACKENDS:
        backend: Backend = import_string(path)()
        found[backend.name] = backend
    return found


def modes() -> tuple[str, ...]:
    """The values ``INSTANT_SIGNALS["DELIVERY"]`` accepts."""
    return tuple(backends())


def configured_backend() -> Backend:
    """The backend ``INSTANT_SIGNALS["DELIVERY"]`` names."""
    mode = conf.app_setting("DELIVERY")
    try:
        return backends()[mode]
    except (KeyError, TypeError):
        raise ImproperlyConfigured(
            f"INSTANT_SIGNALS['DELIVERY'] must be one of {sorted(modes())}, not {mode!r}"
        ) from None


def get_backend() -> Backend:
    """Where changes go now: the configured backend, or the test capture inside
    ``capture_broadcasts()``."""
    backend = configured_backend()
    if reporting.capturing() is not None:
        from .capture import CAPTURE

        return CAPTURE
    return backend


def is_durable() -> bool:
    """Durable mode: a change must not commit without its event (errors roll it back)."""
    return configured_backend().durable
