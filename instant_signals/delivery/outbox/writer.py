"""The durable backend: a change's commands become outbox rows in the change's transaction."""

from __future__ import annotations

import dataclasses
import zlib
from typing import Iterable

from ... import conf
from ...declarations import Change
from ...transactions import connection, in_transaction
from ..buffer import Buffer
from ..commands import commands_for
from .store import Store


def partition_for(key: str, partitions: int) -> int:
    """A stable partition for ``key`` (``"<model label>:<pk>"``)."""
    if partitions <= 1:
        return 0
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


class OutboxBackend:
    """``DELIVERY="outbox"``: a change does not commit without its rows (errors roll it back)."""

    name = "outbox"
    durable = True

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
            rows += [(c.method, c.params_text, partition) for c in commands_for((change,))]
        if rows:
            Store.insert(conn, rows)


def _forget(buffer: Buffer) -> None:
    buffer.rows = {}
