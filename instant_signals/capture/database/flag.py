"""``disable_broadcasts()`` and ``ENABLED=False`` reach the triggers: a per-connection mark.

The kill switch is a Python context variable; the triggers run in the database. So every Django
connection gets one execute wrapper (installed when it connects) that, in database mode and
while broadcasts are disabled, marks the connection before each statement, so the triggers skip
the rows it writes; other connections (another program, another thread) are never marked.

* SQLite: the temp schema's cache size is set to ``sqlite.MARK`` while disabled (not
  transactional, so a rollback cannot lose it: the wrapper sets it once and puts the previous
  value back at the first statement after the block).
* PostgreSQL: ``set_config('instant_signals.off', 'on')`` before the statement and ``''`` right
  after it (a setting is transactional: a rolled-back savepoint would undo a mark made once, so
  each statement is marked on its own; two more round trips, only inside the block).

Outside database mode the wrapper costs one setting lookup per statement.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from ..switch import broadcasting_enabled
from . import enabled, postgresql, sqlite

logger = logging.getLogger("instant_signals")

_SQLITE_ATTR = "_instant_signals_marked"  # (raw connection, previous cache size) while marked


def _wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool,
             context: dict[str, Any]) -> Any:
    conn: BaseDatabaseWrapper = context["connection"]
    vendor = conn.vendor
    if vendor == "sqlite":
        _sqlite(conn, not enabled() or broadcasting_enabled())
        return execute(sql, params, many, context)
    if vendor != "postgresql" or not enabled() or broadcasting_enabled():
        return execute(sql, params, many, context)
    # A cursor of its own: the statement's cursor keeps the statement's results.
    with conn.connection.cursor() as raw:
        try:
            postgresql.mark(raw)
        except Exception:  # noqa: BLE001 - an aborted transaction: it captures nothing anyway
            pass
        try:
            return execute(sql, params, many, context)
        finally:
            try:
                postgresql.unmark(raw)
            except Exception:  # noqa: BLE001 - an aborted transaction: its rollback undoes
                pass  # the mark


def _sqlite(conn: BaseDatabaseWrapper, capture: bool) -> None:
    raw = conn.connection
    marked = getattr(conn, _SQLITE_ATTR, None)
    if marked is not None and marked[0] is not raw:
        marked = None  # reconnected: the new connection was never marked
        setattr(conn, _SQLITE_ATTR, None)
    if capture and marked is not None:
        sqlite.unmark(raw, marked[1])
        setattr(conn, _SQLITE_ATTR, None)
    elif not capture and marked is None:
        setattr(conn, _SQLITE_ATTR, (raw, sqlite.mark(raw)))


def add(conn: BaseDatabaseWrapper) -> None:
    """Install the wrapper on ``conn`` (once)."""
    if _wrapper not in conn.execute_wrappers:
        # First, so it is the outermost, and never the one a ``with conn.execute_wrapper()``
        # block pops when it ends.
        conn.execute_wrappers.insert(0, _wrapper)


def _connected(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    add(connection)


def install() -> None:
    """Wrap every connection, now and as they connect (once per process)."""
    connection_created.connect(_connected, weak=False,
                               dispatch_uid="instant_signals.capture.database.flag")
    for conn in connections.all(initialized_only=True):
        add(conn)
