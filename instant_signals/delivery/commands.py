"""Server API commands for changes: publications per channel, and unsubscribes of lost readers.

Shared by both delivery modes: after commit they go to ``/batch``; in durable mode they are
stored as outbox rows. An unsubscribe comes before the publications of its change, so a reader
who lost a row's channel is gone before the new state reaches it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from .. import conf, envelope, reporting
from ..declarations import Change
from ..fragments import Batch


@dataclass(frozen=True, slots=True)
class Command:
    method: str  # "publish" or "unsubscribe"
    params: dict[str, Any]  # the command's parameters (what the outbox stores)
    text: str  # ``{"<method>": <params>}`` encoded once, for /batch

    @property
    def publication(self) -> dict[str, Any] | None:
        """The envelope, for publish commands (what broadcast_failed reports)."""
        return self.params.get("data") if self.method == "publish" else None


def commands_for(changes: Iterable[Change]) -> Iterator[Command]:
    """The commands of ``changes``, in order. A publication that is not JSON or too large is
    reported as failed here and left out; the others go on."""
    site = conf.site_name()
    html_batch: Batch | None = None  # fragments and refresh signals (instant_signals.fragments)
    for change in changes:
        declaration = change.declaration
        for user_id, channel in declaration.revocations(change.before, change.after):
            params = {"channel": channel, "user": user_id}
            yield Command("unsubscribe", params,
                          '{"unsubscribe":' + json.dumps(params, separators=(",", ":")) + "}")
        if declaration.html is not None:
            if html_batch is None:
                html_batch = Batch(site)
            for name, payload, encoded, key in html_batch.publications(change):
                yield Command(
                    "publish", {"channel": name, "data": payload, "idempotency_key": key},
                    '{"publish":' + envelope.publish_command(name, encoded, key) + "}")
            continue
        ids: dict[str, str] = {}
        for publication in declaration.publications(change.before, change.after):
            event_id = ids.get(publication.event)
            if event_id is None:
                event_id = ids[publication.event] = envelope.new_event_id()
            payload = envelope.model_event(
                publication.channel, label=declaration.label, pk=change.pk,
                event=publication.event, version=change.version, event_id=event_id,
                fields=publication.fields, changed=publication.changed, site=site)
            try:
                encoded = envelope.encode(payload)
            except ValueError as exc:
                reporting.failed([payload], exc, sender=Change)
                continue
            yield Command(
                "publish",
                {"channel": publication.channel, "data": payload, "idempotency_key": event_id},
                '{"publish":' + envelope.publish_command(publication.channel, encoded, event_id)
                + "}")
