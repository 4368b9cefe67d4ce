"""The ``Channel`` model: which users may read which channel."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from .publishing import validate_channel

LEVEL_PUBLIC = "public"
LEVEL_USERS = "users"
LEVEL_GROUPS = "groups"
LEVEL_STAFF = "staff"
LEVEL_SUPERUSER = "superuser"

LEVELS = [
    (LEVEL_PUBLIC, _("Public")),
    (LEVEL_USERS, _("Logged in users")),
    (LEVEL_GROUPS, _("Members of the channel's groups")),
    (LEVEL_STAFF, _("Staff")),
    (LEVEL_SUPERUSER, _("Superusers")),
]


def readable_levels(user: Any) -> set[str]:
    """Levels whose channels ``user`` may read (groups are checked per channel).

    Works with custom user models that lack ``is_staff`` or ``is_superuser``.
    """
    if user is None or not getattr(user, "is_authenticated", False):
        return {LEVEL_PUBLIC}
    if getattr(user, "is_superuser", False):
        return {LEVEL_PUBLIC, LEVEL_USERS, LEVEL_GROUPS, LEVEL_STAFF, LEVEL_SUPERUSER}
    levels = {LEVEL_PUBLIC, LEVEL_USERS}
    if getattr(user, "is_staff", False):
        levels.add(LEVEL_STAFF)
    return levels


class ChannelQuerySet(models.QuerySet):
    def for_user(self, user: Any) -> ChannelQuerySet:
        """Active channels ``user`` may read, each once, ordered by name."""
        levels = readable_levels(user)
        allowed = Q(level__in=levels - {LEVEL_GROUPS})
        if LEVEL_GROUPS in levels:  # superusers read every group channel
            allowed |= Q(level=LEVEL_GROUPS)
        elif getattr(user, "is_authenticated", False) and hasattr(user, "groups"):
            group_channels = Channel.groups.through.objects.filter(
                group__in=user.groups.all()
            ).values("channel_id")
            allowed |= Q(level=LEVEL_GROUPS, pk__in=group_channels)
        return self.filter(allowed, is_active=True).order_by("name")

    def readable_by(self, user: Any, name: str) -> bool:
        return self.for_user(user).filter(name=name).exists()


def _validate_name(value: str) -> None:
    try:
        validate_channel(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class Channel(models.Model):
    name = models.CharField(
        _("name"),
        max_length=255,
        unique=True,
        validators=[_validate_name],
        help_text=_('Non-public channels must start with "$" so Centrifugo requires a token.'),
    )
    level = models.CharField(_("level"), max_length=20, choices=LEVELS, default=LEVEL_PUBLIC)
    is_active = models.BooleanField(_("active"), default=True)
    groups = models.ManyToManyField(
        "auth.Group", blank=True, related_name="instant_channels", verbose_name=_("groups")
    )

    objects = ChannelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = _("channel")
        verbose_name_plural = _("channels")

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.level != LEVEL_PUBLIC and not self.name.startswith("$"):
            raise ValidationError(
                {"name": _('A non-public channel name must start with "$".')}
            )


class OutboxEntry(models.Model):
    """A server API command waiting to be sent (durable delivery mode).

    The table has Centrifugo's outbox shape, so Centrifugo's own PostgreSQL consumer can drain
    it; on other databases ``manage.py relay_outbox`` does.
    """

    method = models.TextField(default="publish")
    payload = models.JSONField()
    partition = models.IntegerField(default=0, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "instant_signals_outbox"
        ordering = ["id"]
        verbose_name = _("outbox entry")
        verbose_name_plural = _("outbox entries")

    def __str__(self) -> str:
        return f"{self.method} #{self.pk} (partition {self.partition})"
