"""Who may read which channel: the ``Channel`` table plus the rules declared with ``@broadcast``."""

from __future__ import annotations

from typing import Any

from .models import Channel


def readable_channels(user: Any) -> list[Channel]:
    """The active ``Channel`` rows ``user`` may read, each once."""
    return list(Channel.objects.for_user(user))


def can_read(user: Any, name: str) -> bool:
    """True when ``user`` may subscribe to channel ``name``.

    A ``Channel`` row decides first; otherwise a per-instance rule from a ``@broadcast``
    declaration (e.g. ``"$task:{pk}"`` with ``authorize=...``) may grant it.
    """
    if Channel.objects.readable_by(user, name):
        return True
    if Channel.objects.filter(name=name).exists():
        return False  # a configured channel this user may not read, or an inactive one
    from .registry import registry

    return registry.authorize(user, name)
