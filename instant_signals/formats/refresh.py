"""Page refresh signals: ``@broadcast(..., refresh=True)`` tells the pages showing a channel to
render again (Turbo 8's ``refresh`` action; an ``instant:refresh`` DOM event for htmx).

One signal per channel per batch (a transaction's changes), however many rows changed; the
browser side (``<instant-stream>``) debounces across transactions. ``data``::

    {"model": "board.task", "event": "refresh", "action": "refresh", "request_tag": "..."}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

from .. import envelope
from .base import Batch, Changed, Format, Message, Publication, TypeNames

if TYPE_CHECKING:
    from django.db import models

    from ..options import BroadcastOptions

__all__ = ["REFRESH", "RefreshSignals"]


class RefreshSignals(Format):
    """No row in the message: the page asks its own view again."""

    name = "refresh"
    carries = "refresh signals"
    chosen_by = "refresh=True"
    options = ("refresh",)
    skip_unchanged = True  # an unchanged view changes nothing on the page
    historical_models = False
    typescript_prelude = """\
/** An event of a refresh declaration (refresh=True): the page should render again. */
export interface RefreshSignal<L extends string> {
  model: L;
  event: "refresh";
  action: "refresh";
  request_tag?: string;
}
"""

    def claims(self, options: BroadcastOptions) -> bool:
        return options.refresh is not False and options.refresh is not None

    def configure(self, model: type[models.Model], options: BroadcastOptions,
                  view_keys: tuple[str, ...] | None) -> RefreshSignals:
        if not isinstance(options.refresh, bool):
            raise ValueError(f"refresh must be True or False, not {options.refresh!r}")
        return self

    def messages(self, change: Changed, publications: Sequence[Publication],
                 batch: Batch) -> Iterator[Message]:
        refreshed: set[str] = batch.scratch.setdefault("refresh.channels", set())
        for publication in publications:
            if publication.channel not in refreshed:
                refreshed.add(publication.channel)
                data = {"model": change.label, "event": "refresh", "action": "refresh"}
                if batch.request_tag:
                    data["request_tag"] = batch.request_tag
                yield Message(publication.channel, "refresh", data, envelope.new_event_id())

    def typescript(self, names: TypeNames) -> tuple[list[str], list[str]]:
        return [], [f"RefreshSignal<{names.label_type}>"]

    def describe(self) -> str:
        return f"{self.carries} (HTML pages reload the row)"


REFRESH = RefreshSignals()
