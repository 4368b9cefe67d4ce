"""Durable delivery: an outbox table written in the change's transaction, and a relay for it.

With ``INSTANT_SIGNALS["DELIVERY"] = "outbox"`` every model event becomes rows of
``instant_signals_outbox`` (Centrifugo's outbox shape: ``method``, ``payload``, ``partition``,
``created_at``) inserted in the same transaction as the change: a rolled-back transaction leaves
no row, a committed one leaves its events even if Centrifugo is down.

Two ways drain the table:

* On PostgreSQL, Centrifugo's own ``postgresql`` consumer (``generate_config(outbox_dsn=...)``);
  the ``0002`` migration adds the ``NOTIFY`` trigger that wakes it at once.
* Anywhere, ``manage.py relay_outbox`` (or ``Relay`` / ``relay()`` below).

Order: the partition of a row is a stable hash of the model label and the object's pk, so every
event of one object lands in one partition, and partitions are drained in id order, stopping at
the first failure. Duplicates: each row carries the event id as Centrifugo's
``idempotency_key``, so sending a row again (after a crash between send and delete) does not
publish twice while Centrifugo remembers the key (5 minutes; across Centrifugo restarts only with
the Redis engine).

Errors: a retryable failure (Centrifugo unreachable, timeout, HTTP 5xx, codes 100/108) or a
refusal of the whole request (wrong API key) keeps the row and the rest of its partition for a
later attempt with exponential backoff. A row Centrifugo can never accept (a per-row error such
as 102 unknown channel, 104 unknown method, 107 bad request; or a row that makes the whole
``/batch`` undecodable, HTTP 400 — found by resending the batch one row at a time) is logged,
counted in ``delivery.stats["failed"]``, sent as the ``broadcast_failed`` signal and deleted, and
later rows go on: one poison row never blocks its partition. Centrifugo's own consumer also
skips such rows (it retries only internal errors).
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from django.db import close_old_connections, connections, transaction

from . import client, conf

logger = logging.getLogger("instant_signals")

# Whole-request errors that mean "this request cannot be decoded", not "Centrifugo is unwell":
# HTTP 400 (body not understood), 413 (too large), Centrifugo 107 (bad request).
_MALFORMED = {400, 413, 107}

#: PostgreSQL ``LISTEN`` channel the trigger notifies (the consumer's
#: ``partition_notification_channel`` in ``server.generate_config``).
NOTIFY_CHANNEL = "instant_signals_outbox"


def partition_for(command: dict[str, Any], partitions: int | None = None) -> int:
    """The partition of one publish command: a stable hash of model label + pk.

    Commands that are not model events (no ``data.pk``) are spread by channel name.
    """
    if partitions is None:
        partitions = int(conf.app_setting("OUTBOX_PARTITIONS"))
    if partitions <= 1:
        return 0
    envelope = command.get("data")
    key = None
    if isinstance(envelope, dict):
        event = envelope.get("data")
        if isinstance(event, dict) and "pk" in event:
            key = f"{envelope.get('bucket') or event.get('model') or ''}:{event['pk']}"
    if key is None:
        key = str(command.get("channel", ""))
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


def write(commands: Iterable[dict[str, Any]], using: str = "default") -> list[Any]:
    """Store publish commands as outbox rows on database ``using``, in its current transaction."""
    from .models import OutboxEntry

    commands = list(commands)
    if not commands:
        return []
    partitions = int(conf.app_setting("OUTBOX_PARTITIONS"))
    rows = [
        OutboxEntry(method="publish", payload=command, partition=partition_for(command, partitions))
        for command in commands
    ]
    return OutboxEntry.objects.using(using).bulk_create(rows)


@dataclass
class RelayResult:
    """What one relay pass did."""

    sent: int = 0  # rows delivered and deleted
    dropped: int = 0  # rows deleted after a non-retryable error
    failed_partitions: dict[int, str] = field(default_factory=dict)  # partition -> error
    waiting_partitions: list[int] = field(default_factory=list)  # skipped: backoff or locked

    @property
    def ok(self) -> bool:
        return not self.failed_partitions


class Relay:
    """Drains the outbox of one database through Centrifugo's ``/batch`` API.

    ``run_once()`` visits every partition that has rows and is not backing off, and drains it
    in id order, ``batch_size`` rows per request, until it is empty or a request fails. A failed
    partition waits ``backoff * 2**(failures-1)`` seconds (jittered, capped at ``max_backoff``).

    Two relays may run at once: on databases with ``SELECT ... FOR UPDATE SKIP LOCKED``
    (PostgreSQL, MySQL 8, Oracle) a relay only takes a partition whose oldest row it could lock,
    so rows are never sent by two relays and never out of order. SQLite has no row locks: run one
    relay there (a second would only resend rows, which the idempotency key absorbs).
    """

    def __init__(
        self,
        using: str = "default",
        *,
        batch_size: int | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
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
        from .models import OutboxEntry

        result = RelayResult()
        partitions = sorted(
            OutboxEntry.objects.using(self.using).order_by()
            .values_list("partition", flat=True).distinct()
        )
        now = self.clock()
        for partition in partitions:
            if self.not_before.get(partition, 0.0) > now:
                result.waiting_partitions.append(partition)
                continue
            for _ in range(max_batches_per_partition):
                outcome = self._drain_batch(partition, result)
                if outcome != "more":
                    break
        return result

    def run(
        self,
        *,
        interval: float = 1.0,
        stop: Callable[[], bool] = lambda: False,
        max_passes: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
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
        from .models import OutboxEntry

        return OutboxEntry.objects.using(self.using).count()

    # -- internals ----------------------------------------------------------------------------
    def _drain_batch(self, partition: int, result: RelayResult) -> str:
        """Send one batch of ``partition``: "more", "empty", "locked" or "failed"."""
        from .models import OutboxEntry

        manager = OutboxEntry.objects.using(self.using)
        connection = connections[self.using]
        skip_locked = connection.features.has_select_for_update_skip_locked
        with transaction.atomic(using=self.using):
            rows = manager.filter(partition=partition).order_by("id")
            if skip_locked:
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
            if not batch:
                return "empty"
            delivered, dropped, error = self._send(batch)
            done = [row.id for row in delivered] + [row.id for row, _ in dropped]
            if done:
                manager.filter(id__in=done).delete()
        result.sent += len(delivered)
        result.dropped += len(dropped)
        self._note_sent(len(delivered))
        if dropped:
            self._note_dropped(dropped)
        if error is not None:
            self._fail(partition, error, result)
            return "failed"
        self.failures.pop(partition, None)
        self.not_before.pop(partition, None)
        return "more" if len(batch) == self.batch_size else "empty"

    def _send(self, batch: list[Any]) -> tuple[list[Any], list[tuple[Any, Exception]], Exception | None]:
        """(delivered rows, dropped rows with their errors, the retryable error that stopped us)."""
        try:
            replies = self._request(batch)
        except client.CentrifugoError as exc:
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
        if len(replies) != len(batch):
            return [], [], client.CentrifugoError(
                f"Centrifugo answered {len(replies)} replies to {len(batch)} commands",
                retryable=True)
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

    def _send_one_by_one(self, batch: list[Any]) -> tuple[list[Any], list[tuple[Any, Exception]], Exception | None]:
        delivered: list[Any] = []
        dropped: list[tuple[Any, Exception]] = []
        for row in batch:
            more, bad, error = self._send([row])
            delivered += more
            dropped += bad
            if error is not None:
                return delivered, dropped, error
        return delivered, dropped, None

    @staticmethod
    def _request(batch: list[Any]) -> list[dict[str, Any]]:
        from . import delivery

        delivery._count("requests")
        return client.batch([{row.method: row.payload} for row in batch])

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

    @staticmethod
    def _note_sent(count: int) -> None:
        if count:
            from . import delivery

            delivery._count("published", count)

    @staticmethod
    def _note_dropped(dropped: list[tuple[Any, Exception]]) -> None:
        from . import delivery
        from .signals import broadcast_failed

        for row, error in dropped:
            delivery._count("failed")
            logger.error(
                "instant_signals: outbox row %s to %r dropped, Centrifugo refused it: %s",
                row.id, row.payload.get("channel") if isinstance(row.payload, dict) else None,
                error,
            )
            try:
                broadcast_failed.send(
                    sender=Relay,
                    publications=[row.payload.get("data") if isinstance(row.payload, dict)
                                  else row.payload],
                    error=error,
                )
            except Exception:  # noqa: BLE001
                logger.exception("instant_signals: a broadcast_failed receiver raised")


def relay(using: str = "default", *, batch_size: int | None = None) -> RelayResult:
    """Drain the outbox once (every partition until empty or its first failure)."""
    return Relay(using, batch_size=batch_size).run_once()
