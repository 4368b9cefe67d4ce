"""System checks (``manage.py check``) for missing or malformed settings."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.checks import Error, Warning, register

from .conf import DEFAULTS

DELIVERY_MODES = ("on_commit", "outbox")


def _url_ok(value: Any, schemes: tuple[str, ...]) -> bool:
    if not isinstance(value, str):
        return False
    parsed = urlparse(value)
    return parsed.scheme in schemes and bool(parsed.netloc)


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list:
    errors: list = []

    def err(id_: int, msg: str, hint: str) -> None:
        errors.append(Error(msg, hint=hint, id=f"instant_signals.E{id_:03d}"))

    for id_, name in ((1, "CENTRIFUGO_API_KEY"), (2, "CENTRIFUGO_HMAC_KEY")):
        value = getattr(settings, name, None)
        if not value or not isinstance(value, str):
            err(id_, f"{name} is missing or not a string.",
                "Copy it from Centrifugo's config, or run `manage.py installws` to make one.")
    hmac = getattr(settings, "CENTRIFUGO_HMAC_KEY", None)
    if isinstance(hmac, str) and 0 < len(hmac) < 32:
        errors.append(Warning(
            "CENTRIFUGO_HMAC_KEY is shorter than 32 characters; tokens signed with it are weak.",
            hint="Use a long random key (installws generates one).", id="instant_signals.W001"))

    port = getattr(settings, "CENTRIFUGO_PORT", None)
    if port is not None and (not isinstance(port, int) or isinstance(port, bool)
                             or not 0 < port < 65536):
        err(3, f"CENTRIFUGO_PORT must be an integer from 1 to 65535, not {port!r}.",
            "The default is 8427.")
    host = getattr(settings, "CENTRIFUGO_HOST", None)
    if host is not None and not _url_ok(host, ("http", "https")):
        err(4, f"CENTRIFUGO_HOST must be an http:// or https:// URL, not {host!r}.",
            'For example "http://localhost".')
    api_url = getattr(settings, "CENTRIFUGO_API_URL", None)
    if api_url is not None and not _url_ok(api_url, ("http", "https")):
        err(5, f"CENTRIFUGO_API_URL must be an http(s) URL, not {api_url!r}.",
            'For example "http://localhost:8427/api".')
    ws_url = getattr(settings, "CENTRIFUGO_WS_URL", None)
    if ws_url is not None and not _url_ok(ws_url, ("ws", "wss", "http", "https")):
        err(6, f"CENTRIFUGO_WS_URL must be a ws:// or wss:// URL, not {ws_url!r}.",
            'For example "ws://localhost:8427/connection/websocket".')
    errors.extend(_check_app_dict())
    return errors


def _check_app_dict() -> list:
    value = getattr(settings, "INSTANT_SIGNALS", None)
    if value is None:
        return []
    if not isinstance(value, dict):
        return [Error("INSTANT_SIGNALS must be a dict.", id="instant_signals.E007")]
    errors = []
    unknown = sorted(set(value) - set(DEFAULTS))
    if unknown:
        errors.append(Error(f"INSTANT_SIGNALS has unknown keys: {', '.join(unknown)}.",
                            hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                            id="instant_signals.E007"))
    if value.get("DELIVERY", "on_commit") not in DELIVERY_MODES:
        errors.append(Error(f"INSTANT_SIGNALS['DELIVERY'] must be one of {DELIVERY_MODES}, "
                            f"not {value['DELIVERY']!r}.", id="instant_signals.E008"))
    timeout = value.get("TIMEOUT", DEFAULTS["TIMEOUT"])
    if not _timeout_ok(timeout):
        errors.append(Error(f"INSTANT_SIGNALS['TIMEOUT'] must be a positive number or a "
                            f"(connect, read) pair of them, not {timeout!r}.",
                            id="instant_signals.E009"))
    for key in ("CONNECTION_TOKEN_LIFETIME", "SUBSCRIPTION_TOKEN_LIFETIME", "BATCH_SIZE",
                "MAX_PAYLOAD_BYTES", "OUTBOX_PARTITIONS"):
        item = value.get(key, DEFAULTS[key])
        if not isinstance(item, int) or isinstance(item, bool) or item <= 0:
            errors.append(Error(f"INSTANT_SIGNALS['{key}'] must be a positive integer, "
                                f"not {item!r}.", id="instant_signals.E010"))
    if not isinstance(value.get("MODELS", {}), dict):
        errors.append(Error("INSTANT_SIGNALS['MODELS'] must be a dict of model label to options.",
                            id="instant_signals.E011"))
    return errors


def _timeout_ok(value: Any) -> bool:
    def positive(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0

    if positive(value):
        return True
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(map(positive, value))
