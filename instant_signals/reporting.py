"""What happened to publications: counters, the ``broadcast_failed`` signal, the test capture.

A publication that cannot be delivered never raises into the caller's save: it is logged on the
``instant_signals`` logger, counted in ``stats["failed"]`` and sent as ``broadcast_failed``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from contextvars import ContextVar
from typing import Any, Iterator, NamedTuple

from django.dispatch import Signal

from .channels import namespace_of
from .exceptions import UNKNOWN_CHANNEL

__all__ = ["Failure", "Stats", "broadcast_failed", "recent_failures", "stats"]

logger = logging.getLogger("instant_signals")

broadcast_failed = Signal()
"""Sent when publications could not be delivered to Centrifugo. Arguments: ``publications``
(the envelopes not delivered, as dicts) and ``error`` (the exception)."""


class Stats:
    """Process-wide counters: ``published``, ``failed``, ``requests`` (HTTP calls to Centrifugo),
    ``dead`` (outbox rows moved to the dead-letter state; also counted in ``failed``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {"published": 0, "failed": 0, "requests": 0, "dead": 0}
        self.since = time.time()  # when this process started counting (epoch seconds)

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (thread-safe)."""
        with self._lock:
            self._counts[name] += n

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def keys(self) -> Any:
        return self._counts.keys()

    def snapshot(self) -> dict[str, int]:
        """The counters now, as a plain dict."""
        with self._lock:
            return dict(self._counts)


stats = Stats()


class Failure(NamedTuple):
    """One delivery failure as ``recent_failures()`` keeps it."""

    at: float  # epoch seconds
    publications: int  # how many were not delivered
    channels: tuple[str, ...]  # the first few channels concerned
    error: str


_RECENT = 20
_recent: collections.deque[Failure] = collections.deque(maxlen=_RECENT)
_recent_lock = threading.Lock()


def recent_failures() -> list[Failure]:
    """The last delivery failures of this process (at most 20), newest first. Like ``stats``,
    per process: each web worker and each relay keeps its own, lost at restart."""
    with _recent_lock:
        return list(reversed(_recent))

# Set by testing.capture_broadcasts(): envelopes are appended here instead of being sent.
_capture: ContextVar[list[dict[str, Any]] | None] = ContextVar("instant_signals_capture",
                                                                default=None)


def capturing() -> list[dict[str, Any]] | None:
    """The list publications go to instead of Centrifugo, inside ``capture_broadcasts()``."""
    return _capture.get()


def start_capture(target: list[dict[str, Any]]) -> Any:
    return _capture.set(target)


def stop_capture(token: Any) -> None:
    _capture.reset(token)


_advised: set[str | None] = set()


def failed(publications: list[dict[str, Any]], error: Exception, sender: Any) -> None:
    """Log, count and signal publications that were not delivered; never raises."""
    stats.add("failed", len(publications))
    channels = sorted({str(p.get("channel")) for p in publications if isinstance(p, dict)})
    with _recent_lock:
        _recent.append(Failure(time.time(), len(publications), tuple(channels[:5]), str(error)))
    logger.error("instant_signals: %d publication(s) to %s not delivered: %s", len(publications),
                 ", ".join(channels[:5]) + ("..." if len(channels) > 5 else ""), error)
    if getattr(error, "code", None) == UNKNOWN_CHANNEL:
        advise_unknown_channel(channels)
    try:
        broadcast_failed.send(sender=sender, publications=publications, error=error)
    except Exception:  # noqa: BLE001 - a faulty receiver must not break the save either
        logger.exception("instant_signals: a broadcast_failed receiver raised")


def advise_unknown_channel(channels: list[str]) -> None:
    """Centrifugo answered 102: say once per namespace which commands fix it."""
    for channel in channels:
        namespace = namespace_of(channel)
        if namespace in _advised:
            continue
        _advised.add(namespace)
        logger.error(
            "instant_signals: Centrifugo does not know the namespace %r of channel %r (error 102)"
            ". Its config predates this channel: run `python manage.py installws` (it keeps your "
            "secrets) and restart Centrifugo (`python manage.py runws`).", namespace, channel)
