"""Settings, read when used (never at import) so ``override_settings`` works.

django-instant's top-level names are kept (``CENTRIFUGO_HOST``, ``CENTRIFUGO_PORT``,
``CENTRIFUGO_API_KEY``, ``CENTRIFUGO_HMAC_KEY``, ``SITE_NAME``). Everything new lives in one
dict setting, ``INSTANT_SIGNALS``; ``DEFAULTS`` lists its keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULT_HOST = "http://localhost"
DEFAULT_PORT = 8427

DEFAULTS: dict[str, Any] = {
    # Kill switch: False publishes nothing from model hooks (publish() still works).
    "ENABLED": True,
    # "on_commit" (default): publish after the transaction commits, batched.
    # "outbox": write rows to the outbox table in the same transaction (durable).
    "DELIVERY": "on_commit",
    # "signals" (default): Django's signals and bulk hooks see the writes Django makes.
    # "database": triggers record every write of a declared table (raw SQL, other programs
    # too) in the change table; `manage.py relay_outbox` publishes them (SQLite, PostgreSQL).
    "CAPTURE": "signals",
    # True: raw saves (``loaddata``) publish nothing. By default they publish like any save.
    "SKIP_RAW_SAVES": False,
    # Models you don't own: {"auth.User": {"channels": [...], "fields": [...]}}.
    "MODELS": {},
    # (connect, read) seconds for every HTTP call to Centrifugo.
    "TIMEOUT": (1.0, 3.0),
    # JWT lifetimes in seconds; clients refresh through get_token/ and subscribe/. A token
    # cannot be revoked before it expires: these are the revocation windows (a client keeping
    # its tokens reads until then, plus Centrifugo's expired_close_delay, 25 s). 120 s: measured
    # ~2 ms per get_token/ and ~1 ms per subscribe/, 10,000 tabs with one private channel keep
    # a quarter of a core busy (test-artifacts/token-refresh-cost.json; security.md).
    "CONNECTION_TOKEN_LIFETIME": 120,
    "SUBSCRIPTION_TOKEN_LIFETIME": 120,
    # Commands per Centrifugo /batch request.
    "BATCH_SIZE": 500,
    # Largest JSON publication accepted before any network call, in bytes.
    "MAX_PAYLOAD_BYTES": 256 * 1024,
    # Partitions of the outbox (durable mode).
    "OUTBOX_PARTITIONS": 1,
    # Retryable answers a durable row may get before it becomes a dead letter (durable mode).
    "OUTBOX_MAX_ATTEMPTS": 20,
    # Seconds the oldest pending outbox row may wait before `check --database` warns (W041).
    "OUTBOX_MAX_AGE": 300,
    # The JSON login/ endpoint; False for sites with their own login (tokens follow the session).
    "LOGIN_VIEW": True,
    # Most channels the list form of subscribe/ signs in one request (more: HTTP 400).
    "SUBSCRIBE_MAX_CHANNELS": 100,
    # Most rows collection/ returns per declaration of a channel.
    "COLLECTION_MAX_ROWS": 1000,
    # The Centrifugo config installws writes and the system checks compare with the registry
    # (None: <BASE_DIR>/.centrifugo/config.json).
    "CENTRIFUGO_CONFIG": None,
    # Connection token ``info`` (shown to other readers in presence): dotted path or callable
    # user -> dict; None gives {"name": <user's display name>} (never the email).
    "USER_INFO": None,
}
"""Keys of the ``INSTANT_SIGNALS`` dict setting and their defaults."""


def app_setting(name: str) -> Any:
    """One key of the ``INSTANT_SIGNALS`` dict, or its default."""
    user = getattr(settings, "INSTANT_SIGNALS", None) or {}
    if isinstance(user, dict) and name in user:
        return user[name]
    return DEFAULTS[name]


def api_url() -> str:
    """Base URL of Centrifugo's server API, without a trailing slash (``.../api``)."""
    explicit = getattr(settings, "CENTRIFUGO_API_URL", None)
    if explicit:
        return str(explicit).rstrip("/")
    return f"{_host()}:{_port()}/api"


def ws_url() -> str:
    """The websocket URL handed to clients."""
    explicit = getattr(settings, "CENTRIFUGO_WS_URL", None)
    if explicit:
        return str(explicit)
    host = _host()
    if host.startswith("https://"):
        host = "wss://" + host[len("https://") :]
    elif host.startswith("http://"):
        host = "ws://" + host[len("http://") :]
    return f"{host}:{_port()}/connection/websocket"


def api_key() -> str:
    """``CENTRIFUGO_API_KEY``; a clear error when it is missing (checks only warn about it)."""
    return _required("CENTRIFUGO_API_KEY")


def hmac_key() -> str:
    """``CENTRIFUGO_HMAC_KEY``; a clear error when it is missing."""
    return _required("CENTRIFUGO_HMAC_KEY")


def _required(name: str) -> str:
    value = getattr(settings, name, None)
    if not value:
        raise ImproperlyConfigured(
            f"{name} is not set: run `python manage.py installws` and put the key it prints "
            f"(or writes with --write-env) in your settings or environment.")
    return str(value)


def site_name() -> str | None:
    return getattr(settings, "SITE_NAME", None) or None


def timeout() -> tuple[float, float]:
    value = app_setting("TIMEOUT")
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    connect, read = value
    return (float(connect), float(read))


def centrifugo_config_path() -> Path:
    """Where installws writes Centrifugo's config (and the checks read it)."""
    explicit = app_setting("CENTRIFUGO_CONFIG")
    if explicit:
        return Path(explicit)
    base = getattr(settings, "BASE_DIR", None) or os.getcwd()
    return Path(base) / ".centrifugo" / "config.json"


def _host() -> str:
    return str(getattr(settings, "CENTRIFUGO_HOST", None) or DEFAULT_HOST).rstrip("/")


def _port() -> int:
    return int(getattr(settings, "CENTRIFUGO_PORT", None) or DEFAULT_PORT)
