"""``ChangeSource``: captured change rows → the ``Change`` objects signal mode makes → outbox rows.

``manage.py relay_outbox`` runs ``drain()`` before each pass over the outbox (``delivery.outbox
.Relay(sources=...)``): a batch of change rows is read in id order, turned into the commands
signal mode would send (``capture.changes.changes_of`` with an instance built from the row
image and the old image as previous values, then ``delivery.commands``: the same envelopes,
views, conditions, routing, moves, revocations and HTML), written to the outbox and deleted,
in one short transaction. From there the outbox relay delivers them as durable mode does:
partitions per row, idempotency keys, retries, dead letters for what Centrifugo refuses.

* One event per row and transaction: the rows of one (table, key, transaction) in a batch make
  one change, from the first row's old image to the last row's new image (a row created and
  deleted in one transaction publishes nothing). SQLite records no transaction id: there the
  writes of one row within a batch make one event (the page still ends at the final state).
* Per-row order: rows are taken in id order; two writes of one row are serialized by its lock,
  so the later one has the larger id.
* Commit order (PostgreSQL): a batch stops at the first row whose transaction is not below
  ``txid_snapshot_xmin(txid_current_snapshot())``, the oldest transaction still running: every
  row published was written by a transaction that finished, and so was every transaction that
  could precede it (sequence order is not commit order). A long-running writing transaction
  anywhere in the cluster holds publication back until it ends.
* Several relays (PostgreSQL): one of them converts at a time (a transaction-level advisory
  lock, ``LOCK_KEY``); the others find it taken and go on with the outbox.
* A row the relay cannot map (its table no longer declared, a column missing from the image, a
  value its field cannot read, a serializer that raises) becomes a dead letter (``dead_at``,
  ``error``, ``attempts``), is logged and sent as ``broadcast_failed``, and never blocks the
  rows behind it (``ChangeEntry.objects.dead()``, check ``W062``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model
from django.utils import timezone

from ... import conf, reporting
from ...declarations import Change, Declaration
from ...delivery.commands import commands_for
from ...delivery.outbox import Store, partition_for
from ...delivery.outbox.relay import Fed
from ...envelope import CREATED, DELETED, UPDATED
from ...models import ChangeEntry
from ..changes import changes_of
from ..table import Table
from . import captured
from .images import Image, Mapper, Unmappable

logger = logging.getLogger("instant_signals")

LOCK_KEY = 0x1A57_C4A7  # pg_try_advisory_xact_lock key of the converting relay


@dataclass
class _Row:
    id: int
    table: str
    op: str
    pk: str | None
    old: Image | None
    new: Image | None
    txid: int | None


def _row(id_: Any, table: Any, op: Any, pk: Any, old: Any, new: Any, txid: Any) -> _Row:
    return _Row(int(id_), str(table), str(op), None if pk is None else str(pk),
                None if old is None else Image(old), None if new is None else Image(new),
                None if txid is None else int(txid))


@dataclass
class _Group:
    """The rows of one (table, key, transaction) in a batch."""

    table: str
    pk: str | None
    rows: list[_Row] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return sorted({r.id for r in self.rows})


@dataclass
class _Work:
    outbox: list[tuple[str, str, int]] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    dead: list[tuple[_Group, str]] = field(default_factory=list)


class ChangeSource:
    """Turns the change table of one database into outbox rows, for the declarations of
    ``table`` (the registry's)."""

    def __init__(self, table: Table, using: str = "default", *, batch_size: int | None = None):
        self.table = table
        self.using = using
        self.batch_size = int(batch_size or conf.app_setting("BATCH_SIZE"))
        self._mappers: dict[tuple[type[Model], str], Mapper] = {}

    @property
    def conn(self) -> BaseDatabaseWrapper:
        return connections[self.using]

    # -- public -------------------------------------------------------------------------------
    def drain(self, max_batches: int = 1000) -> Fed:
        """Convert what is ready, batch after batch; what was done."""
        fed = Fed()
        for _ in range(max_batches):
            moved, dead, held, full = self._batch()
            fed.moved += moved
            fed.dead += dead
            fed.held = fed.held or held
            if held or not full:
                break
        return fed

    def pending(self) -> int:
        """Change rows waiting (dead letters not counted)."""
        table = self.conn.ops.quote_name(ChangeEntry._meta.db_table)
        with self.conn.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {table} WHERE dead_at IS NULL")
            return int(cursor.fetchone()[0])

    # -- one batch ----------------------------------------------------------------------------
    def _batch(self) -> tuple[int, int, bool, bool]:
        """(rows converted, rows dead, held back, batch was full)."""
        conn = self.conn
        if conn.vendor == "postgresql":
            with transaction.atomic(using=self.using):
                with conn.cursor() as cursor:
                    cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_KEY])
                    if not cursor.fetchone()[0]:
                        return 0, 0, True, False  # another relay converts now
                rows, held, full = self._fetch()
                work = self._convert(rows)
                self._write(work)
        else:  # one relay: read and convert with no transaction open, then one short write
            rows, held, full = self._fetch()
            work = self._convert(rows)
            if work.outbox or work.done or work.dead:
                with transaction.atomic(using=self.using):
                    self._write(work)
        self._report(work)
        dead = sum(len(g.ids) for g, _ in work.dead)
        return len(work.done), dead, held, full

    def _fetch(self) -> tuple[list[_Row], bool, bool]:
        """The oldest pending rows, up to the first one whose transaction may still have
        predecessors running (PostgreSQL); (rows, held back, batch was full)."""
        conn = self.conn
        table = conn.ops.quote_name(ChangeEntry._meta.db_table)
        if conn.vendor == "postgresql":
            sql = (f"SELECT id, table_name, op, row_pk, old_row::text, new_row::text, txid, "
                   f"txid_snapshot_xmin(txid_current_snapshot()) FROM {table} "
                   f"WHERE dead_at IS NULL ORDER BY id LIMIT %s")
        else:
            sql = (f"SELECT id, table_name, op, row_pk, old_row, new_row, txid, NULL "
                   f"FROM {table} WHERE dead_at IS NULL ORDER BY id LIMIT %s")
        with conn.cursor() as cursor:
            cursor.execute(sql, [self.batch_size])
            found = cursor.fetchall()
        rows: list[_Row] = []
        held = False
        for id_, table_name, op, pk, old, new, txid, horizon in found:
            if txid is not None and horizon is not None and int(txid) >= int(horizon):
                held = True
                break
            rows.append(_row(id_, table_name, op, pk, old, new, txid))
        full = not held and len(found) == self.batch_size
        if (held or full) and rows and conn.vendor == "postgresql":
            rows += self._rest_of_groups(rows)
        return rows, held, full

    def _rest_of_groups(self, rows: list[_Row]) -> list[_Row]:
        """The later rows of the (table, key, transaction) groups this batch holds, so a
        transaction's writes of one row make one event even when the batch ends between them.
        Per-row order holds: the writing transaction holds the row's lock from its first write
        to its commit, so no other transaction's change of that row lies in between."""
        keys = sorted({(r.table, r.pk, r.txid) for r in rows
                       if r.pk is not None and r.txid is not None}, key=str)
        if not keys:
            return []
        table = self.conn.ops.quote_name(ChangeEntry._meta.db_table)
        sql = (f"SELECT id, table_name, op, row_pk, old_row::text, new_row::text, txid "
               f"FROM {table} WHERE dead_at IS NULL AND id > %s AND (table_name, row_pk, txid) "
               f"IN (SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[])) ORDER BY id")
        with self.conn.cursor() as cursor:
            cursor.execute(sql, [rows[-1].id, [k[0] for k in keys], [k[1] for k in keys],
                                 [k[2] for k in keys]])
            return [_row(*found) for found in cursor.fetchall()]

    # -- rows → changes → commands --------------------------------------------------------------
    def _convert(self, rows: list[_Row]) -> _Work:
        work = _Work()
        declared = {model._meta.db_table: (model, declarations)
                    for model, declarations in self.table.declared().items()
                    if captured(model)}
        partitions = int(conf.app_setting("OUTBOX_PARTITIONS"))
        for group in self._groups(rows, declared):
            found = declared.get(group.table)
            try:
                if found is None:
                    raise Unmappable(f"table {group.table!r} is not declared with @broadcast "
                                     f"(or its declarations are not captured by triggers)")
                changes = self._changes(found[0], found[1], group)
                for change in changes:
                    partition = partition_for(f"{change.declaration.label}:{change.pk}",
                                              partitions)
                    work.outbox += [(c.method, c.params_text, partition)
                                    for c in commands_for((change,))]
            except Exception as exc:  # noqa: BLE001 - any failure makes this row dead, not all
                reason = str(exc) if isinstance(exc, Unmappable) else \
                    f"{type(exc).__name__}: {exc}"
                work.dead.append((group, reason))
                continue
            work.done += group.ids
        return work

    def _groups(self, rows: Iterable[_Row],
                declared: dict[str, tuple[type[Model], tuple[Declaration, ...]]]
                ) -> list[_Group]:
        groups: dict[tuple[str, str | None, int | None], _Group] = {}
        for row in rows:
            for part in self._split(row, declared):
                key = (part.table, part.pk, part.txid)
                group = groups.get(key)
                if group is None:
                    group = groups[key] = _Group(part.table, part.pk)
                group.rows.append(part)
        return list(groups.values())

    @staticmethod
    def _split(row: _Row, declared: dict[str, tuple[type[Model], tuple[Declaration, ...]]]
               ) -> list[_Row]:
        """An update that changed the row's key is a delete of the old key and an insert of
        the new one (PostgreSQL's trigger already writes them apart)."""
        if row.op != "U" or row.old is None or row.new is None or row.table not in declared:
            return [row]
        column = str(declared[row.table][0]._meta.pk.column)
        try:
            old_pk, new_pk = row.old.plain().get(column), row.new.plain().get(column)
        except Unmappable:
            return [row]
        if old_pk is None or str(old_pk) == str(new_pk):
            return [row]
        return [_Row(row.id, row.table, "D", str(old_pk), row.old, None, row.txid),
                _Row(row.id, row.table, "I", str(new_pk), None, row.new, row.txid)]

    def _changes(self, model: type[Model], declarations: tuple[Declaration, ...],
                 group: _Group) -> list[Change]:
        first, last = group.rows[0], group.rows[-1]
        before = None if first.op == "I" else first.old
        after = None if last.op == "D" else last.new
        if before is None and after is None:
            return []  # created and deleted within the transaction: nothing to publish
        mapper = self._mapper(model, declarations)
        previous = mapper.values(before) if before is not None else None
        if after is None:
            assert previous is not None
            return changes_of(declarations, mapper.instance(previous), DELETED, previous)
        instance = mapper.instance(mapper.values(after))
        if previous is None:
            return changes_of(declarations, instance, CREATED)
        return changes_of(declarations, instance, UPDATED, previous)

    def _mapper(self, model: type[Model], declarations: tuple[Declaration, ...]) -> Mapper:
        key = (model, self.using)
        mapper = self._mappers.get(key)
        if mapper is None or mapper.needed != _needed(model, declarations):
            mapper = self._mappers[key] = Mapper(model, self.conn,
                                                 tuple(_needed(model, declarations)))
        return mapper

    # -- writing ---------------------------------------------------------------------------------
    def _write(self, work: _Work) -> None:
        conn = self.conn
        if work.outbox:
            Store.insert(conn, work.outbox)
        table = conn.ops.quote_name(ChangeEntry._meta.db_table)
        with conn.cursor() as cursor:
            for start in range(0, len(work.done), 500):
                chunk = work.done[start:start + 500]
                cursor.execute(f"DELETE FROM {table} WHERE id IN "
                               f"({', '.join(['%s'] * len(chunk))})", chunk)
            now = conn.ops.adapt_datetimefield_value(timezone.now())
            for group, reason in work.dead:
                ids = group.ids
                cursor.execute(f"UPDATE {table} SET attempts = attempts + 1, error = %s, "
                               f"dead_at = %s WHERE id IN ({', '.join(['%s'] * len(ids))})",
                               [reason, now, *ids])

    def _report(self, work: _Work) -> None:
        for group, reason in work.dead:
            first = group.rows[0]
            logger.error("instant_signals: captured change(s) %s of %s pk %s are dead letters: "
                         "%s", ", ".join(map(str, group.ids)), group.table, group.pk, reason)
            reporting.stats.add("dead", len(group.ids))
            reporting.failed([{"table": group.table, "pk": group.pk, "op": first.op,
                               "change_ids": group.ids}], Unmappable(reason), sender=ChangeSource)


def _needed(model: type[Model], declarations: tuple[Declaration, ...]) -> set[str]:
    """The attnames the declarations read (every concrete field when a callable is involved)."""
    return {a for d in declarations for a in d.tracked} | {model._meta.pk.attname}
