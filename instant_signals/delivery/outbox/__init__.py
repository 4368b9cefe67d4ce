"""Durable delivery: an outbox table written in the change's transaction, and a relay for it.

With ``INSTANT_SIGNALS["DELIVERY"] = "outbox"`` every model event becomes rows of
``instant_signals_outbox`` (Centrifugo's outbox shape: ``method``, ``payload``, ``partition``,
``created_at``; plus ``attempts``, ``error`` and ``dead_at``, which other writers may leave
NULL) inserted in the same transaction as the change: a rolled-back transaction leaves no row,
a committed one leaves its events even if Centrifugo is down. A row is one plain ``INSERT`` of
the command's JSON as it was encoded for the size check (no model instance, no second encoding).

One module per job:

* ``writer``: the backend (``OutboxBackend``) and ``partition_for``;
* ``store``: the table's operations, SQL per database vendor;
* ``relay``: ``Relay``, what ``manage.py relay_outbox`` runs;
* ``report``: ``RelayReport``, its periodic line of rate and backlog;
* ``wake``: waking an idle relay (PostgreSQL ``LISTEN``, SQLite ``PRAGMA data_version``).

Two ways drain the table: on PostgreSQL, Centrifugo's own ``postgresql`` consumer
(``installws --outbox-dsn``; the ``0002`` migration adds the ``NOTIFY`` trigger that wakes it at
once); anywhere, ``manage.py relay_outbox``.

Order: the partition of a row is a stable hash of the model label and the object's pk, so every
event of one object lands in one partition, and partitions are drained in id order, stopping at
the first retryable failure. Duplicates: each publish row carries its event id as Centrifugo's
``idempotency_key``, so sending a row again (after a crash between send and delete) does not
publish twice while Centrifugo remembers the key (5 minutes; across Centrifugo restarts only with
the Redis engine).

Errors (``CentrifugoError.retryable`` decides): a row Centrifugo answers with a non-retryable
error (102 unknown channel, 108 not available, a row that makes the whole ``/batch``
undecodable, HTTP 400 — found by resending the batch one row at a time) goes to the dead-letter
state at once (``OutboxEntry.objects.dead()``), reported; a row answered with a retryable error
(100 internal, 111 too many requests) stops its partition with exponential backoff and goes dead
after ``OUTBOX_MAX_ATTEMPTS`` such answers. One poison row never blocks its partition. A failure
of the whole request (unreachable, timeout, HTTP 5xx, wrong API key) is nobody's row's fault: the
rows stay, no attempt is counted. Centrifugo's own consumer skips such rows (and does not know
the dead-letter state).

SQLite: the relay reads a batch, sends it with no transaction open, then deletes it in one
short write; a delete that meets a lock is retried (the rows were delivered: sending them again
would be the worse outcome), and rows delivered but not yet deleted are never sent again by
this relay. The site's writers and the relay share the file without "database is locked" only
with WAL, ``BEGIN IMMEDIATE`` transactions and a busy timeout (system checks W030-W032).
"""

from __future__ import annotations

from .relay import Relay, RelayResult, relay
from .store import Row, Store
from .wake import NOTIFY_CHANNEL
from .writer import OutboxBackend, partition_for

__all__ = ["NOTIFY_CHANNEL", "OutboxBackend", "Relay", "RelayResult", "Row", "Store",
           "partition_for", "relay"]
