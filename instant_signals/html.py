"""HTML over the wire: model changes as Turbo Stream actions or htmx swaps, and page refreshes.

Fragments. ``@broadcast(..., template="board/_task.html")`` (or ``render=callable``) renders the
row's fragment after the transaction commits and publishes it into the declaration's channels as
an action on the page:

* ``created`` (or a row entering the channel): ``append`` (``insert="prepend"``) the fragment to
  the container (default ``"{model_name}_list"``, e.g. ``task_list``);
* ``updated``: ``replace`` the row's element (default id ``"{model_name}_{pk}"``, e.g. ``task_42``)
  with the fragment;
* ``deleted`` (or a row leaving the channel): ``remove`` the row's element; nothing is rendered.

The browser element ``<instant-stream channel="..." format="turbo|htmx">`` (static
``instant_signals/stream.js``) applies it with ``Turbo.renderStreamMessage`` or as an htmx
out-of-band swap. ``turbo_stream()`` and ``htmx_oob()`` give the same markup to views.

Security: the fragment is rendered from the declaration's view of that state only -- the same
``fields`` (or serializer output) its channels receive as JSON, plus ``pk``, ``event``, the model
label and the row's element id -- with no request, no user and no context processors. A template
cannot reach the instance, its relations or the user, so a channel's HTML can only hold what its
JSON events could. Render context::

    {"fields": {...}, "<model_name>": {...}, "object": {...},   # the view (JSON-safe values)
     "pk": 42, "event": "updated", "model": "board.task", "model_name": "task",
     "dom_id": "task_42"}

Refreshes. ``@broadcast(..., refresh=True)`` publishes a page-refresh signal instead (Turbo 8's
``refresh`` action; an ``instant:refresh`` DOM event for htmx). Debouncing has two layers:

* server, per transaction: one signal per channel per transaction however many rows changed;
* browser, across transactions and processes: ``<instant-stream>`` refreshes at most once per
  ``refresh-interval`` (1000 ms), ``refresh-wait`` (200 ms) after a quiet moment, and always once
  more after the last signal, so the last state is shown. A burst whose signals arrive over T
  seconds causes at most ceil((T - wait) / interval) + 1 refreshes: 3 for 200 saves in 2 s.

The tab whose own request made the change does not refresh: ``RequestIdMiddleware`` (or the
``capture_request_id`` view decorator) reads the request id Turbo 8 sends
(``X-Turbo-Request-Id``) or the one ``stream.js`` adds to htmx requests
(``X-Instant-Request-Id``); it is published with the signal, and the tab that sent it ignores it.
"""

from __future__ import annotations

import functools
import logging
import re
import string
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Union

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.template.loader import get_template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from . import envelope, reporting
from .envelope import CREATED, DELETED, UPDATED

if TYPE_CHECKING:
    from django.db import models

    from .declarations import Change, Declaration
    from .delivery.commands import Command

logger = logging.getLogger("instant_signals")

#: ``render(context) -> str``: the fragment of one row state (trusted HTML: escape the values).
Renderer = Callable[[dict[str, Any]], str]
#: ``target(context) -> str``: an element id computed from the render context.
Target = Union[str, Callable[[dict[str, Any]], str]]

INSERT_ACTIONS = ("append", "prepend")
REFRESH = "refresh"
DEFAULT_TARGET = "{model_name}_{pk}"
DEFAULT_CONTAINER = "{model_name}_list"

#: Request headers that carry a page's request id: Turbo 8's, then the one stream.js sets.
REQUEST_ID_HEADERS = ("HTTP_X_TURBO_REQUEST_ID", "HTTP_X_INSTANT_REQUEST_ID")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
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


# -- request ids ------------------------------------------------------------------------------

def current_request_id() -> str | None:
    """The request id of the request being handled (set by the middleware or decorator)."""
    return _request_id.get()


def clean_request_id(value: Any) -> str | None:
    """``value`` if it looks like a request id (at most 64 of ``A-Za-z0-9._:-``), else None."""
    if isinstance(value, str) and _REQUEST_ID_RE.match(value):
        return value
    return None


def request_id_of(request: Any) -> str | None:
    """The page's request id sent with ``request`` (Turbo's header, then stream.js's)."""
    meta = getattr(request, "META", {})
    for header in REQUEST_ID_HEADERS:
        found = clean_request_id(meta.get(header))
        if found:
            return found
    return None


