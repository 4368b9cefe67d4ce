"""The outbox table's storage operations, as plain SQL written once per database vendor.

One interface (``Store``) for the writer and the relay: ``insert`` rows, list the
``partitions`` with pending rows, ``fetch`` a partition's oldest pending rows, find (and lock)
its ``head``, ``delete`` delivered rows, and ``fail`` a row (count an attempt, or move it to the
dead-letter state). No model instances, no second encoding of a payload: rows are written from
the JSON text their size was checked on and read back as text.

The SQL differs per vendor only where the databases do (``Dialect``): PostgreSQL casts the
payload to ``jsonb`` and deletes with one array parameter; ``LIMIT`` is ``FETCH FIRST`` on
Oracle. SQLite and PostgreSQL are tested; the others use the same statements untested.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, Field, Min, Q
from django.utils import timezone

from ...models import OutboxEntry

DELETE_CHUNK = 500  # ids per DELETE (SQLite allows 999 parameters before 3.32)

_dumps = json.JSONEncoder(separators=(",", ":")).encode


class Row(NamedTuple):
    """An outbox row as the relay reads it: the payload stays JSON text, never decoded."""

    id: int
    method: str
    payload: str
    attempts: int = 0


class Backlog(NamedTuple):
    """The outbox's totals: rows waiting, the oldest one's ``created_at``, dead letters."""

    pending: int
    oldest: datetime | None
    dead: int


@dataclass(frozen=True)
class Dialect:
    json_value: str = "%s"  # the placeholder of a JSON parameter
    limit: str = "LIMIT %s"
    delete_by_array: bool = False  # ``= ANY(%s)`` with one list parameter


DIALECTS = {
    "postgresql": Dialect(json_value="%s::jsonb", delete_by_array=True),
    "oracle": Dialect(limit="FETCH FIRST %s ROWS ONLY"),
}


class _Sql(NamedTuple):
    insert: str
    partitions: str
    fetch: str
    head: str
    lock: str
    delete: str  # array form, or format with one "%s" per id
    fail: str
    pending: str
    delete_by_array: bool


_cache: dict[tuple[str, str], _Sql] = {}


def _sql(conn: BaseDatabaseWrapper) -> _Sql:
    """The statements for ``conn``'s vendor, built once per vendor and table name."""
    key = (conn.vendor, OutboxEntry._meta.db_table)
    found = _cache.get(key)
    if found is None:
        found = _cache[key] = _build(conn)
    return found


def _build(conn: BaseDatabaseWrapper) -> _Sql:
    vendor, ops = conn.vendor, conn.ops
    qn = ops.quote_name
    meta = OutboxEntry._meta
    dialect = DIALECTS.get(vendor, Dialect())

    def column(name: str) -> str:
        field = meta.get_field(name)
        assert isinstance(field, Field) and field.column
        return qn(field.column)

    id_, method, payload, partition, created, attempts, error, dead = (column(name) for name in (
        "id", "method", "payload", "partition", "created_at", "attempts", "error", "dead_at"))
    table = qn(meta.db_table)
    pending = f"FROM {table} WHERE {partition} = %s AND {dead} IS NULL ORDER BY {id_}"
    one = dialect.limit.replace("%s", "1")
    return _Sql(
        insert=f"INSERT INTO {table} ({method}, {payload}, {partition}, {created}) "
               f"VALUES (%s, {dialect.json_value}, %s, %s)",
        partitions=f"SELECT DISTINCT {partition} FROM {table} WHERE {dead} IS NULL",
        fetch=f"SELECT {id_}, {method}, {payload}, {attempts} {pending} {dialect.limit}",
        head=f"SELECT {id_} {pending} {one}",
        lock=f"SELECT {id_} {pending} {one} FOR UPDATE SKIP LOCKED",
        delete=f"DELETE FROM {table} WHERE {id_} = ANY(%s)" if dialect.delete_by_array
        else f"DELETE FROM {table} WHERE {id_} IN ({{}})",
        # attempts is NULL in rows written by other programs (Centrifugo's outbox shape)
        fail=f"UPDATE {table} SET {attempts} = %s, {error} = %s, {dead} = %s WHERE {id_} = %s",
        pending=f"SELECT COUNT(*) FROM {table} WHERE {dead} IS NULL",
        delete_by_array=dialect.delete_by_array,
    )


