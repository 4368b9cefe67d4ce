"""The endpoints: django-instant's login/, logout/, get_token/, subscribe/, and collection/.

Every answer is JSON and ``Cache-Control: no-store``; bad input gets a 4xx with
``{"error": code, "detail": text}``, never a 500.

CSRF: POST views are CSRF-protected (nothing is exempted); a failed check answers a JSON 403
instead of Django's HTML page. Browsers read ``csrf_token`` from ``get_token/`` (GET) and send it
back in the ``X-CSRFToken`` header.
"""

from __future__ import annotations

import json
from functools import wraps
from typing import Any, Callable

from django.contrib.auth import authenticate, login, logout
from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.request import RawPostDataException
from django.middleware.csrf import CsrfViewMiddleware, get_token
from django.utils.cache import add_never_cache_headers
from django.utils.decorators import decorator_from_middleware
from django.views.decorators.csrf import csrf_exempt

from . import conf, tokens
from .access import can_read, readable_channels
from .channels import InvalidChannel, is_private, validate_channel
from .declarations import Declaration
from .exceptions import CentrifugoError
from .registry import broadcast_registry
from .streams import stream_position

View = Callable[..., HttpResponse]


def error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


class _JsonCsrfMiddleware(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> JsonResponse:
        return error(403, "csrf_failed", f"CSRF check failed: {reason}")


def _json_view(methods: tuple[str, ...]) -> Callable[[View], View]:
    """Allow only ``methods``, check CSRF with a JSON failure, never cache, never a 500."""

    def decorate(view: View) -> View:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = error(405, "method_not_allowed", f"use {' or '.join(methods)}")
                response["Allow"] = ", ".join(methods)
                return response
            return view(request, *args, **kwargs)

        # The project's CsrfViewMiddleware skips this view; our own copy runs the same check and
        # answers in JSON. So CSRF is enforced exactly as Django would, only the failure differs.
        protected = decorator_from_middleware(_JsonCsrfMiddleware)(checked)

        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            # Django raises these while reading the body (here or in the CSRF check, which reads
            # request.POST); unhandled they would become an HTML 400.
            try:
                response = protected(request, *args, **kwargs)
            except RequestDataTooBig:
                response = error(413, "too_large", "the request body is too large")
            except TooManyFieldsSent:
                response = error(400, "bad_request", "too many form fields; send a JSON object")
            except ImproperlyConfigured as exc:  # e.g. CENTRIFUGO_HMAC_KEY missing
                response = error(503, "not_configured", str(exc))
            add_never_cache_headers(response)  # tokens and CSRF values are per user
            return response  # type: ignore[return-value]  # JSON responses, all of them

        return csrf_exempt(guarded)

    return decorate


class BadRequest(Exception):
    pass


def _json_object(request: HttpRequest) -> dict[str, Any]:
    try:
        raw = request.body
    except RawPostDataException:  # a form body already parsed (by the CSRF check)
        raise BadRequest("send a JSON object with Content-Type: application/json") from None
    if not raw:
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _string_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f'"{name}" is required and must be a non-empty string')
    if "\x00" in value:  # PostgreSQL cannot store NUL characters: refuse before any query
        raise BadRequest(f'"{name}" must not contain NUL characters')
    return value


def token_payload(request: HttpRequest) -> dict[str, Any]:
    """What get_token/ and login/ answer: the connection token and the user's channels."""
    user = request.user
    return {
        "csrf_token": get_token(request),
        "ws_token": tokens.connection_token(user),
        "ws_url": conf.ws_url(),
        "channels": [
            {"name": name, "level": level, "token": tokens.subscription_token(user, name)}
            for name, level in readable_channels(user)
        ],
    }


@_json_view(("POST",))
def login_view(request: HttpRequest) -> HttpResponse:
    if not conf.app_setting("LOGIN_VIEW"):
        return error(404, "login_disabled", "this site logs in through its own pages; "
                                            "get_token/ follows the session")
    try:
        body = _json_object(request)
        username = _string_field(body, "username")
        password = _string_field(body, "password")
    except BadRequest as exc:
        return error(400, "bad_request", str(exc))
    user = authenticate(request, username=username, password=password)
    if user is None:
        return error(401, "invalid_credentials", "wrong username or password")
    login(request, user)
    return JsonResponse(token_payload(request))


@_json_view(("POST",))
def logout_view(request: HttpRequest) -> HttpResponse:
    # Django's user_logged_out signal ends the user's websocket connections (access.py), as it
    # does for every other logout of the site: one disconnect, not two.
    logout(request)
    return JsonResponse({"ok": True})


@_json_view(("GET", "POST"))
def get_token_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse(token_payload(request))


