"""Durable delivery: an outbox table written in the change's transaction, and a relay for it.

With ``INSTANT_SIGNALS["DELIVERY"] = "outbox"`` every model event becomes rows of
``instant_signals_outbox`` (Centrifugo's outbox shape: ``method``, ``payload``, ``partition``,
``created_at``) inserted in the same transaction as the change: a rolled-back transaction leaves
no row, a committed one leaves its events even if Centrifugo is down. On SQLite and PostgreSQL
a row is one plain ``INSERT`` of the command's JSON as it was encoded for the size check (no
model instance, no second encoding); other databases go through the ORM.

Two ways drain the table:

* On PostgreSQL, Centrifugo's own ``postgresql`` consumer (``installws --outbox-dsn``); the
  ``0002`` migration adds the ``NOTIFY`` trigger that wakes it at once.
* Anywhere, ``manage.py relay_outbox`` (``Relay`` below). When the table is empty it waits for
  new rows without querying the table: on PostgreSQL it LISTENs to the same trigger's channel,
  on SQLite it watches ``PRAGMA data_version`` (which changes when another connection commits),
  elsewhere it sleeps ``interval``.

Order: the partition of a row is a stable hash of the model label and the object's pk, so every
event of one object lands in one partition, and partitions are drained in id order, stopping at
the first failure. Duplicates: each publish row carries its event id as Centrifugo's
``idempotency_key``, so sending a row again (after a crash between send and delete) does not
publish twice while Centrifugo remembers the key (5 minutes; across Centrifugo restarts only with
the Redis engine).

Errors: a retryable failure (unreachable, timeout, HTTP 5xx, codes 100/108) or a refusal of the
whole request (wrong API key) keeps the row and the rest of its partition for a later attempt
with exponential backoff. A row Centrifugo can never accept (a per-row error such as 102 unknown
channel, or a row that makes the whole ``/batch`` undecodable, HTTP 400 — found by resending
the batch one row at a time) is reported failed and deleted: one poison row never blocks its
partition. Centrifugo's own consumer also skips such rows.

SQLite: the relay reads a batch, sends it with no transaction open, then deletes it in one
short write; a delete that meets a lock is retried (the rows were delivered: sending them again
would be the worse outcome), and rows delivered but not yet deleted are never sent again by
this relay. The site's writers and the relay share the file without "database is locked" only
with WAL, ``BEGIN IMMEDIATE`` transactions and a busy timeout (system checks W030-W032).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import select
import time
import zlib
from typing import Any, Callable, Iterable, NamedTuple

from django.db import OperationalError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field
from django.utils import timezone

from .. import conf, reporting
from .. import client
from ..declarations import Change
from ..exceptions import CentrifugoError
from ..models import OutboxEntry
from ..transactions import connection, in_transaction, is_lock_error
from .buffer import Buffer
from .commands import Command, commands_for

__all__ = ["Relay", "RelayResult", "partition_for", "relay"]

logger = logging.getLogger("instant_signals")

# Whole-request errors that mean "this request cannot be decoded", not "Centrifugo is unwell":
# HTTP 400 (body not understood), 413 (too large), Centrifugo 107 (bad request).
_MALFORMED = {400, 413, 107}

#: The channel the 0002 migration's trigger notifies on every insert (and Centrifugo's
#: consumer listens to, ``partition_notification_channel``).
NOTIFY_CHANNEL = "instant_signals_outbox"

# Databases whose outbox rows are written and read with plain SQL (tested); others use the ORM.
_RAW_SQL_VENDORS = frozenset({"sqlite", "postgresql"})
_DELETE_CHUNK = 500  # ids per DELETE (SQLite allows 999 parameters before 3.32)
# Seconds between two looks at PRAGMA data_version while idle: 1 ms right after a pass, doubling
# up to 20 ms (a busy site's next row is seen at once; an idle relay wakes 50 times a second).
_SQLITE_POLL = (0.001, 0.02)
_LISTEN_SLICE = 0.25  # longest wait for a NOTIFY before stop() is asked again
_DELETE_PATIENCE = 60.0  # seconds a delivered batch's delete is retried through locks

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def partition_for(key: str, partitions: int) -> int:
    """A stable partition for ``key`` (``"<model label>:<pk>"``)."""
    if partitions <= 1:
        return 0
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


class OutboxBackend:
    name = "outbox"

    def record(self, change: Change, using: str) -> None:
        self.record_many((change,), using)

    def record_many(self, changes: Iterable[Change], using: str) -> None:
        conn = connection(using)
        partitions = int(conf.app_setting("OUTBOX_PARTITIONS"))
        rows: list[tuple[str, str, int]] = []
        buffer = Buffer.of(conn, _forget) if in_transaction(conn) else None
        for change in changes:
            if buffer is not None:
                # The row's in-memory snapshot may hold values of a rolled-back savepoint: the
                # buffer knows the state the database holds.
                before = buffer.current_state(conn, change)
                if before is not change.before:
                    change = dataclasses.replace(change, before=before)
                buffer.add(conn, change)
            partition = partition_for(f"{change.declaration.label}:{change.pk}", partitions)
            rows += [(c.method, _params_text(c), partition) for c in commands_for((change,))]
        if rows:
            insert(conn, rows)


def _forget(buffer: Buffer) -> None:
    buffer.rows = {}


def _params_text(command: Command) -> str:
    """The command's parameters as encoded once (``{"<method>":<params>}`` minus the wrapper)."""
    prefix = f'{{"{command.method}":'
    if command.text.startswith(prefix) and command.text.endswith("}"):
        return command.text[len(prefix):-1]
    return _dumps(command.params)


