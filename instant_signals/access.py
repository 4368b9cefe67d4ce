"""Who may read which channel, and taking access away.

``@broadcast`` declarations decide for the channels they declare (their ``level``/``authorize``);
``Channel`` rows decide for the others (channels only ``publish()`` uses). What is not granted
is refused. Centrifugo enforces it: a ``$`` channel needs a subscription token, and only
``subscribe/`` and ``get_token/`` sign them, after asking here.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from asgiref.sync import sync_to_async

from . import client, reporting
from .models import Channel
from .registry import broadcast_registry

__all__ = ["can_read", "disconnect_user", "readable_channels"]

logger = logging.getLogger("instant_signals")

ACCESS_CHANGED = 4501
"""Disconnect code sent when a user's access changed (logout).

Terminal for every standard SDK: Centrifugo's protocol (v5+, ``centrifugal/centrifuge``
``disconnect.go``, Centrifugo's "Client protocol codes") makes 3500-3999 and 4500-4999 terminal
codes -- no automatic reconnect -- and leaves 4000-4999 to applications. So centrifuge-js and
centrifuge-python (``client.py``: ``reconnect = not (3500 <= code < 4000 or 4500 <= code <
5000)``) stay disconnected instead of coming straight back with the tokens they hold. A code of
our own (not a built-in one like 3503 "force disconnect") lets the browser module tell this case
apart: on 4501 it asks ``get_token/`` for fresh tokens and reconnects as whoever the session now
is (anonymous after a logout)."""


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
    """End every Centrifugo connection of ``user_id`` (the server API ``disconnect``, code
    ``ACCESS_CHANGED``). Standard clients stay disconnected; the browser module reconnects with
    fresh tokens from ``get_token/``, so it gets only what the session may still read. Never
    raises."""
    try:
        reporting.stats.add("requests")
        client.call("disconnect", {"user": user_id,
                                   "disconnect": {"code": ACCESS_CHANGED, "reason": reason}})
        return True
    except Exception as exc:  # noqa: BLE001 - logout must still succeed (unreachable, no key)
        logger.error("instant_signals: could not disconnect user %s from Centrifugo: %s",
                     user_id, exc)
        return False


def end_connections_on_logout(sender: Any, request: Any = None, user: Any = None,
                              **kwargs: Any) -> None:
    """``user_logged_out`` receiver: any logout (``auth.logout()``/``alogout()`` from any view,
    Django's ``LogoutView``, the admin's, the package's ``logout/``) ends the user's connections.

    Django sends the signal *before* it flushes the session, so the disconnect waits for the
    flush: the browser module asks ``get_token/`` the moment it is disconnected, and must find
    the session gone, not get the user's tokens again. (Code that sends ``user_logged_out``
    itself must flush ``request.session`` too, or call ``disconnect_user``.) Every connection
    of the user ends, also those of her other sessions: Centrifugo knows connections by user
    id, not by session; the browser module's tabs of a session still logged in reconnect with
    fresh tokens, as the same user."""
    if user is None or not getattr(user, "is_authenticated", False):
        return  # logging out an anonymous visitor: nothing to end
    user_id = str(user.pk)
    session = getattr(request, "session", None)
    if session is None or not callable(getattr(session, "flush", None)):
        disconnect_user(user_id, reason="logged out")
        return
    _after_flush(session, lambda: disconnect_user(user_id, reason="logged out"))


def _after_flush(session: Any, then: Callable[[], object]) -> None:
    """Call ``then()`` once, right after this session object's next ``flush()``/``aflush()``."""
    done = False

    def once() -> None:
        nonlocal done
        if not done:
            done = True
            then()

    def restore() -> None:
        for name in ("flush", "aflush"):
            vars(session).pop(name, None)

    flush = session.flush

    def flushed() -> None:
        try:
            flush()
        finally:
            restore()
            once()

    session.flush = flushed
    aflush = getattr(session, "aflush", None)  # Django 5.0+
    if aflush is not None:
        async def aflushed() -> None:
            try:
                await aflush()
            finally:
                restore()
                await sync_to_async(once)()

        session.aflush = aflushed
