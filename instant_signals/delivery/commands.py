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
from ..formats.base import Batch


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
    """The commands of ``changes``, in order: what each declaration's format publishes, in the
    one envelope. A publication that is not JSON or too large is reported as failed here and
    left out; the others go on."""
    site = conf.site_name()
    batch = Batch()  # what the formats share over these changes (request tag, templates, ...)
    for change in changes:
        declaration = change.declaration
        for user_id, channel in declaration.revocations(change.before, change.after):
            params = {"channel": channel, "user": user_id}
            yield Command("unsubscribe", params, _dumps(params))
        publications = declaration.publications(change.before, change.after)
        if not publications:
            continue
        label = declaration.label
        for channel, event, data, event_id in declaration.format.messages(
                change, publications, batch):
            payload = envelope.model_envelope(channel, event_class=event, bucket=label,
                                              data=data, event_id=event_id, site=site)
            try:
                encoded = envelope.encode(payload)
            except ValueError as exc:
                reporting.failed([payload], exc, sender=Change)
                continue
            yield Command("publish",
                          {"channel": channel, "data": payload, "idempotency_key": event_id},
                          envelope.publish_command(channel, encoded, event_id))