@_json_view(("POST",))
def subscribe_view(request: HttpRequest) -> HttpResponse:
    """``{"channel": name}`` → ``{"token": ...}`` (centrifuge-js getToken), or 403.

    django-instant's list form ``{"channels": [names]}`` → ``{"channels": [{"channel", "token"}]}``
    for the listed channels the user may read (the others are left out), at most
    ``SUBSCRIBE_MAX_CHANNELS`` names. Unknown channels and channels the user may not read both
    get 403, so the answer does not tell which private channels exist.
    """
    try:
        body = _json_object(request)
        if "channels" in body and "channel" not in body:
            names = body["channels"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise BadRequest('"channels" must be a list of channel names')
            limit = int(conf.app_setting("SUBSCRIBE_MAX_CHANNELS"))
            if len(names) > limit:
                raise BadRequest(f'"channels" lists {len(names)} names; at most {limit} per '
                                 f"request (INSTANT_SIGNALS['SUBSCRIBE_MAX_CHANNELS'])")
            return _subscribe_many(request, names)
        name = _string_field(body, "channel")
        validate_channel(name)
    except (BadRequest, ValueError) as exc:
        return error(400, "bad_request", str(exc))
    if not can_read(request.user, name):
        return error(403, "channel_not_allowed", f"you may not subscribe to {name!r}")
    return JsonResponse({"token": tokens.subscription_token(request.user, name)})


def _subscribe_many(request: HttpRequest, names: list[str]) -> JsonResponse:
    granted = []
    for name in dict.fromkeys(names):  # each once, in the order asked
        try:
            validate_channel(name)
        except ValueError:
            continue
        if can_read(request.user, name):
            granted.append({"channel": name, "token": tokens.subscription_token(request.user, name)})
    return JsonResponse({"channels": granted})


@_json_view(("GET",))
def collection_view(request: HttpRequest) -> HttpResponse:
    """``?channel=<name>`` → the rows visible in a declared channel, with the stream position
    read before them: ``{"channel", "offset", "epoch", "rows": [{"model", "pk", "fields"}],
    "truncated": bool}``.

    A client subscribes ``since`` that position and applies the events to the rows: an event
    committed between the load and the subscription is neither missed nor lost. At most
    ``COLLECTION_MAX_ROWS`` rows per declaration (a ``queryset`` hook orders and filters them).
    Each ``model`` parameter (the browser module's ``model`` option) must name a model that
    publishes into the channel.

    The order of the questions reveals nothing about private channels: for a ``$`` name, whether
    the user may read it comes first, so a private channel she may not read and one that does
    not exist get the same 403. A public name is never secret (Centrifugo serves it without a
    token): whether a declaration makes it comes first, so a typo gets 404 ``not_a_collection``.
    """
    name = request.GET.get("channel", "")
    try:
        validate_channel(name)
    except ValueError as exc:
        return error(400, "bad_request", f'"channel": {exc}')
    if is_private(name):
        if not can_read(request.user, name):
            return _refused(name)
        try:
            declarations = _collection_declarations(name)
        except InvalidChannel:  # not reached: may_read refuses such a name; for safety
            declarations = []
        if not declarations:  # readable through a Channel row: publish() only
            return _not_a_collection(name)
    else:
        try:
            declarations = _collection_declarations(name)
        except InvalidChannel as exc:
            return error(400, "invalid_channel", f"{name[:80]!r}: {exc}")
        if not declarations:
            return _not_a_collection(name)
        if not can_read(request.user, name):  # a declared public name is readable: for safety
            return _refused(name)
    wrong_model = _check_models(request.GET.getlist("model"), name, declarations)
    if wrong_model is not None:
        return wrong_model
    try:
        position = stream_position(name)  # before the rows: a lower bound
    except CentrifugoError as exc:
        return error(503, "centrifugo_unavailable", f"cannot read the stream position: {exc}")
    limit = int(conf.app_setting("COLLECTION_MAX_ROWS"))
    rows: list[dict[str, Any]] = []
    truncated = False
    for declaration in declarations:
        found, more = declaration.rows(request, name, limit)
        rows += [{"model": declaration.label, "pk": pk, "fields": fields} for pk, fields in found]
        truncated |= more
    return JsonResponse({"channel": name, **position, "rows": rows, "truncated": truncated})


def _refused(name: str) -> JsonResponse:
    # One answer for "may not read" and, for a private name, "does not exist": the detail
    # names both causes, so a developer knows where to look and a visitor learns nothing.
    return error(403, "channel_not_allowed",
                 f"you may not read {name!r}, or no @broadcast declaration makes it")


def _not_a_collection(name: str) -> JsonResponse:
    return error(404, "not_a_collection", f"{name[:80]!r} is not a channel declared with "
                                          f"@broadcast: no model publishes its rows there")


def _check_models(wanted: list[str], name: str,
                  declarations: list[Declaration]) -> JsonResponse | None:
    """A 400 naming the models that publish into ``name`` when one of ``wanted`` does not.

    Asked only once the user may read the channel: the labels are what its events carry."""
    publishing = list(dict.fromkeys(d.label for d in declarations))
    for label in wanted:
        if label not in publishing:
            return JsonResponse({
                "error": "model_not_in_channel",
                "detail": f"model {label[:80]!r} does not publish into {name[:80]!r}; "
                          f"the models that do: {', '.join(publishing)}",
                "models": publishing,
            }, status=400)
    return None


def _collection_declarations(name: str) -> list[Declaration]:
    """The declarations whose templates make ``name``; ``InvalidChannel`` when only templates
    whose placeholder values do not fit their fields match it."""
    found, invalid = [], None
    for declaration in broadcast_registry.declarations():
        try:
            if declaration.template_of(name):
                found.append(declaration)
        except InvalidChannel as exc:
            invalid = invalid or exc
    if not found and invalid is not None:
        raise invalid
    return found
