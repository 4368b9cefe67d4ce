"""Server API commands for changes: publications per channel, and unsubscribes of lost readers.

Shared by every delivery mode: after commit they go to ``/batch``; in durable mode they are
stored as outbox rows. An unsubscribe comes before the publications of its change, so a reader
who lost a row's channel is gone before the new state reaches it.

The one place that builds and reads the ``{"<method>": <params>}`` wrapper of ``/batch``
commands: ``wrap()`` around parameters encoded once, ``publication_of()`` to read one back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from .. import conf, envelope, reporting
from ..declarations import Change
from ..fragments import Batch


_dumps = json.JSONEncoder(separators=(",", ":")).encode
_PREFIXES = {"publish": '{"publish":', "unsubscribe": '{"unsubscribe":'}


def wrap(method: str, params_text: str) -> str:
    """``{"<method>":<params>}``, the form ``/batch`` takes, around encoded parameters."""
    prefix = _PREFIXES.get(method) or "{" + _dumps(method) + ":"
    return prefix + params_text + "}"


def publication_of(method: str, params_text: str) -> Any:
    """What ``broadcast_failed`` reports for a stored command: a publish command's envelope,
    another command's parameters, or the text itself when it is not JSON."""
    try:
        params = json.loads(params_text)
    except ValueError:
        return params_text
    if isinstance(params, dict) and method == "publish":
        return params.get("data", params)
    return params


@dataclass(frozen=True, slots=True)
class Command:
    method: str  # "publish" or "unsubscribe"
    params: dict[str, Any]  # the command's parameters
    params_text: str  # ``params`` encoded once (what the outbox stores)

    @property
    def text(self) -> str:
        """The command as ``/batch`` takes it."""
        return wrap(self.method, self.params_text)

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
            yield Command("unsubscribe", params, _dumps(params))
        if declaration.html is not None:
            if html_batch is None:
                html_batch = Batch(site)
            for name, payload, encoded, key in html_batch.publications(change):
                yield Command(
                    "publish", {"channel": name, "data": payload, "idempotency_key": key},
                    envelope.publish_command(name, encoded, key))
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
                envelope.publish_command(publication.channel, encoded, event_id))
