"""Centrifugo JWTs, HS256 with ``CENTRIFUGO_HMAC_KEY``.

Connection: ``sub`` (the user's pk as a string, "" for anonymous visitors), ``iat``, ``exp`` and,
for users, ``info`` (what other readers see in presence). Subscription: ``sub``, ``channel``,
``iat``, ``exp``. Lifetimes are settings; a token cannot be revoked before it expires.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jwt
from django.utils.module_loading import import_string

from . import conf

__all__ = ["connection_token", "display_name", "subscription_token", "user_info"]


def user_sub(user: Any) -> str:
    """Centrifugo's user id for ``user``: its pk as a string, "" for anonymous visitors."""
    if user is None or not getattr(user, "is_authenticated", False):
        return ""
    return str(user.pk)


def connection_token(user: Any, *, lifetime: int | None = None) -> str:
    """A connection JWT for ``user`` (None or anonymous: ``sub`` ""), valid ``lifetime`` seconds
    (default ``CONNECTION_TOKEN_LIFETIME``)."""
    now = int(time.time())
    if lifetime is None:
        lifetime = int(conf.app_setting("CONNECTION_TOKEN_LIFETIME"))
    claims: dict[str, Any] = {"sub": user_sub(user), "iat": now, "exp": now + lifetime}
    if claims["sub"]:
        claims["info"] = user_info(user)
    return _sign(claims)


def subscription_token(user: Any, channel: str, *, lifetime: int | None = None) -> str:
    """A subscription JWT for ``user`` and ``channel`` (default lifetime
    ``SUBSCRIPTION_TOKEN_LIFETIME``). Sign only after ``access.can_read`` said yes."""
    now = int(time.time())
    if lifetime is None:
        lifetime = int(conf.app_setting("SUBSCRIPTION_TOKEN_LIFETIME"))
    claims = {"sub": user_sub(user), "channel": channel, "iat": now, "exp": now + lifetime}
    return _sign(claims)


def user_info(user: Any) -> dict[str, Any]:
    """What other readers of a channel see of ``user`` in its presence (``USER_INFO`` hook)."""
    hook = conf.app_setting("USER_INFO")
    if hook:
        function: Callable[[Any], dict[str, Any]] = (
            import_string(hook) if isinstance(hook, str) else hook)
        return dict(function(user))
    return {"name": display_name(user)}


def display_name(user: Any) -> str:
    """The full name, else the username unless it is an email address, else "user <pk>"."""
    full = getattr(user, "get_full_name", lambda: "")() or ""
    if full.strip():
        return full.strip()
    username = getattr(user, "get_username", lambda: "")() or ""
    if username and "@" not in username:
        return username
    return f"user {user.pk}"


def _sign(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, conf.hmac_key(), algorithm="HS256")
