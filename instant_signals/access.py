"""Who may read which channel, and taking access away.

``@broadcast`` declarations decide for the channels they declare (their ``level``/``authorize``);
``Channel`` rows decide for the others (channels only ``publish()`` uses). What is not granted
is refused. Centrifugo enforces it: a ``$`` channel needs a subscription token, and only
``subscribe/`` and ``get_token/`` sign them, after asking here.
"""

from __future__ import annotations

import logging
from typing import Any

from . import client, reporting
from .models import Channel
from .registry import broadcast_registry

__all__ = ["can_read", "disconnect_user", "readable_channels"]

logger = logging.getLogger("instant_signals")

ACCESS_CHANGED = 3014
"""Disconnect code sent when a user's access changed (logout): centrifuge-js (5.5+) then drops
its tokens, asks ``get_token/`` for new ones and reconnects as whoever the session now is."""


def can_read(user: Any, name: str) -> bool:
    """Whether ``user`` may subscribe to channel ``name``."""
    verdict = broadcast_registry.may_read(user, name)
    if verdict is not None:
        return verdict
    return Channel.objects.readable_by(user, name)


def readable_channels(user: Any) -> list[tuple[str, str]]:
    """(name, level) of the channels ``user`` may read that can be listed, each once: declared
    static and per-user channels, and active ``Channel`` rows not declared by ``@broadcast``."""
    found = dict(broadcast_registry.user_channels(user))
    for channel in Channel.objects.for_user(user):
        if channel.name not in found and broadcast_registry.may_read(user, channel.name) is None:
            found[channel.name] = channel.level
    return sorted(found.items())


def disconnect_user(user_id: str, reason: str = "access changed") -> bool:
    """End every Centrifugo connection of ``user_id`` (the server API ``disconnect``); clients
    reconnect with fresh tokens, so they get only what they may still read. Never raises."""
    try:
        reporting.stats.add("requests")
        client.call("disconnect", {"user": user_id,
                                   "disconnect": {"code": ACCESS_CHANGED, "reason": reason}})
        return True
    except Exception as exc:  # noqa: BLE001 - logout must still succeed (unreachable, no key)
        logger.error("instant_signals: could not disconnect user %s from Centrifugo: %s",
                     user_id, exc)
        return False