@contextmanager
def request_id(value: str | None) -> Iterator[None]:
    """Publish the changes committed in this block with ``value`` as their request id (e.g. in a
    task that carries the id of the request that queued it)."""
    token = _request_id.set(clean_request_id(value))
    try:
        yield
    finally:
        _request_id.reset(token)


class RequestIdMiddleware:
    """Carries the page's request id (``X-Turbo-Request-Id`` / ``X-Instant-Request-Id``) into the
    refresh signals and fragments of the changes the request commits, so the tab that made a
    change does not refresh itself. Put it anywhere in ``MIDDLEWARE``; it also covers
    ``ATOMIC_REQUESTS`` (whose commit happens after the view returns)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        token = _request_id.set(request_id_of(request))
        try:
            return self.get_response(request)
        finally:
            _request_id.reset(token)

    async def __acall__(self, request: Any) -> Any:
        token = _request_id.set(request_id_of(request))
        try:
            return await self.get_response(request)
        finally:
            _request_id.reset(token)


def capture_request_id(view: Callable[..., Any]) -> Callable[..., Any]:
    """View decorator doing what ``RequestIdMiddleware`` does, for one view (not enough with
    ``ATOMIC_REQUESTS``: that commit happens outside the view; use the middleware there)."""
    if iscoroutinefunction(view):
        @functools.wraps(view)
        async def async_wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            with request_id(request_id_of(request)):
                return await view(request, *args, **kwargs)

        return async_wrapper

    @functools.wraps(view)
    def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
        with request_id(request_id_of(request)):
            return view(request, *args, **kwargs)

    return wrapper


# -- markup for views -------------------------------------------------------------------------

def turbo_stream(action: str, target: str, html: str = "") -> SafeString:
    """``<turbo-stream action=".." target=".."><template>html</template></turbo-stream>``;
    ``html`` is trusted (a rendered template); ``action`` and ``target`` are escaped."""
    body = f"<template>{html}</template>" if action not in ("remove", REFRESH) else ""
    return mark_safe(f'<turbo-stream action="{escape(action)}" target="{escape(target)}">'
                     f"{body}</turbo-stream>")


_FIRST_TAG = re.compile(r"^(\s*<[A-Za-z][A-Za-z0-9:-]*)")


def htmx_oob(action: str, target: str, html: str = "") -> SafeString:
    """The htmx 2 out-of-band swap of an action, for an htmx response (``hx-swap-oob``).

    ``append``/``prepend``: ``<div hx-swap-oob="beforeend:#target">html</div>`` (the div's
    content goes in); ``replace``: ``html`` with ``hx-swap-oob="outerHTML:#target"`` on its first
    element (``html`` must start with its root element); ``remove``: a ``delete`` swap."""
    selector = "#" + _css_id(target)
    if action in INSERT_ACTIONS:
        style = "beforeend" if action == "append" else "afterbegin"
        return mark_safe(f'<div hx-swap-oob="{escape(style)}:{escape(selector)}">{html}</div>')
    if action == "remove":
        return mark_safe(f'<div hx-swap-oob="delete:{escape(selector)}"></div>')
    if action == "replace":
        marked, found = _FIRST_TAG.subn(
            lambda m: f'{m.group(1)} hx-swap-oob="outerHTML:{escape(selector)}"', html, count=1)
        if not found:
            raise ValueError("htmx_oob(replace): the fragment must start with its root element")
        return mark_safe(marked)
    raise ValueError(f"unknown action {action!r}")


def _css_id(value: str) -> str:
    """``value`` as a CSS identifier (what ``CSS.escape`` does for ids made of the usual chars)."""
    out = []
    for i, ch in enumerate(value):
        if ch.isalnum() and not (i == 0 and ch.isdigit()) or ch in "-_" or ord(ch) > 127:
            out.append(ch)
        else:
            out.append(f"\\{ord(ch):x} ")
    return "".join(out)


def render_row(instance: models.Model, declaration: Declaration | None = None,
               event: str = UPDATED) -> SafeString:
    """The fragment of ``instance`` as its channels get it (for the page's first render), from
    the declaration's view only: the same template, the same context as the live updates."""
    from .declarations import pk_of
    from .registry import broadcast_registry
    from .serialization import field_view

    if declaration is None:
        found = [d for d in broadcast_registry.declarations(type(instance))
                 if d.html is not None and not d.html.refresh]
        if not found:
            raise LookupError(f"{type(instance)._meta.label} has no @broadcast(template=...) "
                              f"or render=...")
        declaration = found[0]
    options: HtmlOptions = declaration.html
    if declaration.serializer is not None:
        view = declaration.serializer(instance)
    else:
        view = field_view(instance.__dict__, declaration.attnames)
    context = _context(options, declaration.label, pk_of(instance), event, view)
    return mark_safe(_render(options, context, {}))


# -- publications -----------------------------------------------------------------------------

def _context(options: HtmlOptions, label: str, pk: Any, event: str,
             view: dict[str, Any] | None) -> dict[str, Any]:
    view = view or {}
    context = {"fields": view, "object": view, options.model_name: view, "pk": pk,
               "event": event, "model": label, "model_name": options.model_name}
    context["dom_id"] = _fill(options.target, context)
    return context


def _fill(target: Target, context: dict[str, Any]) -> str:
    if callable(target):
        value = target(context)
    else:
        values = {**context["fields"], "pk": context["pk"], "model_name": context["model_name"]}
        value = target.format_map(values)
    if not isinstance(value, str) or not value:
        raise ValueError(f"the target is {value!r}, not an element id")
    return value


def _render(options: HtmlOptions, context: dict[str, Any], templates: dict[str, Any]) -> str:
    if options.render is not None:
        return str(options.render(context))
    name = str(options.template)
    template = templates.get(name)
    if template is None:
        template = templates[name] = get_template(name)
    return str(template.render(context))


class Batch:
    """The HTML publications of one batch of changes (one transaction, after commit): a refresh
    signal goes once per channel, templates are looked up once, the request id is read once."""

    def __init__(self, site: str | None):
        self.site = site
        self.request_id = current_request_id()
        self.refreshed: set[str] = set()
        self.templates: dict[str, Any] = {}

    def commands(self, change: Change) -> Iterator[Command]:
        declaration = change.declaration
        options: HtmlOptions = declaration.html
        publications = declaration.publications(change.before, change.after)
        if options.refresh:
            for publication in publications:
                if publication.channel not in self.refreshed:
                    self.refreshed.add(publication.channel)
                    yield from self._publish(publication.channel, REFRESH, declaration.label,
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
            if made[event] is not None:
                data, event_id = made[event]  # type: ignore[misc]
                yield from self._publish(publication.channel, event, declaration.label, data,
                                         event_id)

    def _action(self, change: Change, event: str,
                view: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
        """(data, event id) of ``event`` of the change (rendered once for all its channels)."""
        declaration = change.declaration
        options: HtmlOptions = declaration.html
        if event == DELETED and view is None:
            # Left the channel: its element id comes from the view the channel saw before.
            view = change.before.fields if change.before is not None else None
        context = _context(options, declaration.label, change.pk, event, view)
        data: dict[str, Any] = {"model": declaration.label, "pk": change.pk, "event": event,
                                "version": change.version}
        if event == DELETED:
            data.update(action="remove", target=context["dom_id"])
        else:
            target = _fill(options.container, context) if event == CREATED else context["dom_id"]
            data.update(action=options.insert if event == CREATED else "replace",
                        target=target, html=_render(options, context, self.templates))
        if self.request_id:
            data["request_id"] = self.request_id
        return data, envelope.new_event_id()

    def _publish(self, channel: str, event: str, label: str, data: dict[str, Any],
                 event_id: str) -> Iterator[Command]:
        from .declarations import Change
        from .delivery.commands import Command

        if self.request_id and "request_id" not in data:
            data["request_id"] = self.request_id
        payload: dict[str, Any] = {"channel": channel}
        if self.site:
            payload["site"] = self.site
        payload.update(event_class=event, bucket=label, data=data, id=event_id)
        try:
            encoded = envelope.encode(payload)
        except ValueError as exc:
            reporting.failed([payload], exc, sender=Change)
            return
        yield Command(
            "publish", {"channel": channel, "data": payload, "idempotency_key": event_id},
            '{"publish":' + envelope.publish_command(channel, encoded, event_id) + "}")
