"""Centrifugo JWTs (HS256 with ``CENTRIFUGO_HMAC_KEY``)."""

from __future__ import annotations

import time
from typing import Any

import jwt

from . import conf


def user_sub(user: Any) -> str:
    """Centrifugo's user id for ``user``: its pk as a string, "" for anonymous visitors."""
    if user is None or not getattr(user, "is_authenticated", False):
        return ""
    return str(user.pk)


def connection_token(user: Any, *, lifetime: int | None = None) -> str:
    now = int(time.time())
    if lifetime is None:
        lifetime = int(conf.app_setting("CONNECTION_TOKEN_LIFETIME"))
    claims = {"sub": user_sub(user), "iat": now, "exp": now + lifetime}
    return _sign(claims)


def subscription_token(user: Any, channel: str, *, lifetime: int | None = None) -> str:
    now = int(time.time())
    if lifetime is None:
        lifetime = int(conf.app_setting("SUBSCRIPTION_TOKEN_LIFETIME"))
    claims = {"sub": user_sub(user), "channel": channel, "iat": now, "exp": now + lifetime}
    return _sign(claims)


def _sign(claims: dict[str, Any]) -> str:
    key = conf.hmac_key()
    if not key:
        raise RuntimeError("CENTRIFUGO_HMAC_KEY is not set: run `manage.py check`")
    return jwt.encode(claims, key, algorithm="HS256")
