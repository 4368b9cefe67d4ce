"""Captured changes in the admin (database capture): read-only, with one action on dead letters.

``view`` lists the change table's rows (pending ones wait for ``relay_outbox``; dead letters
say why the relay could not map them); ``change`` retries dead letters (back to pending, the
reason cleared): do it once the cause is fixed (a declaration put back, a column restored).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..models import ChangeEntry


class ChangeEntryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # not generic at run time
    list_display = ("id", "state", "table_name", "op", "row_pk", "txid", "created_at",
                    "attempts", "error")
    list_filter = ("table_name", "op")
    search_fields = ("row_pk", "error")
    ordering = ("id",)
    list_per_page = 100
    fields = ("id", "state", "table_name", "op", "row_pk", "txid", "created_at", "attempts",
              "error", "dead_at", "old_json", "new_json")
    readonly_fields = fields
    actions = ["retry_dead_letters"]

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False  # the change form is a view; retrying is the action's permission

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False  # a pending change deleted here would never be published

    def has_retry_permission(self, request: Any) -> bool:
        return bool(request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}"))

    @admin.display(description=_("state"))
    def state(self, row: ChangeEntry) -> str:
        return "dead" if row.dead_at is not None else "pending"

    @admin.display(description=_("old row"))
    def old_json(self, row: ChangeEntry) -> str:
        return format_html("<pre>{}</pre>", json.dumps(row.old_row, indent=2, sort_keys=True))

    @admin.display(description=_("new row"))
    def new_json(self, row: ChangeEntry) -> str:
        return format_html("<pre>{}</pre>", json.dumps(row.new_row, indent=2, sort_keys=True))

    @admin.action(permissions=["retry"], description=_("Retry the selected dead letters"))
    def retry_dead_letters(self, request: Any, queryset: QuerySet[ChangeEntry]) -> None:
        dead = list(queryset.filter(dead_at__isnull=False).order_by("id"))
        ChangeEntry.objects.filter(pk__in=[row.pk for row in dead]).update(dead_at=None,
                                                                           error=None)
        for row in dead:
            self.log_change(request, row, f"Retried dead letter (was: {row.error})")
        self.message_user(request, ngettext(
            "%(count)d captured change is pending again: the relay maps it on its next pass.",
            "%(count)d captured changes are pending again: the relay maps them on its next pass.",
            len(dead)) % {"count": len(dead)}, messages.SUCCESS)
