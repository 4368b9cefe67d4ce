"""HTTP client for Centrifugo's v5/v6 server API (``POST {api_url}/<method>``, ``X-API-Key``).

One urllib3 connection pool per process (thread-safe, keep-alive with liveness checks, TLS with
the system's CA store, an HTTP(S)_PROXY from the environment honoured through urllib3's
``ProxyManager``); rebuilt when the settings that shape it change, and after ``fork()``.
Every failure becomes a ``CentrifugoError`` carrying Centrifugo's code and message.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import urllib3

from . import conf
from .exceptions import CentrifugoError

POOL_SIZE = 16  # keep-alive connections kept per process (more threads still work, unpooled)
_NO_RETRIES = urllib3.Retry(total=0, connect=0, read=0, redirect=0, raise_on_status=False)


class _Target:
    """Where server API calls go for one ``api_url`` and timeout: the host's connection pool
    (called directly: ``PoolManager.request`` costs ~40 µs more per call), or the proxy."""

    __slots__ = ("key", "manager", "pool", "path")

    def __init__(self, api_url: str, timeout: tuple[float, float]):
        parts = urlsplit(api_url)
        self.key = (api_url, timeout)
        self.path = parts.path.rstrip("/")
        options: dict[str, Any] = {
            "maxsize": POOL_SIZE, "retries": _NO_RETRIES,
            "timeout": urllib3.Timeout(connect=timeout[0], read=timeout[1]),
        }
        proxy = _proxy_for(parts.scheme or "http", parts.hostname or "localhost")
        self.manager = (urllib3.ProxyManager(proxy, **options) if proxy
                        else urllib3.PoolManager(**options))
        self.pool = None if proxy else self.manager.connection_from_url(api_url)

    def post(self, api_url: str, method: str, body: bytes,
             headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        if self.pool is not None:
            return self.pool.urlopen("POST", f"{self.path}/{method}", body=body,
                                     headers=headers, retries=_NO_RETRIES, redirect=False,
                                     assert_same_host=False)
        return self.manager.request("POST", f"{api_url}/{method}", body=body, headers=headers)


_lock = threading.Lock()
_current: _Target | None = None


def _target(api_url: str, timeout: tuple[float, float]) -> _Target:
    """The process's target for these settings; rebuilt (old connections closed) when they
    change."""
    global _current
    current = _current
    if current is not None and current.key == (api_url, timeout):
        return current
    with _lock:
        if _current is not None and _current.key == (api_url, timeout):
            return _current
        if _current is not None:
            _current.manager.clear()
        _current = _Target(api_url, timeout)
        return _current


def close_session() -> None:
    """Close the pooled connections (tests, settings changes); the next call opens new ones."""
    global _current
    with _lock:
        if _current is not None:
            _current.manager.clear()
        _current = None


def _after_fork() -> None:  # a child must not share the parent's sockets
    global _current, _lock
    _current = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def post(method: str, body: str) -> dict[str, Any]:
    """POST an encoded JSON body to ``{api_url}/{method}``; the decoded reply.

    Raises ``CentrifugoError`` when Centrifugo cannot be reached, refuses the API key, answers
    with an HTTP error or a body that is not JSON. A reply ``{"error": ...}`` is returned as is.
    """
    api_url = conf.api_url()
    url = f"{api_url}/{method}"
    timeout = conf.timeout()
    headers = {"X-API-Key": conf.api_key(), "Content-Type": "application/json"}
    try:
        response = _target(api_url, timeout).post(api_url, method, body.encode(), headers)
    except urllib3.exceptions.TimeoutError:
        raise CentrifugoError(f"Centrifugo did not answer within {timeout} s at {url}",
                              retryable=True) from None
    except urllib3.exceptions.HTTPError as exc:
        raise CentrifugoError(f"cannot reach Centrifugo at {url}: {_reason(exc)}",
                              retryable=True) from None
    status = response.status
    if status == 401:
        raise CentrifugoError(
            "Centrifugo refused the API key (HTTP 401): CENTRIFUGO_API_KEY must equal "
            "http_api.key in Centrifugo's config", code=401)
    if status != 200:
        raise CentrifugoError(f"Centrifugo answered HTTP {status} at {url}: "
                              f"{response.data[:200]!r}", code=status, retryable=status >= 500)
    try:
        reply = json.loads(response.data)
    except ValueError:
        raise CentrifugoError(f"Centrifugo answered with a body that is not JSON at {url}",
                              code=status) from None
    if not isinstance(reply, dict):
        raise CentrifugoError(f"Centrifugo answered {reply!r:.100} at {url}", code=status)
    return reply


def call(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One server API method; its ``result`` (raises ``CentrifugoError`` on an error reply)."""
    try:
        body = json.dumps(params, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CentrifugoError(f"parameters are not JSON: {exc}", code=107) from None
    reply = post(method, body)
    if "error" in reply:
        raise CentrifugoError.from_reply(reply["error"])
    result = reply.get("result", {})
    return result if isinstance(result, dict) else {}


def publish(channel: str, data: Any, **extra: Any) -> dict[str, Any]:
    return call("publish", {"channel": channel, "data": data, **extra})


def broadcast(channels: list[str], data: Any, **extra: Any) -> list[dict[str, Any]]:
    """Publish one payload into several channels; the per-channel replies."""
    responses: list[dict[str, Any]] = call(
        "broadcast", {"channels": channels, "data": data, **extra}).get("responses", [])
    return responses


def batch(commands: list[str]) -> list[dict[str, Any]]:
    """Several commands, each already encoded as ``{"publish": {...}}`` (etc.), in one request.

    Returns one reply per command, in order. Per-command errors do not raise: check each with
    ``reply_error``. Commands run one after another (``parallel`` off), so order is kept.
    """
    reply = post("batch", '{"commands":[' + ",".join(commands) + "]}")
    if "error" in reply:
        raise CentrifugoError.from_reply(reply["error"])
    replies: list[dict[str, Any]] = reply.get("replies", [])
    if not isinstance(replies, list) or len(replies) != len(commands):
        raise CentrifugoError(f"Centrifugo answered {len(replies)} replies to "
                              f"{len(commands)} commands", retryable=True)
    return replies


def reply_error(reply: dict[str, Any]) -> CentrifugoError | None:
    """The error of one batch/broadcast reply, or None when it succeeded."""
    error = reply.get("error")
    return CentrifugoError.from_reply(error) if error else None


def _proxy_for(scheme: str, host: str) -> str | None:
    """The HTTP(S)_PROXY that applies to ``host`` (NO_PROXY honoured), or None."""
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return proxy


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return f"{exc.__class__.__name__}" + (f" ({reason.__class__.__name__})" if reason else "")
