"""HTTP client for Centrifugo's v5/v6 server API (``/api/publish``, ``/broadcast``, ``/batch``).

Each thread keeps one keep-alive connection (the standard library's ``http.client``: a call
costs a quarter of what ``requests`` costs, see benchmarks/); every failure becomes a
``CentrifugoError`` carrying Centrifugo's code and message. When an HTTP(S)_PROXY environment
variable applies to Centrifugo's host, calls go through ``requests``, which honours it.
"""

from __future__ import annotations

import functools
import http.client
import io
import json
import select
import socket
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

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


class _Connection:
    """This thread's keep-alive connection to one Centrifugo address."""

    def __init__(self, scheme: str, host: str, port: int):
        self.key = (scheme, host, port)
        self.conn: http.client.HTTPConnection | None = None
        self.proxied = _proxied(scheme, host)  # looked up once: it costs ~0.1 ms

    def post(self, path: str, body: bytes, headers: dict[str, str],
             timeout: tuple[float, float]) -> tuple[int, bytes]:
        conn = self.conn
        if conn is not None and _closed_by_peer(conn):
            self.close()
            conn = None
        if conn is None:
            scheme, host, port = self.key
            factory = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = factory(host, port, timeout=timeout[0])
            conn.connect()
            conn.sock.settimeout(timeout[1])  # type: ignore[union-attr]
            self.conn = conn
        # The read timeout bounds the whole answer, not each socket read: a server that trickles
        # bytes cannot hold the caller longer than TIMEOUT.
        conn.response_class = functools.partial(_Response, deadline=time.monotonic() + timeout[1])
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.will_close:
            self.close()
        return response.status, data

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _DeadlineReader(io.RawIOBase):
    """Socket reads that share one deadline."""

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("the answer took longer than the read timeout")
        self.sock.settimeout(remaining)
        return self.sock.recv_into(buffer)


class _Response(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, deadline: float, **kwargs: Any):
        super().__init__(sock, *args, **kwargs)
        self.fp.close()  # the plain makefile() reader, replaced by one that keeps the deadline
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive socket that is readable was closed by the server (as urllib3 checks)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _connection(scheme: str, host: str, port: int) -> _Connection:
    current: _Connection | None = getattr(_local, "connection", None)
    if current is None or current.key != (scheme, host, port):
        if current is not None:
            current.close()
        current = _local.connection = _Connection(scheme, host, port)
    return current


def close_session() -> None:
    """Close this thread's keep-alive connection (tests, forks, settings changes)."""
    current = getattr(_local, "connection", None)
    if current is not None:
        current.close()
        _local.connection = None


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
    timeout = conf.timeout()
    parts = urlsplit(url)
    scheme = parts.scheme or "http"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if scheme == "https" else 80)
    connection = _connection(scheme, host, port)
    try:
        if connection.proxied:
            response = requests.post(url, data=data.encode(), headers=headers, timeout=timeout)
            status, body = response.status_code, response.content
        else:
            try:
                status, body = connection.post(parts.path or "/", data.encode(), headers, timeout)
            except BaseException:
                connection.close()  # a half-used connection is never reused
                raise
    except (socket.timeout, requests.Timeout):
        raise CentrifugoError(
            f"Centrifugo did not answer within {timeout} s at {url}", retryable=True
        ) from None
    except (OSError, http.client.HTTPException, requests.RequestException) as exc:
        raise CentrifugoError(
            f"cannot reach Centrifugo at {url}: {exc.__class__.__name__}", retryable=True
        ) from None
    if status == 401:
        raise CentrifugoError(
            "Centrifugo refused the API key (HTTP 401): CENTRIFUGO_API_KEY must equal http_api.key "
            "in Centrifugo's config",
            code=401,
        )
    if status != 200:
        raise CentrifugoError(
            f"Centrifugo answered HTTP {status} at {url}: {body[:200]!r}",
            code=status,
            retryable=status >= 500,
        )
    try:
        return json.loads(body)
    except ValueError:
        raise CentrifugoError(
            f"Centrifugo answered with a body that is not JSON at {url}", code=status
        ) from None


def _proxied(scheme: str, host: str) -> bool:
    """Whether an HTTP(S)_PROXY environment variable applies to ``host`` (then use requests)."""
    proxies = urllib.request.getproxies()
    if scheme not in proxies:
        return False
    return not urllib.request.proxy_bypass(host)


def _error_from(error: dict[str, Any]) -> CentrifugoError:
    code = error.get("code")
    return CentrifugoError(
        str(error.get("message") or "error"), code=code, retryable=code in _RETRYABLE_CODES
    )
