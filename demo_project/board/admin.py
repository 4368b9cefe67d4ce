from django.contrib import admin

from .models import Note, Task


@admin.register(Note)
class NoteAdmin(admin.ModelAdmin):
    list_display = ["text", "author", "created"]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["title", "owner", "done", "created"]
    list_editable = ["done"]
    list_filter = ["done", "owner"]
