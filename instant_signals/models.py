"""``Channel`` (who may read a channel that only ``publish()`` uses) and ``OutboxEntry``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from . import levels
from .channels import is_private, validate_channel

__all__ = ["Channel", "ChannelQuerySet", "OutboxEntry"]


class ChannelQuerySet(models.QuerySet["Channel"]):
    """``Channel.objects``: the channels a user may read."""

    def for_user(self, user: Any) -> ChannelQuerySet:
        """Active channels ``user`` may read, each once, ordered by name."""
        readable = levels.readable_levels(user)
        allowed = Q(level__in=readable - {levels.GROUPS})
        if levels.GROUPS in readable:  # superusers read every group channel
            allowed |= Q(level=levels.GROUPS)
        elif getattr(user, "is_authenticated", False) and hasattr(user, "groups"):
            group_channels = Channel.groups.through.objects.filter(
                group__in=user.groups.all()).values("channel_id")
            allowed |= Q(level=levels.GROUPS, pk__in=group_channels)
        return self.filter(allowed, is_active=True).order_by("name")

    def readable_by(self, user: Any, name: str) -> bool:
        """Whether ``user`` may read the active channel ``name``."""
        return self.for_user(user).filter(name=name).exists()

    def unprotected(self) -> ChannelQuerySet:
        """Rows Centrifugo would serve to anyone although their level is not public (saved
        around ``Channel.save()``, e.g. by ``update()`` or raw SQL)."""
        return self.exclude(level=levels.PUBLIC).exclude(name__startswith="$")


def validate_channel_name(value: str) -> None:
    try:
        validate_channel(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class Channel(models.Model):
    """A channel only ``publish()`` uses, and who may read it (django-instant's levels; groups for
    ``level="groups"``). Channels declared with ``@broadcast`` need no row: the declaration
    decides, and a row of the same name is ignored (system check ``W021``)."""

    name = models.CharField(
        _("name"), max_length=255, unique=True, validators=[validate_channel_name],
        help_text=_('Non-public channels must start with "$" so Centrifugo requires a token.'))
    level = models.CharField(_("level"), max_length=20, choices=levels.CHOICES,
                             default=levels.PUBLIC)
    is_active = models.BooleanField(_("active"), default=True)
    groups = models.ManyToManyField(
        "auth.Group", blank=True, related_name="instant_channels", verbose_name=_("groups"))

    objects = ChannelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = _("channel")
        verbose_name_plural = _("channels")

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.level != levels.PUBLIC and not is_private(self.name):
            raise ValidationError(
                {"name": _('A non-public channel name must start with "$": without it '
                           'Centrifugo lets anyone subscribe.')})

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Refuses a non-public level on a name without "$" however the row is saved (the
        admin's form, ``objects.create()``, a shell): it would be public in Centrifugo."""
        self.clean()
        super().save(*args, **kwargs)


class OutboxQuerySet(models.QuerySet["OutboxEntry"]):
    """``OutboxEntry.objects``: pending rows and dead letters."""

    def pending(self) -> OutboxQuerySet:
        """Rows waiting to be sent."""
        return self.filter(dead_at__isnull=True)

    def dead(self) -> OutboxQuerySet:
        """Dead letters: rows Centrifugo refused for good (``error`` says why), oldest first.
        The relay never sends them again; delete them, or clear ``dead_at`` to retry one."""
        return self.filter(dead_at__isnull=False).order_by("id")


class OutboxEntry(models.Model):
    """A server API command waiting to be sent (durable delivery mode), or a dead letter.

    The table has Centrifugo's outbox shape, so Centrifugo's own PostgreSQL consumer can drain
    it; on other databases ``manage.py relay_outbox`` does. The relay's own columns
    (``attempts``, ``error``, ``dead_at``) are nullable, so rows written by other programs in
    Centrifugo's shape are valid.
    """

    method = models.TextField(default="publish")
    payload = models.JSONField()
    partition = models.IntegerField(default=0, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    attempts = models.PositiveIntegerField(
        null=True, blank=True, help_text=_("Failed attempts so far (empty: none)."))
    error = models.TextField(  # noqa: DJ001 - NULL: written by a program that only knows
        null=True, blank=True,  # Centrifugo's four columns
        help_text=_("Centrifugo's answer to the last attempt: [code] message."))
    dead_at = models.DateTimeField(
        null=True, blank=True,
        help_text=_("Set when the row will not be tried again (a dead letter)."))

    objects = OutboxQuerySet.as_manager()

    class Meta:
        db_table = "instant_signals_outbox"
        ordering = ["id"]
        verbose_name = _("outbox entry")
        verbose_name_plural = _("outbox entries")

    def __str__(self) -> str:
        return f"{self.method} #{self.pk} (partition {self.partition})"
