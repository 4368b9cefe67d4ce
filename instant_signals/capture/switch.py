"""The kill switch: ``disable_broadcasts()`` and the ``ENABLED`` setting."""

from __future__ import annotations

from contextlib import ContextDecorator
from contextvars import ContextVar

from .. import conf

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
