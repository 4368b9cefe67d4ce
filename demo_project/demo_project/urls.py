from django.contrib import admin
from django.urls import include, path

from board import views

urlpatterns = [
    path("", views.index, name="index"),
    path("notes/", views.add_note, name="add_note"),
    path("tasks/", views.tasks, name="tasks"),
    path("tasks/<int:pk>/toggle/", views.toggle_task, name="toggle_task"),
    path("html/", include("live_html.urls")),
    path("instant/", include("instant_signals.urls")),
    path("admin/", admin.site.urls),
]
