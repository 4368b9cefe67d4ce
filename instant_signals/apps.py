"""The app config: registers the system checks, the ``INSTANT_SIGNALS["MODELS"]`` declarations,
the logout receiver that ends a user's connections, and database capture's connection flag and
``post_migrate`` hook."""

from django.apps import AppConfig


class InstantSignalsConfig(AppConfig):
    name = "instant_signals"
    verbose_name = "Instant signals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, once the models are loaded: the checks read Channel rows.
        from django.contrib.auth.signals import user_logged_out

        from . import checks  # noqa: F401  (registers the system checks)
        from .access import end_connections_on_logout
        from .capture.database import flag, triggers
        from .registry import broadcast_registry

        broadcast_registry.register_from_settings()
        # Database capture: disable_broadcasts() reaches the triggers; migrate installs them.
        flag.install()
        triggers.keep_in_step(broadcast_registry.capture.table)
        # readers= paths of @broadcast decorators could not be followed while models loaded.
        broadcast_registry.check_readers()
        # Any logout ends the user's Centrifugo connections, whichever view logged out.
        user_logged_out.connect(end_connections_on_logout,
                                dispatch_uid="instant_signals.end_connections_on_logout")
