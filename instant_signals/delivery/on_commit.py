"""Default delivery: events of a transaction are published after it commits, in few requests.

Changes are buffered per transaction (``buffer.Buffer``: coalesced per row, savepoint-aware)
and sent through Centrifugo's ``/batch`` in chunks of ``BATCH_SIZE`` once the transaction
commits; a rolled-back transaction publishes nothing. Outside a transaction a change is sent at
once. A failure to reach Centrifugo never raises into the save (see ``reporting``).
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import Any, Iterable

from .. import client, conf, reporting
from ..declarations import Change
from ..transactions import connection, in_transaction
from .buffer import Buffer
from .commands import Command, commands_for

logger = logging.getLogger("instant_signals")


class OnCommitBackend:
    name = "on_commit"
    durable = False

    def record_many(self, changes: Iterable[Change], using: str) -> None:
        conn = connection(using)
        if not in_transaction(conn):
            send(commands_for(changes))
            return
        buffer = Buffer.of(conn, _flush)
        for change in changes:
            buffer.add(conn, change)


def _flush(buffer: Buffer) -> None:
    """Run by Django after COMMIT: whatever happens here must not reach the caller's save."""
    try:
        send(commands_for(buffer.changes()))
    except Exception:  # noqa: BLE001 - the change is committed; losing its event is logged
        logger.exception("instant_signals: could not publish the events of a transaction")
    finally:
        buffer.rows = {}


def send(commands: Iterable[Command]) -> None:
    """Send commands through ``/batch``, ``BATCH_SIZE`` per request, built one chunk at a time
    (memory stays flat); never raises: failures are reported, per command when Centrifugo says
    which one failed."""
    size = int(conf.app_setting("BATCH_SIZE"))
    pending = iter(commands)
    while True:
        chunk = list(islice(pending, size))
        if not chunk:
            return
        try:
            reporting.stats.add("requests")
            replies = client.batch([c.text for c in chunk])
        except Exception as exc:  # noqa: BLE001 - a broken broadcast must never break a save
            reporting.failed(_publications(chunk), exc, sender=Change)
            continue
        published = 0
        for command, reply in zip(chunk, replies):
            error = client.reply_error(reply)
            if error is None:
                published += command.method == "publish"
            else:
                reporting.failed(_publications([command]) or [command.params], error, sender=Change)
        reporting.stats.add("published", published)


def _publications(commands: list[Command]) -> list[dict[str, Any]]:
    return [c.publication for c in commands if c.publication is not None]
