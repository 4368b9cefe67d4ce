"""``publish()``: custom events in django-instant's envelope, checked before any network call."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from asgiref.sync import sync_to_async

from . import client, conf
from .delivery import capture_target

logger = logging.getLogger("instant_signals")

# Centrifugo accepts ASCII channel names up to 255 characters; we also refuse whitespace and
# control characters, which no client can subscribe to sensibly.
MAX_CHANNEL_LENGTH = 255
_CHANNEL_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


def validate_channel(channel: Any) -> str:
    """Return ``channel`` if Centrifugo can use it as a channel name, else raise ``ValueError``."""
    if not isinstance(channel, str):
        raise ValueError(f"channel must be a string, not {type(channel).__name__}")
    if not channel:
        raise ValueError("channel must not be empty")
    if len(channel) > MAX_CHANNEL_LENGTH:
        raise ValueError(f"channel name is {len(channel)} characters long; the limit is 255")
    if not _CHANNEL_RE.match(channel):
        raise ValueError(
            f"channel {channel[:50]!r} may only hold printable ASCII characters without spaces"
        )
    return channel


def envelope(
    channel: str,
    message: Any = None,
    *,
    data: Any = None,
    event_class: str | None = None,
    bucket: str = "",
    site: str | None = None,
) -> dict[str, Any]:
    """The publication data: only the keys that were given (``site`` defaults to SITE_NAME)."""
    payload: dict[str, Any] = {"channel": channel}
    site = site if site is not None else conf.site_name()
    if site:
        payload["site"] = site
    if message is not None:
        payload["message"] = message
    if event_class:
        payload["event_class"] = event_class
    if bucket:
        payload["bucket"] = bucket
    if data is not None:
        payload["data"] = data
    return payload


def encoded_size(payload: Any) -> int:
    """Size in bytes of ``payload`` as JSON; raises ValueError when it is not JSON-serializable."""
    try:
        return len(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"publication data is not JSON-serializable: {exc}") from None


def check_size(payload: Any) -> None:
    limit = int(conf.app_setting("MAX_PAYLOAD_BYTES"))
    size = encoded_size(payload)
    if size > limit:
        raise ValueError(
            f"publication is {size} bytes; INSTANT_SIGNALS['MAX_PAYLOAD_BYTES'] allows {limit}"
        )


def publish(
    channel: str,
    message: Any = None,
    *,
    data: Any = None,
    event_class: str | None = None,
    bucket: str = "",
    site: str | None = None,
    fail_silently: bool = False,
) -> dict[str, Any] | None:
    """Publish a custom event into ``channel`` now.

    Raises ``ValueError`` for a bad channel, no message and no data, or a payload that is not
    JSON or too large, before any network call. Raises ``CentrifugoError`` when Centrifugo fails,
    unless ``fail_silently`` (then it is logged and None is returned). Returns Centrifugo's result.
    """
    validate_channel(channel)
    if message is None and data is None:
        raise ValueError("publish() needs a message or data")
    payload = envelope(
        channel, message, data=data, event_class=event_class, bucket=bucket, site=site
    )
    check_size(payload)
    captured = capture_target.get()
    if captured is not None:
        captured.append(payload)
        return {}
    try:
        return client.publish(channel, payload)
    except client.CentrifugoError as exc:
        if not fail_silently:
            raise
        logger.warning("publish to %r failed: %s", channel, exc)
        return None


apublish = sync_to_async(publish, thread_sensitive=False)
apublish.__doc__ = "Awaitable ``publish()`` for async views (runs in a worker thread)."
