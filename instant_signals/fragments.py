"""HTML declarations below the registry: their options, render context and publications.

``@broadcast(..., template=/render=/refresh=True)`` is validated here (``build_options``, called
by ``declarations.declare``) and turned into publications after commit (``Batch``, used by
``delivery.commands``). The public side -- middleware, view helpers, ``render_row`` -- is
``instant_signals.html``; this module imports nothing above the envelope, so the declarations
and the delivery code can use it without a cycle.

The render context holds the declaration's view of the row state and nothing else::

    {"fields": {...}, "<model_name>": {...}, "object": {...},   # the view (JSON-safe values)
     "pk": 42, "event": "updated", "model": "board.task", "model_name": "task",
     "dom_id": "task_42"}

No request, no user, no context processors: a channel's HTML holds only what its JSON could.
"""

from __future__ import annotations

import hashlib
import logging
import re
import string
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Union

from django.template.loader import get_template

from . import envelope, reporting
from .envelope import CREATED, DELETED

if TYPE_CHECKING:
    from django.db import models

logger = logging.getLogger("instant_signals")

#: ``render(context) -> str``: the fragment of one row state (trusted HTML: escape the values).
Renderer = Callable[[dict[str, Any]], str]
#: ``target(context) -> str``: an element id computed from the render context.
Target = Union[str, Callable[[dict[str, Any]], str]]

INSERT_ACTIONS = ("append", "prepend")
REFRESH = "refresh"
DEFAULT_TARGET = "{model_name}_{pk}"
DEFAULT_CONTAINER = "{model_name}_list"

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: Shortest request id that gets a tag: shorter ones could be guessed (and replayed).
MIN_TAGGED_ID = 16
_TAG_PREFIX = b"instant_signals request tag\x00"
_request_id: ContextVar[str | None] = ContextVar("instant_signals_request_id", default=None)


# -- options ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class HtmlOptions:
    """What an HTML declaration publishes (built by ``declarations.declare``)."""

    model_name: str
    template: str | None = None
    render: Renderer | None = None
    target: Target = DEFAULT_TARGET
    container: Target = DEFAULT_CONTAINER
    insert: str = "append"
    refresh: bool = False


