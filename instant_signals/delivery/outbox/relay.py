"""``Relay``: drains the outbox of one database through Centrifugo's ``/batch`` API."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from typing import Callable, Protocol, Sequence

from django.db import OperationalError, transaction

from ... import client, conf, reporting
from ...exceptions import CentrifugoError
from ...transactions import is_lock_error
from ..commands import publication_of, wrap
from .store import Row, Store
from .wake import Waker

logger = logging.getLogger("instant_signals")

# Whole-request errors that mean "this request cannot be decoded", not "Centrifugo is unwell":
# HTTP 400 (body not understood), 413 (too large), Centrifugo 107 (bad request).
_MALFORMED = {400, 413, 107}
_DELETE_PATIENCE = 60.0  # seconds a delivered batch's delete is retried through locks


@dataclasses.dataclass
class Fed:
    """What a source put into the outbox in one pass."""

    moved: int = 0  # source rows turned into outbox rows
    dead: int = 0  # source rows it could not turn into anything (its own dead letters)
    held: bool = False  # rows are waiting for something else (another relay, a transaction)


class Source(Protocol):
    """Something that feeds the outbox before each pass (database capture's change table)."""

    def drain(self) -> Fed: ...

    def pending(self) -> int: ...


@dataclasses.dataclass
class RelayResult:
    """What one relay pass did."""

    sent: int = 0  # rows delivered and deleted
    dead: int = 0  # rows moved to the dead-letter state (OutboxEntry.objects.dead())
    failed_partitions: dict[int, str] = dataclasses.field(default_factory=dict)
    waiting_partitions: list[int] = dataclasses.field(default_factory=list)  # backoff or locked
    fed: Fed = dataclasses.field(default_factory=Fed)  # what the sources added

    @property
    def ok(self) -> bool:
        """No partition is waiting for a retry (dead letters do not count: they are done)."""
        return not self.failed_partitions

    @property
    def dropped(self) -> int:
        """The former name of ``dead``."""
        return self.dead


@dataclasses.dataclass
class _Outcome:
    """What sending a batch did to its rows."""

    delivered: list[Row] = dataclasses.field(default_factory=list)
    dead: list[tuple[Row, Exception]] = dataclasses.field(default_factory=list)
    retry: tuple[Row, Exception] | None = None  # the row a retryable error stopped at
    error: Exception | None = None  # what stops the partition until its backoff is over

    def add(self, other: _Outcome) -> None:
        self.delivered += other.delivered
        self.dead += other.dead
        self.retry, self.error = other.retry, other.error


class Relay:
    """Drains the outbox of one database through Centrifugo's ``/batch`` API.

    ``run_once()`` visits every partition that has pending rows and is not backing off, and
    drains it in id order, ``batch_size`` rows per request, until it is empty or a request
    fails. A failed partition waits ``backoff * 2**(failures-1)`` seconds (jittered, capped at
    ``max_backoff``).

    A row Centrifugo answers with a non-retryable error goes to the dead-letter state at once;
    a row answered with a retryable error (``CentrifugoError.retryable``) stops its partition
    and goes dead after ``max_attempts`` such answers (``OUTBOX_MAX_ATTEMPTS``). A failure of
    the whole request (unreachable, timeout, HTTP 5xx, wrong API key) is not the rows' fault:
    it counts no attempt. Dead rows keep their reason and attempts and are never sent again.

    Databases with ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL, MySQL 8, Oracle): several
    relays may run; a relay takes a partition only while it holds the lock on its oldest row, so
    rows are never sent by two relays nor out of order. Elsewhere (SQLite) run one relay: it
    reads a batch, sends it with no transaction open, then deletes it in a short write, so the
    site's writers are never blocked behind an HTTP call.

    ``run()`` keeps its database connection between passes (a database error closes it; the
    next pass opens a new one) and, when the table is empty, waits for new rows (``wake``) at
    most ``interval`` seconds.

    ``sources`` feed the outbox at the start of each pass (database capture's change table:
    ``capture.database.relay.ChangeSource``), so what they add goes out in the same pass.
    """

    #: Longest wait while a source holds rows back (another relay converts, a transaction that
    #: may precede them is still running): they are looked at again this soon.
    held_interval = 0.05

    def __init__(self, using: str = "default", *, batch_size: int | None = None,
                 backoff: float = 0.5, max_backoff: float = 30.0,
                 max_attempts: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sources: Sequence[Source] = ()):
        self.using = using
        self.sources = tuple(sources)
        self.batch_size = int(batch_size or conf.app_setting("BATCH_SIZE"))
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.max_attempts = int(max_attempts or conf.app_setting("OUTBOX_MAX_ATTEMPTS"))
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.clock = clock
        self.store = Store(using)
        self.waker = Waker(using)
        self.failures: dict[int, int] = {}
        self.not_before: dict[int, float] = {}
        self.undeleted: set[int] = set()  # delivered, delete failed: never send them again
        self.sent_total = 0  # rows delivered since this relay was made (for reports)
        self.dead_total = 0  # rows it moved to the dead letters

    # -- public -------------------------------------------------------------------------------
    def run_once(self, max_batches_per_partition: int = 1000, *,
                 tick: Callable[[], None] | None = None) -> RelayResult:
        """One pass over the partitions that are due; never raises for Centrifugo failures.
        ``tick()`` is called after every batch (e.g. a periodic report: a pass over a large
        backlog can take minutes)."""
        result = RelayResult()
        self.waker.watch()  # before reading: a commit after this point wakes the next wait()
        for source in self.sources:
            fed = source.drain()
            result.fed.moved += fed.moved
            result.fed.dead += fed.dead
            result.fed.held = result.fed.held or fed.held
        if self.undeleted:
            self._delete(sorted(self.undeleted))
        now = self.clock()
        for partition in self.store.partitions():
            if self.not_before.get(partition, 0.0) > now:
                result.waiting_partitions.append(partition)
                continue
            for _ in range(max_batches_per_partition):
                drained = self._drain_batch(partition, result)
                if tick is not None:
                    tick()
                if drained != "more":
                    break
        return result

    def run(self, *, interval: float = 1.0, stop: Callable[[], bool] = lambda: False,
            max_passes: int | None = None,
            sleep: Callable[[float], None] = time.sleep,
            tick: Callable[[], None] | None = None) -> None:
        """Relay until ``stop()`` is true (or ``max_passes`` passes), waiting when idle;
        ``tick()`` after every batch and every wait (at least every ``interval`` seconds)."""
        passes = 0
        while not stop() and (max_passes is None or passes < max_passes):
            passes += 1
            if tick is not None:
                tick()
            try:
                result = self.run_once(tick=tick)
            except Exception:  # noqa: BLE001 - a database hiccup must not end the relay
                logger.exception("instant_signals: outbox relay pass failed")
                self._close()
                result = RelayResult(failed_partitions={-1: "database error"})
            if result.sent or result.dead or result.fed.moved or result.fed.dead:
                continue  # there may be more right away
            delay = min(interval, self.held_interval) if result.fed.held else interval
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
        return self.waker.wait(timeout, stop=stop, sleep=sleep)

    def pending(self) -> int:
        """Rows waiting to be sent (dead letters not counted), the sources' included."""
        return self.store.pending() + sum(source.pending() for source in self.sources)

    # -- one batch ----------------------------------------------------------------------------
    def _drain_batch(self, partition: int, result: RelayResult) -> str:
        """Send one batch of ``partition``: "more", "empty", "locked" or "failed"."""
        if self.store.conn.features.has_select_for_update_skip_locked:
            with transaction.atomic(using=self.using):
                # The partition's oldest row is its mutex: a relay works on a partition only
                # while it holds the lock on that row. Locking the whole batch with SKIP LOCKED
                # instead would let two relays take interleaved rows and overtake each other.
                head = self.store.head(partition)
                if head is None:
                    return "empty"
                if self.store.head(partition, lock=True) != head:
                    result.waiting_partitions.append(partition)  # another relay has it
                    return "locked"
                batch = self._fetch(partition)
                outcome = self._send(batch)
                self._settle(outcome)
        else:
            batch = self._fetch(partition)
            if not batch:
                return "empty"
            outcome = self._send(batch)  # no transaction open meanwhile
            self._settle(outcome)
        result.sent += len(outcome.delivered)
        result.dead += len(outcome.dead)
        self.sent_total += len(outcome.delivered)
        self.dead_total += len(outcome.dead)
        reporting.stats.add("published",
                            sum(row.method == "publish" for row in outcome.delivered))
        for row, row_error in outcome.dead:
            logger.error("instant_signals: outbox row %s is dead after %d attempt(s), "
                         "Centrifugo refused it: %s", row.id, row.attempts + 1, row_error)
            reporting.stats.add("dead")
            reporting.failed([publication_of(row.method, row.payload)], row_error,
                             sender=Relay)
        if outcome.error is not None:
            self._fail(partition, outcome.error, result)
            return "failed"
        self.failures.pop(partition, None)
        self.not_before.pop(partition, None)
        return "more" if len(batch) == self.batch_size else "empty"

    def _fetch(self, partition: int) -> list[Row]:
        """The partition's oldest rows, without those delivered and not yet deleted."""
        return [row for row in self.store.fetch(partition, self.batch_size)
                if row.id not in self.undeleted]

    def _send(self, batch: list[Row]) -> _Outcome:
        """Send ``batch`` in one request; what happened to each row."""
        try:
            reporting.stats.add("requests")
            replies = client.batch([wrap(row.method, row.payload) for row in batch])
        except CentrifugoError as exc:
            if exc.code in _MALFORMED and len(batch) > 1:
                # Centrifugo could not decode the request (e.g. a row whose channel is not a
                # string): find the culprit by sending the rows one at a time, in order.
                return self._send_one_by_one(batch)
            if exc.code in _MALFORMED:
                return _Outcome(dead=[(batch[0], exc)])
            # Unreachable, timeout, 5xx, or refused as a whole (a wrong API key, HTTP 401):
            # nothing was published and no row is to blame; keep them all and back off.
            return _Outcome(error=exc)
        except Exception as exc:  # noqa: BLE001 - anything else: keep the rows, retry later
            return _Outcome(error=exc)
        outcome = _Outcome()
        for row, reply in zip(batch, replies):
            error = client.reply_error(reply)
            if error is None:
                outcome.delivered.append(row)
            elif not error.retryable:
                outcome.dead.append((row, error))
            elif outcome.retry is None:
                # The partition stops here. Centrifugo ran the later rows of this request too:
                # the delivered ones are done (deleted, never sent twice), the others wait.
                outcome.retry = (row, error)
                if row.attempts + 1 >= self.max_attempts:
                    outcome.dead.append((row, error))
                else:
                    outcome.error = error
            else:
                # Another row of the request failed retryably: it waits for the next attempt
                # (counted when it is the one the partition stops at).
                outcome.error = outcome.error or error
        return outcome

    def _send_one_by_one(self, batch: list[Row]) -> _Outcome:
        outcome = _Outcome()
        for row in batch:
            outcome.add(self._send([row]))
            if outcome.error is not None:
                return outcome
        return outcome

    def _settle(self, outcome: _Outcome) -> None:
        """Write down what a batch did: delete the delivered rows, mark the dead ones, count
        the attempt of the row a retryable error stopped at."""
        self._delete([row.id for row in outcome.delivered])
        dead = {row.id for row, _ in outcome.dead}
        failed = list(outcome.dead)
        if outcome.retry is not None and outcome.retry[0].id not in dead:
            failed.append(outcome.retry)
        for row, error in failed:
            self._patiently(lambda: self.store.fail(row, str(error), dead=row.id in dead))

    def _delete(self, ids: list[int]) -> None:
        """Delete delivered rows. Outside a transaction (SQLite), a lock is waited out and
        retried: the rows were delivered, and sending them again is the worse outcome."""
        if not ids:
            return
        self.undeleted.update(ids)
        self._patiently(lambda: self.store.delete(ids))
        self.undeleted.difference_update(ids)

    def _patiently(self, write: Callable[[], None]) -> None:
        """Run ``write``; outside a transaction, retry it through lock errors for a while."""
        wait, deadline = 0.05, time.monotonic() + _DELETE_PATIENCE
        while True:
            try:
                write()
                return
            except OperationalError as exc:
                if self.store.conn.in_atomic_block or time.monotonic() > deadline or \
                        not is_lock_error(exc):
                    raise
                logger.warning("instant_signals: outbox rows delivered, writing it down met a "
                               "lock (%s); retrying in %.2f s", exc, wait)
                time.sleep(wait)
                wait = min(wait * 2, 1.0)

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

    def _close(self) -> None:
        self.waker.close()
        try:
            self.store.conn.close()
        except Exception:  # noqa: BLE001 - it is being dropped anyway
            pass


def relay(using: str = "default", *, batch_size: int | None = None) -> RelayResult:
    """Drain the outbox once (every partition until empty or its first failure)."""
    return Relay(using, batch_size=batch_size).run_once()
