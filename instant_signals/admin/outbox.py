"""Outbox rows in the admin: read-only, with two actions on dead letters (retry, drop).

Who may do what, by model permission on ``OutboxEntry``: ``view`` lists the rows and shows the
delivery page; ``change`` retries dead letters (back to pending, attempts 0, reason cleared);
``delete`` drops them (after a confirmation page). Nothing else is editable: rows are written
by the writer and the relay, and a pending row is never dropped from here (its events would be
lost).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..models import OutboxEntry
from .pages import delivery

PENDING, FAILING, DEAD = "pending", "failing", "dead"


class StateFilter(admin.SimpleListFilter):
    """``?state=pending|failing|dead``: the filter the delivery page links to."""

    title = _("state")
    parameter_name = "state"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, Any]]:
        return [(PENDING, _("pending")), (FAILING, _("pending, last attempt failed")),
                (DEAD, _("dead letter"))]

    def queryset(self, request: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == PENDING:
            return queryset.filter(dead_at__isnull=True)
        if self.value() == FAILING:
            return queryset.filter(dead_at__isnull=True, error__isnull=False)
        if self.value() == DEAD:
            return queryset.filter(dead_at__isnull=False)
        return queryset


def state_of(row: OutboxEntry) -> str:
    if row.dead_at is not None:
        return DEAD
    return FAILING if row.error else PENDING


def channel_of(payload: Any) -> str:
    """The channel (or channels) a row's command goes to."""
    if not isinstance(payload, dict):
        return ""
    if isinstance(payload.get("channel"), str):
        return str(payload["channel"])
    channels = payload.get("channels")
    if isinstance(channels, list):
        return ", ".join(str(c) for c in channels[:5]) + ("..." if len(channels) > 5 else "")
    return ""


class OutboxEntryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # not generic at run time
    list_display = ("id", "state", "method", "channel", "partition", "created_at", "attempts",
                    "reason", "dead_at")
    list_display_links = ("id",)
    list_filter = (StateFilter, "partition", "method")
    search_fields = ("error",)
    ordering = ("id",)
    list_per_page = 100
    fields = ("id", "state", "method", "channel", "partition", "created_at", "attempts",
              "error", "dead_at", "payload_json")
    readonly_fields = fields
    actions = ["retry_dead_letters", "drop_dead_letters"]

    # -- read-only ------------------------------------------------------------------------------
    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False  # the change form is a view; retrying is the action's permission

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False  # no delete view, no "delete selected": dropping is the action

    def has_retry_permission(self, request: Any) -> bool:
        return bool(request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}"))

    def has_drop_permission(self, request: Any) -> bool:
        return bool(request.user.has_perm(f"{self.opts.app_label}.delete_{self.opts.model_name}"))

    # -- columns --------------------------------------------------------------------------------
    @admin.display(description=_("state"))
    def state(self, row: OutboxEntry) -> str:
        return state_of(row)

    @admin.display(description=_("channel"))
    def channel(self, row: OutboxEntry) -> str:
        return channel_of(row.payload)

    @admin.display(description=_("reason"))
    def reason(self, row: OutboxEntry) -> str:
        return row.error or ""

    @admin.display(description=_("payload"))
    def payload_json(self, row: OutboxEntry) -> str:
        return format_html("<pre>{}</pre>", json.dumps(row.payload, indent=2, sort_keys=True))

    # -- actions --------------------------------------------------------------------------------
    @admin.action(permissions=["retry"], description=_("Retry the selected dead letters"))
    def retry_dead_letters(self, request: Any, queryset: QuerySet[OutboxEntry]) -> None:
        dead = list(queryset.filter(dead_at__isnull=False).order_by("id"))
        skipped = queryset.count() - len(dead)
        OutboxEntry.objects.filter(pk__in=[row.pk for row in dead], dead_at__isnull=False).update(
            dead_at=None, attempts=0, error=None)
        for row in dead:
            self.log_change(request, row, f"Retried dead letter (was: {row.error})")
        self.message_user(request, ngettext(
            "%(count)d dead letter is pending again: the relay sends it on its next pass.",
            "%(count)d dead letters are pending again: the relay sends them on its next pass.",
            len(dead)) % {"count": len(dead)}, messages.SUCCESS)
        if skipped:
            self.message_user(request, ngettext(
                "%(count)d selected row was not a dead letter: unchanged.",
                "%(count)d selected rows were not dead letters: unchanged.",
                skipped) % {"count": skipped}, messages.WARNING)

    @admin.action(permissions=["drop"], description=_("Drop the selected dead letters"))
    def drop_dead_letters(self, request: Any,
                          queryset: QuerySet[OutboxEntry]) -> TemplateResponse | None:
        dead = list(queryset.filter(dead_at__isnull=False).order_by("id"))
        skipped = queryset.count() - len(dead)
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": _("Drop dead letters?"), "opts": self.opts, "rows": dead,
                "skipped": skipped, "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "media": self.media,
            }
            request.current_app = self.admin_site.name
            return TemplateResponse(
                request, "admin/instant_signals/outboxentry/drop_confirmation.html", context)
        dropped = OutboxEntry.objects.filter(pk__in=[row.pk for row in dead],
                                             dead_at__isnull=False)
        self.log_deletions_of(request, dead)
        dropped.delete()
        self.message_user(request, ngettext(
            "%(count)d dead letter dropped: its events will never be published.",
            "%(count)d dead letters dropped: their events will never be published.",
            len(dead)) % {"count": len(dead)}, messages.SUCCESS)
        if skipped:
            self.message_user(request, ngettext(
                "%(count)d selected row was not a dead letter: kept.",
                "%(count)d selected rows were not dead letters: kept.",
                skipped) % {"count": skipped}, messages.WARNING)
        return None

    def log_deletions_of(self, request: Any, rows: list[OutboxEntry]) -> None:
        """Admin history entries for dropped rows (``log_deletions`` from Django 5.1; Django
        4.2 and 5.0 have ``log_deletion`` only)."""
        bulk = getattr(self, "log_deletions", None)
        if bulk is not None:
            bulk(request, OutboxEntry.objects.filter(pk__in=[row.pk for row in rows]))
            return
        single = getattr(self, "log_deletion")  # noqa: B009 - gone from the 5.1+ stubs
        for row in rows:
            single(request, row, str(row))

    # -- the delivery page ----------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.delivery_view)
        return [path("delivery/", view, name="instant_signals_delivery"), *super().get_urls()]

    def delivery_view(self, request: Any) -> Any:
        return delivery(self, request, now=timezone.now())
