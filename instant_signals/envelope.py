"""The publication envelope, built, encoded and size-checked here and nowhere else.

django-instant's keys are kept (``channel``, ``site``, ``message``, ``event_class``, ``bucket``,
``data``); keys that were not given are left out. Model events put the event in ``data`` (what
is in it is the declaration's output format's: ``formats``)::

    {"channel": "public", "site": "My site", "event_class": "updated", "bucket": "todo.task",
     "data": {"model": "todo.task", "pk": 42, "event": "updated", "version": 1732870000123456,
              "fields": {...}, "changed": {...}},
     "id": "<event id, also Centrifugo's idempotency_key>"}
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

from . import conf

CREATED, UPDATED, DELETED = "created", "updated", "deleted"
EVENTS = frozenset({CREATED, UPDATED, DELETED})

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


@lru_cache(maxsize=4096)
def _json_string(text: str) -> str:
    """A channel name or key as JSON (the same few names again and again: cached)."""
    return _dumps(text)


def custom_event(channel: str, message: Any = None, *, data: Any = None,
                 event_class: str | None = None, bucket: str = "",
                 site: str | None = None) -> dict[str, Any]:
    """The envelope of ``publish()``: only the keys that were given (``site``: SITE_NAME)."""
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


def model_envelope(channel: str, *, event_class: str, bucket: str, data: dict[str, Any],
                   event_id: str | None = None, site: str | None = None) -> dict[str, Any]:
    """The envelope of a model event: ``data`` is what the declaration's format made of it,
    ``bucket`` the model's label, ``event_id`` its ``id`` (left out when None, as ``site``)."""
    if site:  # (one literal per case: this runs for every publication)
        payload: dict[str, Any] = {"channel": channel, "site": site, "event_class": event_class,
                                   "bucket": bucket, "data": data}
    else:
        payload = {"channel": channel, "event_class": event_class, "bucket": bucket, "data": data}
    if event_id is not None:
        payload["id"] = event_id
    return payload


def new_event_id() -> str:
    """128 random bits as hex, like a uuid4 at a seventh of the cost."""
    return os.urandom(16).hex()


def encode(payload: Any) -> str:
    """``payload`` as compact JSON; ``ValueError`` if it is not JSON or over MAX_PAYLOAD_BYTES."""
    try:
        text = _dumps(payload)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"publication is not JSON: {exc}") from None
    limit = int(conf.app_setting("MAX_PAYLOAD_BYTES"))
    if len(text) > limit:  # ASCII only (json escapes the rest): characters are bytes
        raise ValueError(f"publication is {len(text)} bytes; "
                         f"INSTANT_SIGNALS['MAX_PAYLOAD_BYTES'] allows {limit}")
    return text


def publish_command(channel: str, encoded_payload: str, idempotency_key: str | None = None) -> str:
    """A server API ``publish`` command around an already encoded payload (no second encoding)."""
    key = f',"idempotency_key":{_json_string(idempotency_key)}' if idempotency_key else ""
    return f'{{"channel":{_json_string(channel)},"data":{encoded_payload}{key}}}'