def build_options(model: type[models.Model], view_keys: tuple[str, ...] | None, *,
                  template: Any = None, render: Any = None, target: Any = None,
                  container: Any = None, insert: Any = None,
                  refresh: Any = False) -> HtmlOptions | None:
    """Validate the HTML options of a declaration; None when it publishes JSON events.

    ``view_keys``: the keys of the declaration's view (None with a serializer: checked when
    rendering). Raises ``ValueError`` with the message ``declare()`` reports."""
    fragment = template is not None or render is not None
    if not fragment and not refresh:
        given = [n for n, v in (("target", target), ("container", container),
                                ("insert", insert)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} need template= or render= (the fragment)")
        if refresh is not False and refresh is not None:
            raise ValueError(f"refresh must be True or False, not {refresh!r}")
        return None
    if not isinstance(refresh, bool):
        raise ValueError(f"refresh must be True or False, not {refresh!r}")
    if template is not None and render is not None:
        raise ValueError("give template= or render=, not both")
    if template is not None and (not isinstance(template, str) or not template):
        raise ValueError(f'template must be a template name such as "board/_task.html", '
                         f"not {template!r}")
    if render is not None and not callable(render):
        raise ValueError("render must be callable (context) -> HTML string")
    if refresh and fragment:
        raise ValueError("refresh=True publishes page refreshes, template=/render= publishes "
                         "fragments: one per declaration (declare the model twice, on two "
                         "channels, for both)")
    if refresh:
        if target is not None or container is not None or insert is not None:
            raise ValueError("target, container and insert are for fragments, not refresh=True")
        return HtmlOptions(str(model._meta.model_name), refresh=True)
    allowed = None if view_keys is None else {"pk", "model_name", *view_keys}
    checked = {name: _check_target(name, value, allowed)
               for name, value in (("target", target), ("container", container))
               if value is not None}
    if insert is not None and insert not in INSERT_ACTIONS:
        raise ValueError(f'insert must be "append" or "prepend", not {insert!r}')
    return HtmlOptions(str(model._meta.model_name), template=template, render=render,
                       target=checked.get("target", DEFAULT_TARGET),
                       container=checked.get("container", DEFAULT_CONTAINER),
                       insert=insert or "append")


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


# -- the request id of the changes being committed -------------------------------------------

def current_request_id() -> str | None:
    """The request id of the request being handled (set by the middleware or decorator)."""
    return _request_id.get()


def clean_request_id(value: Any) -> str | None:
    """``value`` if it looks like a request id (at most 64 of ``A-Za-z0-9._:-``), else None."""
    if isinstance(value, str) and _REQUEST_ID_RE.match(value):
        return value
    return None


def request_tag(value: str | None) -> str | None:
    """What refresh signals and fragments publish of the request id ``value`` (``request_tag``):
    the first 32 hex digits of SHA-256 over a fixed prefix and the id; None for no id or one
    shorter than ``MIN_TAGGED_ID`` characters.

    Every reader of a channel sees the tag, never the id. Sending the tag back as a request id
    makes the server publish the tag of the tag, which matches nothing: to make another tab skip
    a change as its own one needs that tab's id, a preimage of the tag. The tab that made the id
    up computes the same hash (``stream.js``, ``requestTag``) and recognizes its own changes."""
    if not value or len(value) < MIN_TAGGED_ID:
        return None
    return hashlib.sha256(_TAG_PREFIX + value.encode()).hexdigest()[:32]


@contextmanager
def request_id(value: str | None) -> Iterator[None]:
    """Publish the changes committed in this block with ``value`` as their request id (e.g. in a
    task that carries the id of the request that queued it)."""
    token = _request_id.set(clean_request_id(value))
    try:
        yield
    finally:
        _request_id.reset(token)


# -- publications -----------------------------------------------------------------------------

def context_of(options: HtmlOptions, label: str, pk: Any, event: str,
               view: dict[str, Any] | None) -> dict[str, Any]:
    """The render context of one row state: its view, pk, event, model and element id."""
    view = view or {}
    context = {"fields": view, "object": view, "pk": pk, "event": event, "model": label,
               "model_name": options.model_name}
    context.setdefault(options.model_name, view)  # {{ task.title }}; not for a model "Event"
    context["dom_id"] = fill_target(options.target, context)
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


def render_fragment(options: HtmlOptions, context: dict[str, Any],
                    templates: dict[str, Any]) -> str:
    """The fragment: ``render(context)``, or the template (looked up once per ``templates``)."""
    if options.render is not None:
        return str(options.render(context))
    name = str(options.template)
    template = templates.get(name)
    if template is None:
        template = templates[name] = get_template(name)
    return str(template.render(context))


class Batch:
    """The HTML publications of one batch of changes (one transaction, after commit): a refresh
    signal goes once per channel, templates are looked up once, the request id is read (and
    tagged) once.

    ``publications(change)`` yields ``(channel, envelope, encoded envelope, event id)``;
    ``delivery.commands`` makes them server API commands."""

    def __init__(self, site: str | None):
        self.site = site
        self.request_tag = request_tag(current_request_id())
        self.refreshed: set[str] = set()
        self.templates: dict[str, Any] = {}

    def publications(self, change: Any) -> Iterator[tuple[str, dict[str, Any], str, str]]:
        """The publications of a ``declarations.Change`` of an HTML declaration."""
        declaration = change.declaration
        options: HtmlOptions = declaration.html
        publications = declaration.publications(change.before, change.after)
        if options.refresh:
            for publication in publications:
                if publication.channel not in self.refreshed:
                    self.refreshed.add(publication.channel)
                    yield from self._publish(change, publication.channel, REFRESH,
                                             {"model": declaration.label, "event": REFRESH,
                                              "action": REFRESH}, envelope.new_event_id())
            return
        made: dict[str, tuple[dict[str, Any], str] | None] = {}  # event -> (data, event id)
        for publication in publications:
            event = publication.event
            if event not in made:
                try:
                    made[event] = self._action(change, event, publication.fields)
                except Exception as exc:  # noqa: BLE001 - one broken fragment must not stop others
                    made[event] = None
                    logger.exception("instant_signals: could not render the %s fragment of %s %r",
                                     event, declaration.label, change.pk)
                    reporting.failed(
                        [{"channel": p.channel, "event_class": event, "bucket": declaration.label,
                          "data": {"model": declaration.label, "pk": change.pk, "event": event}}
                         for p in publications if p.event == event], exc, sender=type(change))
            found = made[event]
            if found is not None:
                yield from self._publish(change, publication.channel, event, *found)

    def _action(self, change: Any, event: str,
                view: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
        """(data, event id) of ``event`` of the change (rendered once for all its channels)."""
        declaration = change.declaration
        options: HtmlOptions = declaration.html
        if event == DELETED and view is None:
            # Left the channel: its element id comes from the view the channel saw before.
            view = change.before.fields if change.before is not None else None
        context = context_of(options, declaration.label, change.pk, event, view)
        data: dict[str, Any] = {"model": declaration.label, "pk": change.pk, "event": event,
                                "version": change.version}
        if event == DELETED:
            data.update(action="remove", target=context["dom_id"])
        else:
            created = event == CREATED
            data.update(action=options.insert if created else "replace",
                        target=fill_target(options.container, context) if created
                        else context["dom_id"],
                        html=render_fragment(options, context, self.templates))
        return data, envelope.new_event_id()

    def _publish(self, change: Any, channel: str, event: str, data: dict[str, Any],
                 event_id: str) -> Iterator[tuple[str, dict[str, Any], str, str]]:
        if self.request_tag:
            data["request_tag"] = self.request_tag
        label = change.declaration.label
        payload: dict[str, Any] = {"channel": channel}
        if self.site:
            payload["site"] = self.site
        payload.update(event_class=event, bucket=label, data=data, id=event_id)
        try:
            encoded = envelope.encode(payload)
        except ValueError as exc:
            reporting.failed([payload], exc, sender=type(change))
            return
        yield channel, payload, encoded, event_id
