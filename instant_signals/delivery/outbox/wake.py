"""Waking an idle relay when new outbox rows are committed, without querying the table.

PostgreSQL: ``LISTEN`` to the channel the ``0002`` migration's trigger notifies on every insert,
and to the one database capture's triggers notify on (``CHANGES_CHANNEL``).
SQLite: ``PRAGMA data_version``, which changes when another connection commits. Elsewhere the
relay sleeps. ``watch()`` runs before a pass reads the table, so a commit after it wakes the
next ``wait()``.
"""

from __future__ import annotations

import select
import time
from typing import Any, Callable

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

#: The channel the 0002 migration's trigger notifies on every insert (and Centrifugo's
#: consumer listens to, ``partition_notification_channel``).
NOTIFY_CHANNEL = "instant_signals_outbox"
#: The channel database capture's trigger function notifies when a statement captured rows.
CHANGES_CHANNEL = "instant_signals_changes"

# Seconds between two looks at PRAGMA data_version while idle: 1 ms right after a pass, doubling
# up to 20 ms (a busy site's next row is seen at once; an idle relay wakes 50 times a second).
_SQLITE_POLL = (0.001, 0.02)
_LISTEN_SLICE = 0.25  # longest wait for a NOTIFY before stop() is asked again


class Waker:
    """The wake-ups of one database alias's relay."""

    def __init__(self, using: str):
        self.using = using
        self._listening: Any = None  # the PostgreSQL connection that LISTENs
        self._data_version: int | None = None  # SQLite's, when the last pass started

    @property
    def conn(self) -> BaseDatabaseWrapper:
        return connections[self.using]

    def watch(self) -> None:
        """Start noticing rows committed from now on (LISTEN / remember data_version)."""
        conn = self.conn
        if conn.vendor == "sqlite":
            self._data_version = self._sqlite_data_version()
        elif conn.vendor == "postgresql" and not conn.in_atomic_block:
            conn.ensure_connection()
            if self._listening is not conn.connection:
                with conn.cursor() as cursor:
                    cursor.execute(f'LISTEN "{NOTIFY_CHANNEL}"')
                    cursor.execute(f'LISTEN "{CHANGES_CHANNEL}"')
                self._listening = conn.connection
            else:
                # Notifications of rows this pass is about to read: forget them (a busy relay
                # never waits, and the driver would keep them all).
                try:
                    self._drain_notifications(0.0)
                except TypeError:  # psycopg 3 before 3.2
                    pass

    def wait(self, timeout: float, *, stop: Callable[[], bool] = lambda: False,
             sleep: Callable[[float], None] = time.sleep) -> bool:
        """Wait at most ``timeout`` seconds for rows committed since ``watch()`` (True when
        woken by them; False after ``timeout`` or when ``stop()``)."""
        deadline = time.monotonic() + timeout
        vendor = self.conn.vendor
        poll = _SQLITE_POLL[0]
        while not stop():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if vendor == "postgresql":
                if self._notified(min(remaining, _LISTEN_SLICE)):
                    return True
            elif vendor == "sqlite":
                sleep(min(remaining, poll))
                poll = min(poll * 2, _SQLITE_POLL[1])
                if self._data_version is not None and \
                        self._sqlite_data_version() != self._data_version:
                    return True
            else:
                sleep(min(remaining, 0.05))
        return False

    def close(self) -> None:
        """Forget the connection (it is being closed): the next ``watch()`` starts afresh."""
        self._listening = None
        self._data_version = None

    def _drain_notifications(self, timeout: float) -> bool:
        raw = self._listening
        if hasattr(raw, "notifies") and callable(raw.notifies):  # psycopg 3 (>= 3.2)
            return any([True for _ in raw.notifies(timeout=timeout)]) if timeout == 0 else \
                any(True for _ in raw.notifies(timeout=timeout, stop_after=1))
        # psycopg2: notifications are collected by poll()
        if timeout and not raw.notifies:
            select.select([raw], [], [], timeout)
        raw.poll()
        got = bool(raw.notifies)
        raw.notifies.clear()
        return got

    def _sqlite_data_version(self) -> int:
        with self.conn.cursor() as cursor:
            cursor.execute("PRAGMA data_version")
            return int(cursor.fetchone()[0])

    def _notified(self, timeout: float) -> bool:
        """A NOTIFY arrived on the LISTENing connection within ``timeout`` seconds."""
        if self._listening is not self.conn.connection:
            self.watch()  # reconnected: LISTEN again (the next pass reads what we missed)
            return True
        try:
            return self._drain_notifications(timeout)
        except TypeError:  # psycopg 3 before 3.2: notifies() has no timeout; poll the table
            time.sleep(timeout)
            return True
