from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "live_html"
urlpatterns = [
    path("", views.index, name="index"),
    path("turbo/", views.turbo_page, name="turbo"),
    path("htmx/", views.htmx_page, name="htmx"),
    path("refresh/turbo/", views.refresh_turbo, name="refresh_turbo"),
    path("refresh/htmx/", views.refresh_htmx, name="refresh_htmx"),
    path("refresh/htmx/board/", views.htmx_board, name="htmx_board"),
    path("cards/", views.card_create, name="card_create"),
    path("cards/<int:pk>/vote/", views.card_vote, name="card_vote"),
    path("cards/<int:pk>/delete/", views.card_delete, name="card_delete"),
    path("cards/vote-all/", views.vote_all, name="vote_all"),
    path("memos/", views.memo_create, name="memo_create"),
    path("login/", auth_views.LoginView.as_view(template_name="live_html/login.html"),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="live_html:index"), name="logout"),
]
