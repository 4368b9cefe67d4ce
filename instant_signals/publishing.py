"""``publish()``: custom events in django-instant's envelope, checked before any network call."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import sync_to_async

from . import client, envelope, reporting
from .channels import validate_channel
from .exceptions import UNKNOWN_CHANNEL, CentrifugoError

logger = logging.getLogger("instant_signals")


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
    """Publish a custom event into ``channel`` now (not on commit).

    Raises ``ValueError`` for a bad channel, no message and no data, or a payload that is not
    JSON or too large, before any network call. Raises ``CentrifugoError`` when Centrifugo fails,
    unless ``fail_silently`` (then it is logged and None is returned). Returns Centrifugo's result
    (``{"offset": ..., "epoch": ...}`` on channels with history).
    """
    validate_channel(channel)
    if message is None and data is None:
        raise ValueError("publish() needs a message or data")
    payload = envelope.custom_event(channel, message, data=data, event_class=event_class,
                                    bucket=bucket, site=site)
    encoded = envelope.encode(payload)
    captured = reporting.capturing()
    if captured is not None:
        captured.append(payload)
        return {}
    try:
        reporting.stats.add("requests")
        reply = client.post("publish", envelope.publish_command(channel, encoded))
        if "error" in reply:
            raise CentrifugoError.from_reply(reply["error"])
    except CentrifugoError as exc:
        if exc.code == UNKNOWN_CHANNEL:
            reporting.advise_unknown_channel([channel])
        if not fail_silently:
            raise
        logger.warning("instant_signals: publish to %r failed: %s", channel, exc)
        return None
    reporting.stats.add("published")
    result = reply.get("result", {})
    return result if isinstance(result, dict) else {}


async def apublish(
    channel: str,
    message: Any = None,
    *,
    data: Any = None,
    event_class: str | None = None,
    bucket: str = "",
    site: str | None = None,
    fail_silently: bool = False,
) -> dict[str, Any] | None:
    """``publish()`` for async code: the HTTP call runs in a worker thread, never blocking the
    event loop."""
    return await _publish_in_thread(channel, message, data=data, event_class=event_class,
                                    bucket=bucket, site=site, fail_silently=fail_silently)


_publish_in_thread = sync_to_async(publish, thread_sensitive=False)
