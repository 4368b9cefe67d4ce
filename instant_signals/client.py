"""HTTP client for Centrifugo's v5/v6 server API (``/api/publish``, ``/broadcast``, ``/batch``).

One ``requests.Session`` per thread keeps connections alive; every failure becomes a
``CentrifugoError`` carrying Centrifugo's code and message.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import requests

from . import conf

_local = threading.local()


class CentrifugoError(Exception):
    """A call to Centrifugo failed.

    ``code`` is Centrifugo's error code (e.g. 102 unknown channel) or the HTTP status when the
    server answered without JSON (401 for a wrong API key); ``None`` when it could not be reached.
    ``retryable`` says whether sending the same command again may succeed.
    """

    def __init__(self, message: str, *, code: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}" if self.code is not None else self.message


# Centrifugo codes worth retrying: internal (100), not available (108); HTTP 5xx and no answer.
_RETRYABLE_CODES = {100, 108}


def _session() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        _local.session = session
    return session


def close_session() -> None:
    """Close this thread's keep-alive connections (tests and forks)."""
    session = getattr(_local, "session", None)
    if session is not None:
        session.close()
        _local.session = None


def call(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """POST one server API method and return its ``result`` (``{}`` for batch, see ``batch``)."""
    body = _post(method, params)
    if "error" in body:
        raise _error_from(body["error"])
    return body.get("result", body)


def publish(channel: str, data: Any, **extra: Any) -> dict[str, Any]:
    return call("publish", {"channel": channel, "data": data, **extra})


def broadcast(channels: list[str], data: Any, **extra: Any) -> list[dict[str, Any]]:
    """Publish one payload into several channels; returns the per-channel replies."""
    result = call("broadcast", {"channels": channels, "data": data, **extra})
    return result.get("responses", [])


def batch(commands: list[dict[str, Any]], *, parallel: bool = False) -> list[dict[str, Any]]:
    """Send several commands in one request; returns one reply per command, in order.

    Per-command errors do not raise: each reply is either ``{"publish": {...}}`` (etc.) or
    ``{"error": {...}}``. Use ``reply_error`` to turn one into a ``CentrifugoError``.
    """
    body = _post("batch", {"commands": commands, "parallel": parallel})
    if "error" in body:
        raise _error_from(body["error"])
    return body.get("replies", [])


def batch_publish_encoded(commands: list[str]) -> list[dict[str, Any]]:
    """``batch`` of publish commands already encoded as JSON (each encoded once, by the caller
    that also checked its size)."""
    body = '{"commands":[' + ",".join('{"publish":' + c + "}" for c in commands) + "]}"
    reply = _post_body("batch", body)
    if "error" in reply:
        raise _error_from(reply["error"])
    return reply.get("replies", [])


def reply_error(reply: dict[str, Any]) -> CentrifugoError | None:
    """The error of one batch/broadcast reply, or None when it succeeded."""
    error = reply.get("error")
    return _error_from(error) if error else None


def _post(method: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.dumps(params, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CentrifugoError(f"payload is not JSON-serializable: {exc}", code=107) from None
    return _post_body(method, data)


def _post_body(method: str, data: str) -> dict[str, Any]:
    url = f"{conf.api_url()}/{method}"
    headers = {"X-API-Key": conf.api_key(), "Content-Type": "application/json"}
    try:
        response = _session().post(url, data=data.encode(), headers=headers, timeout=conf.timeout())
    except requests.Timeout:
        raise CentrifugoError(
            f"Centrifugo did not answer within {conf.timeout()} s at {url}", retryable=True
        ) from None
    except requests.RequestException as exc:
        raise CentrifugoError(
            f"cannot reach Centrifugo at {url}: {exc.__class__.__name__}", retryable=True
        ) from None
    status = response.status_code
    if status == 401:
        raise CentrifugoError(
            "Centrifugo refused the API key (HTTP 401): CENTRIFUGO_API_KEY must equal http_api.key "
            "in Centrifugo's config",
            code=401,
        )
    if status != 200:
        raise CentrifugoError(
            f"Centrifugo answered HTTP {status} at {url}: {response.text[:200]!r}",
            code=status,
            retryable=status >= 500,
        )
    try:
        return response.json()
    except ValueError:
        raise CentrifugoError(
            f"Centrifugo answered with a body that is not JSON at {url}", code=status
        ) from None


def _error_from(error: dict[str, Any]) -> CentrifugoError:
    code = error.get("code")
    return CentrifugoError(
        str(error.get("message") or "error"), code=code, retryable=code in _RETRYABLE_CODES
    )
