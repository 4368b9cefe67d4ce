"""Durable delivery: an outbox table written in the change's transaction, and a relay for it.

With ``INSTANT_SIGNALS["DELIVERY"] = "outbox"`` every model event becomes rows of
``instant_signals_outbox`` (Centrifugo's outbox shape: ``method``, ``payload``, ``partition``,
``created_at``) inserted in the same transaction as the change: a rolled-back transaction leaves
no row, a committed one leaves its events even if Centrifugo is down.

Two ways drain the table:

* On PostgreSQL, Centrifugo's own ``postgresql`` consumer (``installws --outbox-dsn``); the
  ``0002`` migration adds the ``NOTIFY`` trigger that wakes it at once.
* Anywhere, ``manage.py relay_outbox`` (``Relay`` below).

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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
import zlib
from typing import Any, Callable, Iterable

from django.db import close_old_connections, connections, transaction

from .. import client, conf, reporting
from ..declarations import Change
from ..exceptions import CentrifugoError
from ..models import OutboxEntry
from ..transactions import connection, in_transaction
from .buffer import Buffer
from .commands import commands_for

logger = logging.getLogger("instant_signals")

# Whole-request errors that mean "this request cannot be decoded", not "Centrifugo is unwell":
# HTTP 400 (body not understood), 413 (too large), Centrifugo 107 (bad request).
_MALFORMED = {400, 413, 107}


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
        rows = []
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
            rows += [OutboxEntry(method=c.method, payload=c.params, partition=partition)
                     for c in commands_for((change,))]
        if rows:
            OutboxEntry.objects.using(using).bulk_create(rows)


def _forget(buffer: Buffer) -> None:
    buffer.rows = {}


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

    # -- public -------------------------------------------------------------------------------
    def run_once(self, max_batches_per_partition: int = 1000) -> RelayResult:
        """One pass over the partitions that are due; never raises for Centrifugo failures."""
        result = RelayResult()
        partitions = sorted(self._rows().order_by().values_list("partition", flat=True).distinct())
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
        """Relay until ``stop()`` is true (or ``max_passes`` passes), sleeping when idle."""
        passes = 0
        while not stop() and (max_passes is None or passes < max_passes):
            passes += 1
            close_old_connections()  # drop a connection the database closed (restart, timeout)
            try:
                result = self.run_once()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the relay
                logger.exception("instant_signals: outbox relay pass failed")
                connections[self.using].close()
                result = RelayResult(failed_partitions={-1: "database error"})
            if result.sent or result.dropped:
                continue  # there may be more right away
            delay = interval
            if self.not_before:
                delay = min(delay, max(0.0, min(self.not_before.values()) - self.clock()))
            sleep(max(delay, 0.01))

    def pending(self) -> int:
        return self._rows().count()

    # -- internals ----------------------------------------------------------------------------
    def _rows(self) -> Any:
        return OutboxEntry.objects.using(self.using)

    def _drain_batch(self, partition: int, result: RelayResult) -> str:
        """Send one batch of ``partition``: "more", "empty", "locked" or "failed"."""
        rows = self._rows().filter(partition=partition).order_by("id")
        if connections[self.using].features.has_select_for_update_skip_locked:
            with transaction.atomic(using=self.using):
                # The partition's oldest row is its mutex: a relay works on a partition only
                # while it holds the lock on that row. Locking the whole batch with SKIP LOCKED
                # instead would let two relays take interleaved rows and overtake each other.
                head = rows.values_list("id", flat=True).first()
                if head is None:
                    return "empty"
                mine = rows.select_for_update(skip_locked=True).values_list("id", flat=True)[:1]
                if list(mine) != [head]:
                    result.waiting_partitions.append(partition)  # another relay has it
                    return "locked"
                batch = list(rows[: self.batch_size])
                delivered, dropped, error = self._send(batch)
                self._delete(delivered, dropped)
        else:
            batch = list(rows[: self.batch_size])
            if not batch:
                return "empty"
            delivered, dropped, error = self._send(batch)  # no transaction open meanwhile
            self._delete(delivered, dropped)
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

    def _delete(self, delivered: list[Any], dropped: list[tuple[Any, Exception]]) -> None:
        done = [row.id for row in delivered] + [row.id for row, _ in dropped]
        if done:
            self._rows().filter(id__in=done).delete()

    def _send(self, batch: list[Any]) -> tuple[list[Any], list[tuple[Any, Exception]],
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
        delivered: list[Any] = []
        dropped: list[tuple[Any, Exception]] = []
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

    def _send_one_by_one(self, batch: list[Any]) -> tuple[list[Any], list[tuple[Any, Exception]],
                                                         Exception | None]:
        delivered: list[Any] = []
        dropped: list[tuple[Any, Exception]] = []
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


def _encode(row: Any) -> str:
    return json.dumps({row.method: row.payload}, separators=(",", ":"))


def _publication(row: Any) -> Any:
    payload = row.payload
    if isinstance(payload, dict) and row.method == "publish":
        return payload.get("data", payload)
    return payload


def relay(using: str = "default", *, batch_size: int | None = None) -> RelayResult:
    """Drain the outbox once (every partition until empty or its first failure)."""
    return Relay(using, batch_size=batch_size).run_once()
