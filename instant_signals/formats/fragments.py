"""HTML fragments (Turbo Streams / htmx swaps): the row's fragment, rendered from its view.

``@broadcast(..., template="board/_task.html")`` (or ``render=callable``) chooses this format.
Each event of a row renders its fragment once for all its channels, after commit, as an action
on the page: ``append``/``prepend`` (``insert=``) into the container for ``created``, ``replace``
the row's element for ``updated``, ``remove`` it for ``deleted`` (nothing rendered). ``data``::

    {"model": "board.task", "pk": 42, "event": "updated", "version": 1732870000123456,
     "action": "replace", "target": "task_42", "html": "<li ...>", "request_tag": "..."}

The render context holds the declaration's view of the row state and nothing else::

    {"fields": {...}, "<model_name>": {...}, "object": {...},   # the view (JSON-safe values)
     "pk": 42, "event": "updated", "model": "board.task", "model_name": "task",
     "dom_id": "task_42"}

No request, no user, no context processors: a channel's HTML holds only what its JSON could.
The public side -- middleware, view helpers, ``render_row`` -- is ``instant_signals.html``.
"""

from __future__ import annotations

import logging
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from django.template.loader import get_template

from .. import envelope, reporting
from ..envelope import CREATED, DELETED
from ..options import Renderer, Target
from .base import Batch, Changed, Format, Message, Publication, TypeNames

if TYPE_CHECKING:
    from django.db import models

    from ..options import BroadcastOptions

__all__ = ["FRAGMENTS", "Fragments", "context_of", "fill_target", "render_fragment"]

logger = logging.getLogger("instant_signals")

INSERT_ACTIONS = ("append", "prepend")
DEFAULT_TARGET = "{model_name}_{pk}"
DEFAULT_CONTAINER = "{model_name}_list"


