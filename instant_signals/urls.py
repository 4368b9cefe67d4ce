"""Mount with ``path("instant/", include("instant_signals.urls"))`` (django-instant's paths)."""

from django.urls import path

from . import views

app_name = "instant_signals"

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("get_token/", views.get_token_view, name="get_token"),
    path("subscribe/", views.subscribe_view, name="subscribe"),
    path("collection/", views.collection_view, name="collection"),
]