def insert(conn: BaseDatabaseWrapper, rows: list[tuple[str, str, int]]) -> None:
    """Insert outbox rows ``(method, params as JSON text, partition)`` on ``conn``."""
    if conn.vendor not in _RAW_SQL_VENDORS:
        OutboxEntry.objects.using(conn.alias).bulk_create([
            OutboxEntry(method=method, payload=json.loads(text), partition=partition)
            for method, text, partition in rows])
        return
    now = conn.ops.adapt_datetimefield_value(timezone.now())
    params = [(method, text, partition, now) for method, text, partition in rows]
    with conn.cursor() as cursor:
        if len(params) == 1:
            cursor.execute(_sql(conn).insert, params[0])
        else:
            cursor.executemany(_sql(conn).insert, params)


class _Sql(NamedTuple):
    insert: str
    fetch: str
    partitions: str
    head: str
    lock: str
    delete: str  # PostgreSQL: one array parameter; others: format with one "%s" per id


_sql_cache: dict[tuple[str, str], _Sql] = {}


def _sql(conn: BaseDatabaseWrapper) -> _Sql:
    key = (conn.vendor, OutboxEntry._meta.db_table)
    found = _sql_cache.get(key)
    if found is None:
        qn = conn.ops.quote_name
        meta = OutboxEntry._meta
        table = qn(meta.db_table)

        def column(name: str) -> str:
            field = meta.get_field(name)
            assert isinstance(field, Field) and field.column
            return qn(field.column)

        id_, method, payload, partition, created = (
            column(name) for name in ("id", "method", "payload", "partition", "created_at"))
        value = "%s::jsonb" if conn.vendor == "postgresql" else "%s"
        where = f"FROM {table} WHERE {partition} = %s ORDER BY {id_}"
        found = _sql_cache[key] = _Sql(
            insert=f"INSERT INTO {table} ({method}, {payload}, {partition}, {created}) "
                   f"VALUES (%s, {value}, %s, %s)",
            fetch=f"SELECT {id_}, {method}, {payload} {where} LIMIT %s",
            partitions=f"SELECT DISTINCT {partition} FROM {table}",
            head=f"SELECT {id_} {where} LIMIT 1",
            lock=f"SELECT {id_} {where} LIMIT 1 FOR UPDATE SKIP LOCKED",
            # PostgreSQL: one array parameter (no client-side splitting of 500 placeholders)
            delete=f"DELETE FROM {table} WHERE {id_} = ANY(%s)" if conn.vendor == "postgresql"
            else f"DELETE FROM {table} WHERE {id_} IN ({{}})",
        )
    return found


class Row(NamedTuple):
    """An outbox row as the relay reads it: the payload stays JSON text, never decoded."""

    id: int
    method: str
    payload: str


@dataclasses.dataclass
class RelayResult:
    """What one relay pass did."""

    sent: int = 0  # rows delivered and deleted
    dropped: int = 0  # rows deleted after a non-retryable error
    failed_partitions: dict[int, str] = dataclasses.field(default_factory=dict)
    waiting_partitions: list[int] = dataclasses.field(default_factory=list)  # backoff or locked

    @property
    def ok(self) -> bool:
        return not self.failed_partitions