@dataclass(frozen=True)
class Fragments(Format):
    """The fragment format of one declaration: how its rows render and where they go."""

    model_name: str = ""
    template: str | None = None
    render: Renderer | None = None
    target: Target = DEFAULT_TARGET
    container: Target = DEFAULT_CONTAINER
    insert: str = "append"

    name = "fragments"
    carries = "HTML fragments"
    chosen_by = "template= or render="
    options = ("template", "render", "target", "container", "insert")
    skip_unchanged = True  # an unchanged view renders the same fragment
    historical_models = False  # rendering runs the project's templates and callables
    typescript_prelude = """\
/** An event of an HTML declaration (template= / render=): a rendered fragment and its place. */
export interface Fragment<L extends string, P> {
  model: L;
  pk: P;
  event: EventName;
  version: number;
  action: "append" | "prepend" | "replace" | "remove";
  /** The element id: the container for append/prepend, the row's element otherwise. */
  target: string;
  html?: string;
  request_tag?: string;
}
"""

    # -- options ----------------------------------------------------------------------------
    def claims(self, options: BroadcastOptions) -> bool:
        return options.template is not None or options.render is not None

    def configure(self, model: type[models.Model], options: BroadcastOptions,
                  view_keys: tuple[str, ...] | None) -> Fragments:
        template, render = options.template, options.render
        if template is None and render is None:
            raise ValueError('format="fragments" needs template= or render= (the fragment)')
        if template is not None and render is not None:
            raise ValueError("give template= or render=, not both")
        if template is not None and (not isinstance(template, str) or not template):
            raise ValueError(f'template must be a template name such as "board/_task.html", '
                             f"not {template!r}")
        if render is not None and not callable(render):
            raise ValueError("render must be callable (context) -> HTML string")
        allowed = None if view_keys is None else {"pk", "model_name", *view_keys}
        checked = {name: _check_target(name, value, allowed)
                   for name, value in (("target", options.target),
                                       ("container", options.container))
                   if value is not None}
        insert = options.insert
        if insert is not None and insert not in INSERT_ACTIONS:
            raise ValueError(f'insert must be "append" or "prepend", not {insert!r}')
        return Fragments(str(model._meta.model_name), template=template, render=render,
                         target=checked.get("target", DEFAULT_TARGET),
                         container=checked.get("container", DEFAULT_CONTAINER),
                         insert=insert or "append")

    # -- publishing -------------------------------------------------------------------------
    def messages(self, change: Changed, publications: Sequence[Publication],
                 batch: Batch) -> Iterator[Message]:
        """One action per event of the change, rendered once for all its channels; a fragment
        that fails to render is reported (``broadcast_failed``) and the others go on."""
        templates: dict[str, Any] = batch.scratch.setdefault("fragments.templates", {})
        made: dict[str, tuple[dict[str, Any], str] | None] = {}  # event -> (data, event id)
        for publication in publications:
            event = publication.event
            if event not in made:
                try:
                    made[event] = self._action(change, event, publication.fields, templates)
                except Exception as exc:  # noqa: BLE001 - one broken fragment must not stop others
                    made[event] = None
                    logger.exception("instant_signals: could not render the %s fragment of %s %r",
                                     event, change.label, change.pk)
                    reporting.failed(
                        [envelope.model_envelope(
                            p.channel, event_class=event, bucket=change.label,
                            data={"model": change.label, "pk": change.pk, "event": event})
                         for p in publications if p.event == event], exc, sender=type(change))
            found = made[event]
            if found is not None:
                data, event_id = found
                if batch.request_tag:
                    data["request_tag"] = batch.request_tag
                yield Message(publication.channel, event, data, event_id)

    def _action(self, change: Changed, event: str, view: dict[str, Any] | None,
                templates: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """(data, event id) of ``event`` of the change (rendered once for all its channels)."""
        if event == DELETED and view is None:
            # Left the channel: its element id comes from the view the channel saw before.
            view = change.before_view
        context = context_of(self, change.label, change.pk, event, view)
        data: dict[str, Any] = {"model": change.label, "pk": change.pk, "event": event,
                                "version": change.version}
        if event == DELETED:
            data.update(action="remove", target=context["dom_id"])
        else:
            created = event == CREATED
            data.update(action=self.insert if created else "replace",
                        target=fill_target(self.container, context) if created
                        else context["dom_id"],
                        html=render_fragment(self, context, templates))
        return data, envelope.new_event_id()

    def typescript(self, names: TypeNames) -> tuple[list[str], list[str]]:
        return [], [f"Fragment<{names.label_type}, {names.pk_type}>"]

    def describe(self) -> str:
        if self.template:
            return f"{self.carries} (template {self.template!r})"
        render = self.render
        name = getattr(render, "__qualname__", None)
        module = getattr(render, "__module__", None)
        shown = repr(render) if name is None else f"{module}.{name}" if module else str(name)
        return f"{self.carries} (render {shown})"


FRAGMENTS = Fragments()


def _check_target(option: str, value: Any, allowed: set[str] | None) -> Target:
    if callable(value):
        return value  # type: ignore[no-any-return]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'{option} must be an element id such as "task_{{pk}}" or a callable '
                         f"(context) -> id, not {value!r}")
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise ValueError(f"{option} {value!r}: {exc}") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if not name or spec or conversion:
            raise ValueError(f"{option} {value!r}: use plain {{field}} placeholders")
        if allowed is not None and name not in allowed:
            keys = ", ".join(sorted(allowed - {"pk", "model_name"}))
            raise ValueError(
                f"{option} {value!r}: {{{name}}} is not in the declaration's view; use "
                f"{{pk}}, {{model_name}} or one of {keys} (a target is published: it may "
                f"only hold what the channel sees)")
    return value


# -- rendering ----------------------------------------------------------------------------------

def context_of(fragments: Fragments, label: str, pk: Any, event: str,
               view: dict[str, Any] | None) -> dict[str, Any]:
    """The render context of one row state: its view, pk, event, model and element id."""
    view = view or {}
    context = {"fields": view, "object": view, "pk": pk, "event": event, "model": label,
               "model_name": fragments.model_name}
    context.setdefault(fragments.model_name, view)  # {{ task.title }}; not for a model "Event"
    context["dom_id"] = fill_target(fragments.target, context)
    return context


def fill_target(target: Target, context: dict[str, Any]) -> str:
    """An element id from a ``"task_{pk}"`` pattern or a callable, given a render context."""
    if callable(target):
        value = target(context)
    else:
        values = {**context["fields"], "pk": context["pk"], "model_name": context["model_name"]}
        value = target.format_map(values)
    if not isinstance(value, str) or not value:
        raise ValueError(f"the target is {value!r}, not an element id")
    return value


def render_fragment(fragments: Fragments, context: dict[str, Any],
                    templates: dict[str, Any]) -> str:
    """The fragment: ``render(context)``, or the template (looked up once per ``templates``)."""
    if fragments.render is not None:
        return str(fragments.render(context))
    name = str(fragments.template)
    template = templates.get(name)
    if template is None:
        template = templates[name] = get_template(name)
    return str(template.render(context))
