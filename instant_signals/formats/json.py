"""JSON events, the default format: each channel gets its view of the row, and what changed.

``data`` of an envelope::

    {"model": "todo.task", "pk": 42, "event": "updated", "version": 1732870000123456,
     "fields": {...}, "changed": {...}}

``fields`` is left out for a row that left the channel (pk only), ``changed`` for anything but
``updated``.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from .. import envelope
from ..envelope import CREATED, DELETED, UPDATED
from .base import Batch, Changed, Format, Message, Publication, TypeNames

__all__ = ["JSON", "JsonEvents"]


class JsonEvents(Format):
    """The channel's view of the row and the previous values of what changed (``Created``,
    ``Updated``, ``Deleted`` in TypeScript)."""

    name = "json"
    carries = "JSON events"
    types_per_view = True
    typescript_prelude = """\
/** A row entered the channel (or was created). */
export interface Created<L extends string, P, F> {
  model: L;
  pk: P;
  event: "created";
  /** Per-row, increasing: an event whose version is not above the row's last one is stale. */
  version: number;
  fields: F;
}

/** A row changed; `changed` holds the previous values of the fields that changed. */
export interface Updated<L extends string, P, F> {
  model: L;
  pk: P;
  event: "updated";
  version: number;
  fields: F;
  changed: Partial<F>;
}

/** A row was deleted (with its last `fields`), or left the channel (without `fields`). */
export interface Deleted<L extends string, P, F> {
  model: L;
  pk: P;
  event: "deleted";
  version: number;
  fields?: F;
}
"""

    def messages(self, change: Changed, publications: Sequence[Publication],
                 batch: Batch) -> Iterator[Message]:
        ids: dict[str, str] = {}  # one event id per event, shared by its channels
        label, pk, version = change.label, change.pk, change.version
        for publication in publications:
            event = publication.event
            event_id = ids.get(event)
            if event_id is None:
                event_id = ids[event] = envelope.new_event_id()
            data: dict[str, Any] = {"model": label, "pk": pk, "event": event,
                                    "version": version}
            if publication.fields is not None:
                data["fields"] = publication.fields
            if publication.changed is not None:
                data["changed"] = publication.changed
            yield Message(publication.channel, event, data, event_id)

    def typescript(self, names: TypeNames) -> tuple[list[str], list[str]]:
        body = names.fields_type
        declarations = [
            f"/** {names.label} as {names.shown} show it. */",
            f"export interface {names.fields_name} {body}\n" if body.startswith("{")
            else f"export type {names.fields_name} = {body};\n"]
        generics = f"<{names.label_type}, {names.pk_type}, {names.fields_name}>"
        members = [f"{kind}{generics}" for event, kind in
                   ((CREATED, "Created"), (UPDATED, "Updated"), (DELETED, "Deleted"))
                   if event in names.events]
        return declarations, members


JSON = JsonEvents()
