"""``Channel`` rows, and the read-only page of the ``@broadcast`` declarations beside them."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.urls import URLPattern, path

from .pages import declarations


class ChannelAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # not generic at run time
    list_display = ("name", "level", "is_active")
    list_filter = ("level", "is_active")
    search_fields = ("name",)
    filter_horizontal = ("groups",)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.declarations_view)
        return [path("declarations/", view, name="instant_signals_declarations"),
                *super().get_urls()]

    def declarations_view(self, request: Any) -> Any:
        return declarations(self, request)
