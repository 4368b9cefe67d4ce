"""The test capture (``testing.capture_broadcasts()``): what every delivery mode would publish.

It takes the changes before any backend does: buffered per transaction like the default mode
(several saves of a row are one event, a rolled-back block records nothing) and turned into
publications once the transaction's changes are final, at commit. So a test sees the same
publications whatever ``DELIVERY`` says, and nothing is sent or written to the outbox.
"""

from __future__ import annotations

from typing import Iterable

from .. import reporting
from ..declarations import Change
from ..transactions import connection, in_transaction
from .buffer import Buffer
from .commands import commands_for


class CaptureBackend:
    name = "capture"
    durable = False

    def record_many(self, changes: Iterable[Change], using: str) -> None:
        conn = connection(using)
        if not in_transaction(conn):
            _record(changes)
            return
        buffer = Buffer.of(conn, _flush)
        for change in changes:
            buffer.add(conn, change)


def _flush(buffer: Buffer) -> None:
    try:
        _record(buffer.changes())
    finally:
        buffer.rows = {}


def _record(changes: Iterable[Change]) -> None:
    captured = reporting.capturing()
    publications = [c.publication for c in commands_for(changes) if c.publication is not None]
    if captured is not None:
        captured.extend(publications)


CAPTURE = CaptureBackend()
