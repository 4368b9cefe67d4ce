"""The changes of one open transaction, per row: the state before it, and the latest state of
each savepoint segment it touched.

Coalescing: a row's event compares the state before the transaction first touched it with its
latest state in a segment that was not rolled back. So several saves of one row become one
event carrying the final state; a rolled-back savepoint's saves are forgotten, even when the
row's in-memory snapshot still holds their values.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from django.db.backends.base.base import BaseDatabaseWrapper

from ..declarations import Change, Declaration, Seen
from ..transactions import FinalHook, Segment, current_segment, start_new_segment

_ATTR = "_instant_signals_buffer"


class _Row:
    __slots__ = ("declaration", "pk", "before", "afters")

    def __init__(self, change: Change):
        self.declaration: Declaration = change.declaration
        self.pk = change.pk
        self.before: Seen | None = change.before
        self.afters: list[tuple[Segment, Seen | None, int]] = []


class Buffer:
    """Per connection and transaction; ``on_end`` runs at commit, after every segment marker."""

    def __init__(self, conn: BaseDatabaseWrapper, on_end: Callable[[Buffer], None]):
        self.rows: dict[tuple[int, Any], _Row] = {}
        self.segment: Segment | None = None
        self.done = False
        self._on_end = on_end
        self.final = FinalHook(conn, self._end)

    @classmethod
    def of(cls, conn: BaseDatabaseWrapper, on_end: Callable[[Buffer], None]) -> Buffer:
        """The buffer of ``conn``'s open transaction (a new one for a new transaction)."""
        buffer: Buffer | None = getattr(conn, _ATTR, None)
        if buffer is None or buffer.done or not buffer.final.pending(conn):
            buffer = cls(conn, on_end)
            setattr(conn, _ATTR, buffer)
        return buffer

    @staticmethod
    def forget(conn: BaseDatabaseWrapper) -> None:
        """Start afresh with the next change (capture_broadcasts starts a new block)."""
        setattr(conn, _ATTR, None)
        start_new_segment(conn)

    def add(self, conn: BaseDatabaseWrapper, change: Change) -> None:
        segment = current_segment(conn)
        assert segment is not None, "buffers exist inside transactions only"
        if segment is not self.segment:
            self.segment = segment
            self.final.move_to_end(conn)  # after the new segment's marker
        row = self.rows.get(change.key)
        if row is None:
            row = self.rows[change.key] = _Row(change)
        if row.afters and row.afters[-1][0] is segment:
            row.afters[-1] = (segment, change.after, change.version)
        else:
            row.afters.append((segment, change.after, change.version))

    def current_state(self, conn: BaseDatabaseWrapper, change: Change) -> Seen | None:
        """The row's state as the database holds it now, if this transaction touched the row:
        its latest state in a live segment, or its state before the transaction."""
        row = self.rows.get(change.key)
        if row is None:
            return change.before
        for segment, state, _ in reversed(row.afters):
            if segment.alive():
                found: Seen | None = state
                return found
        return row.before

    def changes(self) -> Iterator[Change]:
        """The coalesced changes of the rows whose latest live segment committed."""
        for row in self.rows.values():
            for segment, after, version in reversed(row.afters):
                if segment.committed:
                    yield Change(row.declaration, row.pk, row.before, after, version)
                    break

    def _end(self) -> None:
        self.done = True
        self._on_end(self)
