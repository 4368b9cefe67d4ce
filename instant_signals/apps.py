"""The app config: registers the system checks and the ``INSTANT_SIGNALS["MODELS"]`` declarations."""

from django.apps import AppConfig


class InstantSignalsConfig(AppConfig):
    name = "instant_signals"
    verbose_name = "Instant signals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, once the models are loaded: the checks read Channel rows.
        from . import checks  # noqa: F401  (registers the system checks)
        from .registry import broadcast_registry

        broadcast_registry.register_from_settings()
