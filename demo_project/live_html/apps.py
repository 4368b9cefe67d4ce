from django.apps import AppConfig


class LiveHtmlConfig(AppConfig):
    name = "live_html"
    verbose_name = "Live HTML (Turbo and htmx)"
    default_auto_field = "django.db.models.BigAutoField"
