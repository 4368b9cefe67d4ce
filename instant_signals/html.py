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
  ``refresh-interval`` (1000 ms), ``refresh-wait`` (200 ms) after a quiet moment, never while
  the previous refresh is loading, and always once more after the last signal, so the last state
  is shown. A burst whose signals arrive over T
  seconds causes at most ceil((T - wait) / interval) + 1 refreshes: 3 for 200 saves in 2 s.

The tab whose own request made the change does not refresh: ``RequestIdMiddleware`` (or the
``capture_request_id`` view decorator) reads the request id Turbo 8 sends
(``X-Turbo-Request-Id``) or the one ``stream.js`` adds to htmx requests
(``X-Instant-Request-Id``). The signal carries its ``request_tag`` (a SHA-256 of the id, see
``request_tag``), never the id: only the tab that made the id up can match the tag, and an
observer who sends a tag back as a request id gets a different tag published -- it cannot make
another user's tab skip a change.

What is published lives in the output formats ``formats/fragments.py`` and ``formats/refresh.py``
(below the registry); this module is the public side: the middleware, the view decorator, markup
helpers for views and ``render_row`` for a page's first render.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .declarations import pk_of
from .envelope import UPDATED
from .formats.fragments import INSERT_ACTIONS, Fragments, context_of, render_fragment
from .formats.request_ids import clean_request_id, current_request_id, request_id, request_tag
from .registry import broadcast_registry
from .serialization import field_view

if TYPE_CHECKING:
    from django.db import models

    from .declarations import Declaration

__all__ = [
    "REQUEST_ID_HEADERS", "Fragments", "RequestIdMiddleware", "capture_request_id",
    "clean_request_id", "current_request_id", "htmx_oob", "render_row", "request_id",
    "request_id_of", "request_tag", "turbo_stream",
]

#: Request headers that carry a page's request id: Turbo 8's, then the one stream.js sets.
REQUEST_ID_HEADERS = ("HTTP_X_TURBO_REQUEST_ID", "HTTP_X_INSTANT_REQUEST_ID")


# -- request ids ------------------------------------------------------------------------------

def request_id_of(request: Any) -> str | None:
    """The page's request id sent with ``request`` (Turbo's header, then stream.js's)."""
    meta = getattr(request, "META", {})
    for header in REQUEST_ID_HEADERS:
        found = clean_request_id(meta.get(header))
        if found:
            return found
    return None


class RequestIdMiddleware:
    """Carries the page's request id (``X-Turbo-Request-Id`` / ``X-Instant-Request-Id``) into the
    refresh signals and fragments of the changes the request commits, as its ``request_tag``, so
    the tab that made a change does not refresh itself. Put it anywhere in ``MIDDLEWARE``; it also covers
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
        with request_id(request_id_of(request)):
            return self.get_response(request)

    async def __acall__(self, request: Any) -> Any:
        with request_id(request_id_of(request)):
            return await self.get_response(request)


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
    body = f"<template>{html}</template>" if action not in ("remove", "refresh") else ""
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
    if declaration is None:
        found = [d for d in broadcast_registry.declarations(type(instance))
                 if isinstance(d.format, Fragments)]
        if not found:
            raise LookupError(f"{type(instance)._meta.label} has no @broadcast(template=...) "
                              f"or render=...")
        declaration = found[0]
    fragments = declaration.format
    if not isinstance(fragments, Fragments):
        raise LookupError(f"the declaration of {declaration.label} on "
                          f"{', '.join(t.template for t in declaration.templates)} publishes "
                          f"{fragments.carries}, not HTML fragments")
    if declaration.serializer is not None:
        view = declaration.serializer(instance)
    else:
        view = field_view(instance.__dict__, declaration.attnames)
    context = context_of(fragments, declaration.label, pk_of(instance), event, view)
    return mark_safe(render_fragment(fragments, context, {}))
