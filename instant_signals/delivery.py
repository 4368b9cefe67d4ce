"""Delivery of model events: collected per transaction, coalesced per row, sent after commit.

Each transaction (per database alias) gathers its changes in *segments*: a run of changes made
in one savepoint state. A segment registers one ``on_commit`` hook when it starts, so Django
drops it with its savepoint on rollback, and sends its events in as few ``/batch`` calls as
``BATCH_SIZE`` allows when the transaction commits. Outside a transaction an event is sent at once.

A failure to reach Centrifugo never raises into the save: it is logged, counted in ``stats``
and sent as the ``broadcast_failed`` signal.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Iterable

from django.db import connections

from . import client, conf
from .serialization import json_safe
from .signals import broadcast_failed

logger = logging.getLogger("instant_signals")

CREATED, UPDATED, DELETED = "created", "updated", "deleted"

# When set (by testing.capture_broadcasts), publications are appended here instead of sent.
capture_target: ContextVar[list | None] = ContextVar("instant_signals_capture", default=None)

_stats_lock = threading.Lock()
stats: dict[str, int] = {"published": 0, "failed": 0, "requests": 0}


def _count(name: str, n: int = 1) -> None:
    with _stats_lock:
        stats[name] += n


@dataclass(slots=True)
class Change:
    """One row event of one declaration, as recorded by the signal handlers."""

    declaration: Any  # registry.Declaration
    pk: Any
    event: str
    channels: tuple[str, ...]  # where the row is now (for deleted: where it was)
    previous_channels: tuple[str, ...] = ()  # where it was before an update
    fields: dict[str, Any] = field(default_factory=dict)  # raw values
    changed: dict[str, Any] | None = None  # previous raw values of changed fields

    @property
    def key(self) -> tuple[int, Any]:
        return (id(self.declaration), self.pk)


def coalesce(old: Change, new: Change) -> Change | None:
    """Two changes of one row in one transaction as one (None: nothing to send)."""
    if old.event == CREATED:
        if new.event == DELETED:
            return None
        return Change(old.declaration, new.pk, CREATED, new.channels, (), new.fields)
    if old.event == UPDATED and new.event == UPDATED:
        changed = {**(new.changed or {}), **(old.changed or {})}  # the earliest value wins
        changed = {k: v for k, v in changed.items() if new.fields.get(k, v) != v or k not in new.fields}
        return Change(old.declaration, new.pk, UPDATED, new.channels, old.previous_channels,
                      new.fields, changed)
    if old.event == UPDATED and new.event == DELETED:
        return Change(old.declaration, new.pk, DELETED, old.previous_channels, (), new.fields)
    if old.event == DELETED and new.event == CREATED:  # the pk came back in the same transaction
        changed = {k: v for k, v in old.fields.items() if new.fields.get(k) != v}
        return Change(old.declaration, new.pk, UPDATED, new.channels, old.channels,
                      new.fields, changed)
    return new


def publications(change: Change) -> list[dict[str, Any]]:
    """Server API ``publish`` commands for one change (moves give deleted + created)."""
    if change.event != UPDATED:
        groups = [(change.event, change.channels)]
    else:
        before = set(change.previous_channels)
        now = set(change.channels)
        groups = [
            (UPDATED, [c for c in change.channels if c in before]),
            (DELETED, [c for c in change.previous_channels if c not in now]),
            (CREATED, [c for c in change.channels if c not in before]),
        ]
    declaration = change.declaration
    site = conf.site_name()
    commands = []
    for event, channels in groups:
        if not channels or event not in declaration.events:
            continue
        data: dict[str, Any] = {
            "model": declaration.label,
            "pk": json_safe(change.pk),
            "event": event,
            "fields": declaration.render(change.fields),
        }
        if event == UPDATED:
            data["changed"] = {k: json_safe(v) for k, v in (change.changed or {}).items()}
        event_id = os.urandom(16).hex()  # 128 random bits, like uuid4, at a seventh of the cost
        for channel in channels:
            payload: dict[str, Any] = {"channel": channel}
            if site:
                payload["site"] = site
            payload.update(event_class=event, bucket=declaration.label, data=data, id=event_id)
            commands.append({"channel": channel, "data": payload, "idempotency_key": event_id})
    return commands


class Segment:
    """Changes made in one savepoint state of one transaction, flushed by one on_commit hook."""

    __slots__ = ("state", "hooks", "pending", "flushed")

    def __init__(self, state: tuple[str, ...]):
        self.state = state
        self.hooks: list | None = None
        self.pending: dict[tuple[int, Any], Change] = {}
        self.flushed = False

    def add(self, change: Change) -> None:
        key = change.key
        old = self.pending.pop(key, None)  # re-inserted so the dict keeps the latest order
        merged = coalesce(old, change) if old is not None else change
        if merged is not None:
            self.pending[key] = merged

    def flush(self) -> None:
        self.flushed = True
        changes, self.pending = self.pending, {}
        # A generator: commands are built and encoded one batch at a time (memory stays flat).
        send(command for change in changes.values() for command in publications(change))


def record(change: Change, using: str) -> None:
    """Queue one change on the transaction of database ``using`` (or send it now in autocommit)."""
    if conf.app_setting("DELIVERY") == "outbox":
        from .outbox import write

        write(publications(change), using=using)
        return
    connection = connections[using]
    if not connection.in_atomic_block:
        send(publications(change))
        return
    segment: Segment | None = getattr(connection, "_instant_signals_segment", None)
    # atomic(savepoint=False) pushes None: it is no savepoint and cannot be rolled back alone.
    state = tuple(sid for sid in connection.savepoint_ids if sid is not None)
    if (
        segment is None
        or segment.flushed
        or segment.state != state
        or segment.hooks is not connection.run_on_commit
    ):
        segment = Segment(state)
        connection.on_commit(segment.flush)
        segment.hooks = connection.run_on_commit  # replaced by Django on any rollback
        connection._instant_signals_segment = segment
    segment.add(change)


def close_segment(using: str) -> None:
    """Make the next change start a new segment (capture_broadcasts: changes made before the
    block must not merge into the ones made inside it)."""
    connections[using]._instant_signals_segment = None


def send(commands: Iterable[dict[str, Any]]) -> None:
    """Publish commands through ``/batch`` in chunks of BATCH_SIZE; never raises."""
    captured = capture_target.get()
    if captured is not None:
        captured.extend(command["data"] for command in commands)
        return
    size = int(conf.app_setting("BATCH_SIZE"))
    pending = iter(commands)
    while True:
        chunk, encoded = _encode(islice(pending, size))
        if not chunk:
            if encoded is None:
                return  # nothing left
            continue  # every command of this chunk was refused (and reported)
        try:
            _count("requests")
            replies = client.batch_publish_encoded(encoded)
        except Exception as exc:  # noqa: BLE001 - a broken broadcast must never break a save
            _failed(chunk, exc)
            continue
        failed = [(cmd, client.reply_error(reply)) for cmd, reply in zip(chunk, replies)]
        failed = [(cmd, err) for cmd, err in failed if err is not None]
        _count("published", len(chunk) - len(failed))
        for command, error in failed:
            _failed([command], error)


def _encode(commands: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Encode each command once; one that is not JSON or too large fails alone, here.
    Returns ``([], None)`` when ``commands`` was empty."""
    limit = int(conf.app_setting("MAX_PAYLOAD_BYTES"))
    kept: list[dict[str, Any]] = []
    encoded: list[str] = []
    seen = False
    for command in commands:
        seen = True
        try:
            text = json.dumps(command, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            _failed([command], ValueError(f"publication is not JSON: {exc}"))
            continue
        if len(text) > limit:  # ASCII only (json.dumps escapes the rest): characters are bytes
            _failed([command], ValueError(
                f"publication is over INSTANT_SIGNALS['MAX_PAYLOAD_BYTES'] ({limit})"))
            continue
        kept.append(command)
        encoded.append(text)
    return kept, (encoded if seen else None)


def _failed(commands: list[dict[str, Any]], error: Exception) -> None:
    _count("failed", len(commands))
    channels = sorted({command["channel"] for command in commands})
    logger.error(
        "instant_signals: %d publication(s) to %s not delivered: %s",
        len(commands), ", ".join(channels[:5]) + ("..." if len(channels) > 5 else ""), error,
    )
    try:
        broadcast_failed.send(
            sender=Change, publications=[command["data"] for command in commands], error=error
        )
    except Exception:  # noqa: BLE001 - a faulty receiver must not break the save either
        logger.exception("instant_signals: a broadcast_failed receiver raised")
