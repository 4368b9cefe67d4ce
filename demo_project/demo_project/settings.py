"""Settings of the instant_signals demo (SQLite, DEBUG, loopback only).

The Centrifugo settings come from ``.centrifugo/settings.py``, written by
``manage.py installws --write-settings`` (``scripts/demo`` does it). ``DEMO_DATA_DIR`` moves the
database and ``.centrifugo/`` elsewhere (the browser test runs the demo in a temporary folder).
"""

import os
import runpy
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BASE_DIR.parent
DATA_DIR = Path(os.environ.get("DEMO_DATA_DIR") or BASE_DIR)

SECRET_KEY = "demo-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "demo_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
WSGI_APPLICATION = "demo_project.wsgi.application"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "instant_signals",
    "board",
    "live_html",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "db.sqlite3"}}

STATIC_URL = "static/"
# The centrifuge client comes with instant_signals (static/instant_signals/vendor/centrifuge/,
# written by build_support/vendor_centrifuge.py); the page's import map points there.

LOGIN_URL = "/admin/login/"
SITE_NAME = "instant_signals demo"

# Centrifugo: what `manage.py installws --write-settings .centrifugo/settings.py` wrote.
CENTRIFUGO_HOST = "http://127.0.0.1"
CENTRIFUGO_PORT = 8427
CENTRIFUGO_API_KEY = ""
CENTRIFUGO_HMAC_KEY = ""
_ws_settings = DATA_DIR / ".centrifugo" / "settings.py"
if _ws_settings.is_file():
    for _name, _value in runpy.run_path(str(_ws_settings)).items():
        if _name.startswith("CENTRIFUGO_"):
            globals()[_name] = _value

# Token lifetimes in seconds; DEMO_TOKEN_LIFETIME shortens them to watch the client refresh them.
_token_lifetime = int(os.environ.get("DEMO_TOKEN_LIFETIME") or 300)
INSTANT_SIGNALS = {
    "TIMEOUT": (1.0, 3.0),
    "CONNECTION_TOKEN_LIFETIME": _token_lifetime,
    "SUBSCRIPTION_TOKEN_LIFETIME": _token_lifetime,
    # Models we don't own are declared here. The team roster: every logged-in user reads
    # "$team:members" (no email in it), and its presence shows who is online now.
    "MODELS": {
        "auth.User": {"channels": ["$team:members"], "level": "users", "presence": True,
                      "fields": ["id", "username", "is_staff", "last_login"]},
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"instant_signals": {"handlers": ["console"], "level": "INFO"}},
}
