"""Settings of the small test project. Centrifugo's address and keys are set by the fixtures."""

import os

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "instant_signals",
    "tests.testapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
# Fast hashing keeps the login tests quick.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    # A throwaway PostgreSQL cluster for the tests that ask for it (databases=["pg"]); the
    # conftest starts it on a free port and fills in HOST/PORT before the test databases exist.
    "pg": {"ENGINE": "django.db.backends.postgresql", "NAME": "instant_signals",
           "USER": "postgres", "HOST": "127.0.0.1", "PORT": "1"},
}

# Replaced per test by the centrifugo fixture; an unroutable port makes a forgotten fixture fail.
CENTRIFUGO_HOST = "http://127.0.0.1"
CENTRIFUGO_PORT = 9
CENTRIFUGO_API_KEY = "not-set-by-a-fixture"
CENTRIFUGO_HMAC_KEY = "not-set-by-a-fixture-0123456789abcdef"
SITE_NAME = "Test site"

INSTANT_SIGNALS = {
    "TIMEOUT": (0.5, 2.0),
    "MODELS": {
        "auth.User": {"channels": ["$users_feed"], "fields": "__all__", "level": "staff"},
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"instant_signals": {"handlers": ["console"], "level": "WARNING"}},
}
