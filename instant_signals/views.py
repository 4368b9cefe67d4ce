"""Token endpoints, with django-instant's paths: login/, logout/, get_token/, subscribe/.

Every answer is JSON; bad input gets a 4xx with ``{"error": code, "detail": text}``.

CSRF: POST views are CSRF-protected (nothing is exempted); a failed check answers a JSON 403
instead of Django's HTML page. Browsers read ``csrf_token`` from ``get_token/`` (GET) and send it
back in the ``X-CSRFToken`` header.
"""

from __future__ import annotations

import json
from functools import wraps
from typing import Any, Callable

from django.contrib.auth import authenticate, login, logout
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, JsonResponse
from django.http.request import RawPostDataException
from django.middleware.csrf import CsrfViewMiddleware, get_token
from django.utils.decorators import decorator_from_middleware
from django.views.decorators.csrf import csrf_exempt

from . import conf, tokens
from .access import can_read, readable_channels
from .publishing import validate_channel


def error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


class _JsonCsrfMiddleware(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> JsonResponse:
        return error(403, "csrf_failed", f"CSRF check failed: {reason}")


def _json_view(methods: tuple[str, ...]) -> Callable:
    """Allow only ``methods``, check CSRF with a JSON failure, and never let an error be a 500."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            if request.method not in methods:
                response = error(405, "method_not_allowed", f"use {' or '.join(methods)}")
                response["Allow"] = ", ".join(methods)
                return response
            return view(request, *args, **kwargs)

        # The project's CsrfViewMiddleware skips this view; our own copy runs the same check and
        # answers in JSON. So CSRF is enforced exactly as Django would, only the failure differs.
        protected = decorator_from_middleware(_JsonCsrfMiddleware)(checked)

        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            # Django raises these while reading the body (here or in the CSRF check, which reads
            # request.POST); unhandled they would become an HTML 400.
            try:
                return protected(request, *args, **kwargs)
            except RequestDataTooBig:
                return error(413, "too_large", "the request body is too large")
            except TooManyFieldsSent:
                return error(400, "bad_request", "too many form fields; send a JSON object")

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
            {
                "name": channel.name,
                "level": channel.level,
                "token": tokens.subscription_token(user, channel.name),
            }
            for channel in readable_channels(user)
        ],
    }


@_json_view(("POST",))
def login_view(request: HttpRequest) -> JsonResponse:
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
def logout_view(request: HttpRequest) -> JsonResponse:
    logout(request)
    return JsonResponse({"ok": True})


@_json_view(("GET", "POST"))
def get_token_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(token_payload(request))


@_json_view(("POST",))
def subscribe_view(request: HttpRequest) -> JsonResponse:
    """``{"channel": name}`` → ``{"token": ...}`` (centrifuge-js getToken), or 403.

    django-instant's list form ``{"channels": [names]}`` → ``{"channels": [{"channel", "token"}]}``
    for the listed channels the user may read (the others are left out).
    Unknown channels and channels the user may not read both get 403, so the answer does not
    tell which private channels exist.
    """
    try:
        body = _json_object(request)
        if "channels" in body and "channel" not in body:
            names = body["channels"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise BadRequest('"channels" must be a list of channel names')
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
