"""``Channel`` (who may read a channel that only ``publish()`` uses), ``OutboxEntry`` and
``ChangeEntry`` (the change table database capture writes)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from . import levels
from .channels import is_private, validate_channel

__all__ = ["ChangeEntry", "Channel", "ChannelQuerySet", "OutboxEntry"]


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


class ChangeQuerySet(models.QuerySet["ChangeEntry"]):
    """``ChangeEntry.objects``: captured changes waiting for the relay, and dead letters."""

    def pending(self) -> ChangeQuerySet:
        """Changes the relay has not turned into publications yet."""
        return self.filter(dead_at__isnull=True)

    def dead(self) -> ChangeQuerySet:
        """Changes the relay could not map to a model row (``error`` says why), oldest first.
        Never retried on their own: fix the cause and clear ``dead_at``, or delete them."""
        return self.filter(dead_at__isnull=False).order_by("id")


class ChangeEntry(models.Model):
    """One row written by a table's capture trigger (``INSTANT_SIGNALS["CAPTURE"] =
    "database"``): the table, the operation, the row's primary key and its images before and
    after (JSON, one key per column), in the writing transaction. ``manage.py relay_outbox``
    turns these rows into publications and deletes them; a row it cannot map stays as a dead
    letter (``dead_at``, ``error``).

    The triggers insert with plain SQL, so every column has a value from them: ``txid`` is the
    writing transaction's id on PostgreSQL (``txid_current()``, for the commit-order horizon),
    NULL on SQLite (one writer at a time: id order is commit order)."""

    table_name = models.TextField(help_text=_("The database table the row belongs to."))
    op = models.CharField(max_length=1, help_text=_("I (insert), U (update) or D (delete)."))
    row_pk = models.TextField(  # noqa: DJ001 - NULL: a row image without its key column
        null=True, blank=True, help_text=_("The row's primary key, as text."))
    old_row = models.JSONField(null=True, blank=True,
                               help_text=_("The row before (update, delete)."))
    new_row = models.JSONField(null=True, blank=True,
                               help_text=_("The row after (insert, update)."))
    txid = models.BigIntegerField(
        null=True, blank=True, help_text=_("The writing transaction (PostgreSQL)."))
    created_at = models.DateTimeField(help_text=_("When the trigger captured it."))
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(  # noqa: DJ001 - NULL until the relay fails to map the row
        null=True, blank=True, help_text=_("Why the relay could not map the row."))
    dead_at = models.DateTimeField(
        null=True, blank=True,
        help_text=_("Set when the relay gave up on the row (a dead letter)."))

    objects = ChangeQuerySet.as_manager()

    class Meta:
        db_table = "instant_signals_change"
        ordering = ["id"]
        verbose_name = _("captured change")
        verbose_name_plural = _("captured changes")

    def __str__(self) -> str:
        return f"{self.op} {self.table_name} {self.row_pk} (#{self.pk})"
