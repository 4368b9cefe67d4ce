"""``Channel`` rows in the Django admin."""

from django.contrib import admin

from .models import Channel


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # not generic at run time
    list_display = ("name", "level", "is_active")
    list_filter = ("level", "is_active")
    search_fields = ("name",)
    filter_horizontal = ("groups",)
