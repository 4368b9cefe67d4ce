"""Reader levels of channels (django-instant's): who is public, a user, staff, a superuser."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

PUBLIC = "public"
USERS = "users"
GROUPS = "groups"
STAFF = "staff"
SUPERUSER = "superuser"

CHOICES = [
    (PUBLIC, _("Public")),
    (USERS, _("Logged in users")),
    (GROUPS, _("Members of the channel's groups")),
    (STAFF, _("Staff")),
    (SUPERUSER, _("Superusers")),
]

DECLARABLE = (PUBLIC, USERS, STAFF, SUPERUSER)
"""Levels a ``@broadcast(level=...)`` may name (groups need a ``Channel`` row and its groups)."""


def readable_levels(user: Any) -> set[str]:
    """Levels whose channels ``user`` may read (groups are checked per channel).

    Works with custom user models that lack ``is_staff`` or ``is_superuser``.
    """
    if user is None or not getattr(user, "is_authenticated", False):
        return {PUBLIC}
    if getattr(user, "is_superuser", False):
        return {PUBLIC, USERS, GROUPS, STAFF, SUPERUSER}
    levels = {PUBLIC, USERS}
    if getattr(user, "is_staff", False):
        levels.add(STAFF)
    return levels