class Relay:
    """Drains the outbox of one database through Centrifugo's ``/batch`` API.

    ``run_once()`` visits every partition that has rows and is not backing off, and drains it
    in id order, ``batch_size`` rows per request, until it is empty or a request fails. A failed
    partition waits ``backoff * 2**(failures-1)`` seconds (jittered, capped at ``max_backoff``).

    Databases with ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL, MySQL 8, Oracle): several
    relays may run; a relay takes a partition only while it holds the lock on its oldest row, so
    rows are never sent by two relays nor out of order. Elsewhere (SQLite) run one relay: it
    reads a batch, sends it with no transaction open, then deletes it in a short write, so the
    site's writers are never blocked behind an HTTP call.

    ``run()`` keeps its database connection between passes (a database error closes it; the
    next pass opens a new one) and, when the table is empty, waits for new rows (see the
    module's docstring) at most ``interval`` seconds.
    """

    def __init__(self, using: str = "default", *, batch_size: int | None = None,
                 backoff: float = 0.5, max_backoff: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.using = using
        self.batch_size = int(batch_size or conf.app_setting("BATCH_SIZE"))
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.clock = clock
        self.failures: dict[int, int] = {}
        self.not_before: dict[int, float] = {}
        self.undeleted: set[int] = set()  # delivered, delete failed: never send them again
        self._listening: Any = None  # the PostgreSQL connection that LISTENs
        self._data_version: int | None = None  # SQLite's, when the last pass started

    # -- public -------------------------------------------------------------------------------
    def run_once(self, max_batches_per_partition: int = 1000) -> RelayResult:
        """One pass over the partitions that are due; never raises for Centrifugo failures."""
        result = RelayResult()
        self._watch()  # before reading: a commit after this point wakes the next wait()
        if self.undeleted:
            self._delete(sorted(self.undeleted))
        partitions = self._partitions()
        now = self.clock()
        for partition in partitions:
            if self.not_before.get(partition, 0.0) > now:
                result.waiting_partitions.append(partition)
                continue
            for _ in range(max_batches_per_partition):
                if self._drain_batch(partition, result) != "more":
                    break
        return result

    def run(self, *, interval: float = 1.0, stop: Callable[[], bool] = lambda: False,
            max_passes: int | None = None,
            sleep: Callable[[float], None] = time.sleep) -> None:
        """Relay until ``stop()`` is true (or ``max_passes`` passes), waiting when idle."""
        passes = 0
        while not stop() and (max_passes is None or passes < max_passes):
            passes += 1
            try:
                result = self.run_once()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the relay
                logger.exception("instant_signals: outbox relay pass failed")
                self._close()
                result = RelayResult(failed_partitions={-1: "database error"})
            if result.sent or result.dropped:
                continue  # there may be more right away
            delay = interval
            if self.not_before:
                delay = min(delay, max(0.0, min(self.not_before.values()) - self.clock()))
            try:
                self.wait(max(delay, 0.01), stop=stop, sleep=sleep)
            except Exception:  # noqa: BLE001 - waiting is an optimisation: fall back to sleeping
                logger.warning("instant_signals: outbox relay cannot wait for new rows; "
                               "sleeping instead", exc_info=True)
                self._close()
                sleep(max(delay, 0.01))

    def wait(self, timeout: float, *, stop: Callable[[], bool] = lambda: False,
             sleep: Callable[[float], None] = time.sleep) -> bool:
        """Wait at most ``timeout`` seconds for rows committed since the last pass began
        (True when woken by them; False after ``timeout`` or when ``stop()``)."""
        deadline = time.monotonic() + timeout
        vendor = connections[self.using].vendor
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

    def pending(self) -> int:
        return OutboxEntry.objects.using(self.using).count()

    # -- reading and deleting -------------------------------------------------------------------
    def _conn(self) -> BaseDatabaseWrapper:
        return connections[self.using]

    def _raw(self) -> bool:
        return self._conn().vendor in _RAW_SQL_VENDORS

    def _partitions(self) -> list[int]:
        if not self._raw():
            rows = OutboxEntry.objects.using(self.using).order_by()
            return sorted(rows.values_list("partition", flat=True).distinct())
        with self._conn().cursor() as cursor:
            cursor.execute(_sql(self._conn()).partitions)
            return sorted(int(p) for (p,) in cursor.fetchall())

    def _fetch(self, partition: int) -> list[Row]:
        """The partition's oldest rows, without those delivered and not yet deleted."""
        if not self._raw():
            rows = OutboxEntry.objects.using(self.using).filter(partition=partition)
            found = [Row(r.id, r.method, _dumps(r.payload))
                     for r in rows.order_by("id")[: self.batch_size]]
        else:
            with self._conn().cursor() as cursor:
                cursor.execute(_sql(self._conn()).fetch, [partition, self.batch_size])
                found = [Row(int(id_), str(method),
                             payload if isinstance(payload, str) else _dumps(payload))
                         for id_, method, payload in cursor.fetchall()]
        return [row for row in found if row.id not in self.undeleted]

    def _first_id(self, partition: int, lock: bool) -> int | None:
        conn = self._conn()
        if not self._raw():
            rows = OutboxEntry.objects.using(self.using).filter(partition=partition).order_by("id")
            if lock:
                rows = rows.select_for_update(skip_locked=True)
            return rows.values_list("id", flat=True).first()
        with conn.cursor() as cursor:
            cursor.execute(_sql(conn).lock if lock else _sql(conn).head, [partition])
            found = cursor.fetchone()
        return None if found is None else int(found[0])

    def _delete(self, ids: list[int]) -> None:
        """Delete delivered rows. Outside a transaction (SQLite), a lock is waited out and
        retried: the rows were delivered, and sending them again is the worse outcome."""
        if not ids:
            return
        conn = self._conn()
        wait, deadline = 0.05, time.monotonic() + _DELETE_PATIENCE
        self.undeleted.update(ids)
        while True:
            try:
                for start in range(0, len(ids), _DELETE_CHUNK):
                    chunk = ids[start:start + _DELETE_CHUNK]
                    if conn.vendor == "postgresql":
                        with conn.cursor() as cursor:
                            cursor.execute(_sql(conn).delete, [chunk])
                    elif self._raw():
                        with conn.cursor() as cursor:
                            cursor.execute(_sql(conn).delete.format(", ".join(["%s"] * len(chunk))),
                                           chunk)
                    else:
                        OutboxEntry.objects.using(self.using).filter(id__in=chunk).delete()
                    self.undeleted.difference_update(chunk)
                return
            except OperationalError as exc:
                if conn.in_atomic_block or time.monotonic() > deadline or \
                        not is_lock_error(exc):
                    raise
                logger.warning("instant_signals: outbox rows delivered, their delete met a "
                               "lock (%s); retrying in %.2f s", exc, wait)
                time.sleep(wait)
                wait = min(wait * 2, 1.0)

    def _close(self) -> None:
        self._listening = None
        self._data_version = None
        try:
            self._conn().close()
        except Exception:  # noqa: BLE001 - it is being dropped anyway
            pass

    # -- waiting for rows -----------------------------------------------------------------------
    def _watch(self) -> None:
        """Start noticing rows committed from now on (LISTEN / remember data_version)."""
        conn = self._conn()
        if conn.vendor == "sqlite":
            self._data_version = self._sqlite_data_version()
        elif conn.vendor == "postgresql" and not conn.in_atomic_block:
            conn.ensure_connection()
            if self._listening is not conn.connection:
                with conn.cursor() as cursor:
                    cursor.execute(f'LISTEN "{NOTIFY_CHANNEL}"')
                self._listening = conn.connection
            else:
                # Notifications of rows this pass is about to read: forget them (a busy relay
                # never waits, and the driver would keep them all).
                try:
                    self._drain_notifications(0.0)
                except TypeError:  # psycopg 3 before 3.2
                    pass

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
        with self._conn().cursor() as cursor:
            cursor.execute("PRAGMA data_version")
            return int(cursor.fetchone()[0])

    def _notified(self, timeout: float) -> bool:
        """A NOTIFY arrived on the LISTENing connection within ``timeout`` seconds."""
        if self._listening is not self._conn().connection:
            self._watch()  # reconnected: LISTEN again (the next pass reads what we missed)
            return True
        try:
            return self._drain_notifications(timeout)
        except TypeError:  # psycopg 3 before 3.2: notifies() has no timeout; poll the table
            time.sleep(timeout)
            return True

    # -- sending --------------------------------------------------------------------------------
    def _drain_batch(self, partition: int, result: RelayResult) -> str:
        """Send one batch of ``partition``: "more", "empty", "locked" or "failed"."""
        if self._conn().features.has_select_for_update_skip_locked:
            with transaction.atomic(using=self.using):
                # The partition's oldest row is its mutex: a relay works on a partition only
                # while it holds the lock on that row. Locking the whole batch with SKIP LOCKED
                # instead would let two relays take interleaved rows and overtake each other.
                head = self._first_id(partition, lock=False)
                if head is None:
                    return "empty"
                if self._first_id(partition, lock=True) != head:
                    result.waiting_partitions.append(partition)  # another relay has it
                    return "locked"
                batch = self._fetch(partition)
                delivered, dropped, error = self._send(batch)
                self._delete([row.id for row in delivered] + [row.id for row, _ in dropped])
        else:
            batch = self._fetch(partition)
            if not batch:
                return "empty"
            delivered, dropped, error = self._send(batch)  # no transaction open meanwhile
            self._delete([row.id for row in delivered] + [row.id for row, _ in dropped])
        result.sent += len(delivered)
        result.dropped += len(dropped)
        reporting.stats.add("published", sum(row.method == "publish" for row in delivered))
        for row, row_error in dropped:
            logger.error("instant_signals: outbox row %s dropped, Centrifugo refused it: %s",
                         row.id, row_error)
            reporting.failed([_publication(row)], row_error, sender=Relay)
        if error is not None:
            self._fail(partition, error, result)
            return "failed"
        self.failures.pop(partition, None)
        self.not_before.pop(partition, None)
        return "more" if len(batch) == self.batch_size else "empty"

    def _send(self, batch: list[Row]) -> tuple[list[Row], list[tuple[Row, Exception]],
                                               Exception | None]:
        """(delivered rows, dropped rows with their errors, the retryable error that stopped us)."""
        try:
            reporting.stats.add("requests")
            replies = client.batch([_encode(row) for row in batch])
        except CentrifugoError as exc:
            if exc.code in _MALFORMED and len(batch) > 1:
                # Centrifugo could not decode the request (e.g. a row whose channel is not a
                # string): find the culprit by sending the rows one at a time, in order.
                return self._send_one_by_one(batch)
            if exc.code in _MALFORMED:
                return [], [(batch[0], exc)], None
            # Unreachable, timeout, 5xx, or refused as a whole (a wrong API key, HTTP 401):
            # nothing was published; keep every row and back off.
            return [], [], exc
        except Exception as exc:  # noqa: BLE001 - anything else: keep the rows, retry later
            return [], [], exc
        delivered: list[Row] = []
        dropped: list[tuple[Row, Exception]] = []
        for row, reply in zip(batch, replies):
            error = client.reply_error(reply)
            if error is None:
                delivered.append(row)
            elif error.retryable:
                # Stop here; later rows of this batch were sent too, and go again with their
                # idempotency keys, so Centrifugo does not publish them twice.
                return delivered, dropped, error
            else:
                dropped.append((row, error))
        return delivered, dropped, None

    def _send_one_by_one(self, batch: list[Row]) -> tuple[list[Row], list[tuple[Row, Exception]],
                                                         Exception | None]:
        delivered: list[Row] = []
        dropped: list[tuple[Row, Exception]] = []
        for row in batch:
            more, bad, error = self._send([row])
            delivered += more
            dropped += bad
            if error is not None:
                return delivered, dropped, error
        return delivered, dropped, None

    def _fail(self, partition: int, error: Exception, result: RelayResult) -> None:
        failures = self.failures.get(partition, 0) + 1
        self.failures[partition] = failures
        delay = min(self.max_backoff, self.backoff * 2 ** (failures - 1))
        delay *= random.uniform(0.8, 1.2)
        self.not_before[partition] = self.clock() + delay
        result.failed_partitions[partition] = str(error)
        log = logger.warning if failures < 5 else logger.error
        log("instant_signals: outbox partition %d not delivered (attempt %d, next in %.1f s): %s",
            partition, failures, delay, error)


def _encode(row: Row) -> str:
    """``{"<method>":<payload>}`` around the stored JSON text, which is not decoded."""
    return f"{{{_dumps(row.method)}:{row.payload}}}"


def _publication(row: Row) -> Any:
    try:
        payload = json.loads(row.payload)
    except ValueError:
        return row.payload
    if isinstance(payload, dict) and row.method == "publish":
        return payload.get("data", payload)
    return payload


def relay(using: str = "default", *, batch_size: int | None = None) -> RelayResult:
    """Drain the outbox once (every partition until empty or its first failure)."""
    return Relay(using, batch_size=batch_size).run_once()
