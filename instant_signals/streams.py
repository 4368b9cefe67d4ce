"""What Centrifugo knows about a channel: its stream position, and who is present in it."""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import sync_to_async

from . import client
from .channels import validate_channel

__all__ = ["apresence", "presence", "stream_position"]


def stream_position(channel: str) -> dict[str, Any]:
    """``{"offset": int, "epoch": str}``: the channel's latest publication (history, limit 0).

    Read it *before* loading the rows a page shows: a client that subscribes ``since`` this
    position then receives every event committed after it, so nothing falls in between.
    """
    result = client.call("history", {"channel": validate_channel(channel), "limit": 0})
    return {"offset": int(result.get("offset") or 0), "epoch": str(result.get("epoch") or "")}


def presence(channel: str) -> list[dict[str, Any]]:
    """The users subscribed to ``channel`` now, each once however many tabs and connections:
    ``[{"user": "<pk>", "info": {...}, "connections": n}]``, ordered by user id. Anonymous
    connections are left out. Needs ``@broadcast(..., presence=True)`` on the channel."""
    result = client.call("presence", {"channel": validate_channel(channel)})
    users: dict[str, dict[str, Any]] = {}
    for entry in (result.get("presence") or {}).values():
        user = entry.get("user") or ""
        if not user:
            continue
        found = users.setdefault(user, {"user": user, "info": _info(entry), "connections": 0})
        found["connections"] += 1
    return [users[user] for user in sorted(users, key=lambda u: (len(u), u))]


def _info(entry: dict[str, Any]) -> Any:
    """``conn_info`` as given to Centrifugo (the connection token's ``info`` claim)."""
    info = entry.get("conn_info")
    if isinstance(info, str):  # some encodings pass it on as JSON text
        try:
            return json.loads(info)
        except ValueError:
            return info
    return info


async def apresence(channel: str) -> list[dict[str, Any]]:
    """``presence()`` for async code: the HTTP call runs in a worker thread."""
    return await _presence_in_thread(channel)


_presence_in_thread = sync_to_async(presence, thread_sensitive=False)
