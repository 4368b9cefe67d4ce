"""The few Django transaction internals that after-commit delivery relies on, in one file.

What we rely on (Django 4.2, 5.2 and 6.0 alike; ``tests/test_transactions.py`` checks each):

* ``connection.savepoint_ids``: the ids of the savepoints now open (``None`` for an
  ``atomic(savepoint=False)`` block, which cannot be rolled back on its own);
* ``connection.run_on_commit``: the list of ``(savepoint ids, callable, robust)`` hooks that
  ``on_commit()`` appends to. A savepoint rollback replaces the list with a copy that lacks the
  hooks registered under that savepoint; a full rollback empties it; at commit Django runs the
  hooks in list order.

From these: a *segment* is a run of changes made in one savepoint state, with a marker hook
that Django drops with the savepoint (so a segment whose marker never ran was rolled back), and
a *final hook* runs after every marker because it is kept at the end of the list and belongs to
no savepoint (so only a full rollback drops it).
"""

from __future__ import annotations

from typing import Any, Callable

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper


def connection(using: str) -> BaseDatabaseWrapper:
    return connections[using]


def in_transaction(conn: BaseDatabaseWrapper) -> bool:
    return bool(conn.in_atomic_block)


def is_lock_error(exc: object) -> bool:
    """Whether ``exc`` (an error, or its text) is SQLite's "database is locked" / "busy": a
    write that met another's lock, worth retrying (the relay does; the tests count them)."""
    text = str(exc or "").lower()
    return "locked" in text or "busy" in text


def savepoint_state(conn: BaseDatabaseWrapper) -> tuple[str, ...]:
    """The open savepoints, ignoring ``atomic(savepoint=False)`` blocks."""
    return tuple(sid for sid in conn.savepoint_ids if sid is not None)


class Segment:
    """Changes made in one savepoint state. ``committed`` turns true when Django runs its marker
    at commit; a rolled-back savepoint drops the marker, so its segment never commits."""

    __slots__ = ("conn", "state", "hooks", "committed", "__weakref__")

    def __init__(self, conn: BaseDatabaseWrapper):
        self.conn = conn
        self.state = savepoint_state(conn)
        self.committed = False
        conn.on_commit(self._mark)
        self.hooks = conn.run_on_commit  # the list object; Django replaces it on a rollback

    def _mark(self) -> None:
        self.committed = True

    def pending(self) -> bool:
        """Its marker still waits for this transaction's commit (not rolled back, not run)."""
        hooks = self.conn.run_on_commit
        if hooks is self.hooks:
            return True
        # A savepoint rollback rebuilt the list: look for our marker in it.
        if any(entry[1] == self._mark for entry in hooks):
            self.hooks = hooks
            return True
        return False

    def alive(self) -> bool:
        """Committed, or not rolled back so far."""
        return self.committed or self.pending()


_SEGMENT = "_instant_signals_segment"


def current_segment(conn: BaseDatabaseWrapper) -> Segment | None:
    """The segment of the savepoint state ``conn`` is in now; None outside a transaction."""
    if not conn.in_atomic_block:
        return None
    segment: Segment | None = getattr(conn, _SEGMENT, None)
    if segment is None or segment.state != savepoint_state(conn) or not segment.pending():
        segment = Segment(conn)
        setattr(conn, _SEGMENT, segment)
    return segment


def start_new_segment(conn: BaseDatabaseWrapper) -> None:
    """The next change starts a segment of its own (``capture_broadcasts`` runs only the hooks
    registered inside its block)."""
    setattr(conn, _SEGMENT, None)


class FinalHook:
    """A hook that runs at commit after every segment marker, dropped only by a full rollback."""

    __slots__ = ("func", "entry", "hooks")

    def __init__(self, conn: BaseDatabaseWrapper, func: Callable[[], Any]):
        self.func = func
        self.entry: Any = (set(), func, False)  # Django's (savepoint ids, callable, robust)
        self.hooks: list[Any] = []
        self.move_to_end(conn)

    def move_to_end(self, conn: BaseDatabaseWrapper) -> None:
        hooks = conn.run_on_commit
        if self.hooks is hooks and hooks and hooks[-1] is self.entry:
            return
        for index in range(len(hooks) - 1, -1, -1):
            if hooks[index][1] is self.func:
                del hooks[index]
                break
        hooks.append(self.entry)
        self.hooks = hooks

    def pending(self, conn: BaseDatabaseWrapper) -> bool:
        """Still to run at this transaction's commit (False after a full rollback or commit)."""
        hooks = conn.run_on_commit
        if hooks is self.hooks:
            return True  # no rollback or commit since we last looked
        # A savepoint rollback rebuilds the list (and its tuples): look for our callable.
        if any(entry[1] is self.func for entry in reversed(hooks)):
            self.hooks = hooks
            return True
        return False


class FirstHook:
    """A hook that runs at commit before every other hook of the transaction (so the
    unsubscribes of lost readers precede the transaction's publications), belonging to no
    savepoint: only a full rollback drops it."""

    __slots__ = ("func", "entry")

    def __init__(self, conn: BaseDatabaseWrapper, func: Callable[[], Any]):
        self.func = func
        self.entry: Any = (set(), func, False)  # Django's (savepoint ids, callable, robust)
        hooks: list[Any] = conn.run_on_commit
        hooks.insert(0, self.entry)

    def pending(self, conn: BaseDatabaseWrapper) -> bool:
        """Still to run at this transaction's commit (False after a full rollback or commit)."""
        return any(entry[1] is self.func for entry in conn.run_on_commit)
