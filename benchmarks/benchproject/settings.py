"""Settings of the benchmark project; Centrifugo's address and key come from the environment.

``BENCH_PEER=1`` leaves instant_signals out (the django-instant venv does not have it).
django-instant reads CENTRIFUGO_HOST/PORT/API_KEY and SITE_NAME at import, so they are set here.
"""

import os

SECRET_KEY = "benchmarks-only"
DEBUG = False  # no query log growing in memory
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "benchproject.benchapp"]
if os.environ.get("BENCH_PEER") != "1":
    INSTALLED_APPS.append("instant_signals")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_DB", ":memory:"),
    }
}

CENTRIFUGO_HOST = "http://127.0.0.1"
CENTRIFUGO_PORT = int(os.environ.get("BENCH_CENTRIFUGO_PORT", "8427"))
CENTRIFUGO_API_KEY = os.environ.get("BENCH_CENTRIFUGO_API_KEY", "")
CENTRIFUGO_HMAC_KEY = os.environ.get("BENCH_CENTRIFUGO_HMAC_KEY", "")
SITE_NAME = "Bench site"

INSTANT_SIGNALS = {"TIMEOUT": (2.0, 10.0)}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"instant_signals": {"handlers": ["console"], "level": "WARNING"}},
}