class Store:
    """The outbox of one database alias."""

    def __init__(self, using: str):
        self.using = using

    @property
    def conn(self) -> BaseDatabaseWrapper:
        return connections[self.using]

    def _statements(self) -> _Sql:
        return _sql(self.conn)

    # -- writing ----------------------------------------------------------------------------
    @staticmethod
    def insert(conn: BaseDatabaseWrapper, rows: list[tuple[str, str, int]]) -> None:
        """Insert rows ``(method, params as JSON text, partition)`` on ``conn`` (the change's
        own connection, inside its transaction)."""
        statement = _sql(conn).insert
        now = conn.ops.adapt_datetimefield_value(timezone.now())
        params = [(method, text, partition, now) for method, text, partition in rows]
        with conn.cursor() as cursor:
            if len(params) == 1:
                cursor.execute(statement, params[0])
            else:
                cursor.executemany(statement, params)

    # -- reading ----------------------------------------------------------------------------
    def partitions(self) -> list[int]:
        """Partitions that have pending rows, in order."""
        with self.conn.cursor() as cursor:
            cursor.execute(self._statements().partitions)
            return sorted(int(p) for (p,) in cursor.fetchall())

    def fetch(self, partition: int, limit: int) -> list[Row]:
        """The partition's oldest pending rows."""
        with self.conn.cursor() as cursor:
            cursor.execute(self._statements().fetch, [partition, limit])
            return [Row(int(id_), str(method), _text(payload), int(attempts or 0))
                    for id_, method, payload, attempts in cursor.fetchall()]

    def head(self, partition: int, *, lock: bool = False) -> int | None:
        """The id of the partition's oldest pending row; with ``lock``, only if this
        transaction could lock it (``FOR UPDATE SKIP LOCKED``)."""
        statements = self._statements()
        with self.conn.cursor() as cursor:
            cursor.execute(statements.lock if lock else statements.head, [partition])
            found = cursor.fetchone()
        return None if found is None else int(found[0])

    def pending(self) -> int:
        with self.conn.cursor() as cursor:
            cursor.execute(self._statements().pending)
            return int(cursor.fetchone()[0])

    def backlog(self) -> Backlog:
        """Pending rows, the oldest one's time and dead letters, in one query. (An aggregate of
        the ORM: it converts the database's datetimes, which raw SQL on SQLite gives as text.)"""
        waiting = Q(dead_at__isnull=True)
        found = OutboxEntry.objects.using(self.using).aggregate(
            pending=Count("id", filter=waiting), oldest=Min("created_at", filter=waiting),
            dead=Count("id", filter=~waiting))
        return Backlog(int(found["pending"] or 0), found["oldest"], int(found["dead"] or 0))

    # -- after sending ----------------------------------------------------------------------
    def delete(self, ids: list[int]) -> None:
        """Delete rows by id, ``DELETE_CHUNK`` per statement."""
        statements = self._statements()
        for start in range(0, len(ids), DELETE_CHUNK):
            chunk = ids[start:start + DELETE_CHUNK]
            with self.conn.cursor() as cursor:
                if statements.delete_by_array:
                    cursor.execute(statements.delete, [chunk])
                else:
                    cursor.execute(statements.delete.format(", ".join(["%s"] * len(chunk))),
                                   chunk)

    def fail(self, row: Row, error: str, *, dead: bool) -> None:
        """Count a failed attempt of ``row`` with its reason; ``dead``: it is not tried again."""
        now = self.conn.ops.adapt_datetimefield_value(timezone.now()) if dead else None
        with self.conn.cursor() as cursor:
            cursor.execute(self._statements().fail, [row.attempts + 1, error, now, row.id])


def _text(payload: Any) -> str:
    """The payload as JSON text (PostgreSQL's driver decodes ``jsonb``; SQLite gives text)."""
    return payload if isinstance(payload, str) else _dumps(payload)
