"""Settings of the benchmark project; Centrifugo's address and keys come from the environment.

``BENCH_PEER=1`` leaves instant_signals out (the django-instant venv does not have it).
django-instant reads CENTRIFUGO_HOST/PORT/API_KEY and SITE_NAME at import, so they are set here.

Databases (files in ``BENCH_DB_DIR``, tmpfs when there is one):

* ``default``: SQLite with Django's defaults, scenarios 1-5 (as before the redesign);
* ``wal``: SQLite with the settings the docs require for durable mode (WAL set by
  ``init_command``, ``BEGIN IMMEDIATE`` transactions, a 20 s busy timeout), scenarios 6-8;
* ``plain``: SQLite with Django's defaults, the control arm of scenario 6b;
* ``pg`` / ``pgc``: two databases of a throwaway PostgreSQL cluster (``BENCH_PG_PORT``): the
  relay's, and the one Centrifugo's own outbox consumer drains.
"""

import os

import django

SECRET_KEY = "benchmarks-only"
DEBUG = False  # no query log growing in memory
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PEER = os.environ.get("BENCH_PEER") == "1"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "benchproject.benchapp"]
if not PEER:
    INSTALLED_APPS.append("instant_signals")

DB_DIR = os.environ.get("BENCH_DB_DIR", "")


def _sqlite(name: str, **options: object) -> dict:
    return {"ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(DB_DIR, name) if DB_DIR else ":memory:", "OPTIONS": options}


DATABASES = {"default": _sqlite("bench.sqlite3")}
if not PEER and DB_DIR:
    # What the docs require for DELIVERY="outbox" on SQLite (Django 5.1+; check W030-W032).
    DATABASES["wal"] = _sqlite("wal.sqlite3", init_command="PRAGMA journal_mode=WAL;",
                               transaction_mode="IMMEDIATE", timeout=20)
    if django.VERSION < (5, 1):  # no init_command / transaction_mode: WAL is set by the harness
        DATABASES["wal"]["OPTIONS"] = {"timeout": 20}
    DATABASES["plain"] = _sqlite("plain.sqlite3")
if not PEER and os.environ.get("BENCH_PG_PORT"):
    for alias, name in (("pg", "bench"), ("pgc", "bench_consumer")):
        DATABASES[alias] = {
            "ENGINE": "django.db.backends.postgresql", "NAME": name, "USER": "postgres",
            "HOST": "127.0.0.1", "PORT": os.environ["BENCH_PG_PORT"],
        }

CENTRIFUGO_HOST = "http://127.0.0.1"
CENTRIFUGO_PORT = int(os.environ.get("BENCH_CENTRIFUGO_PORT", "8427"))
CENTRIFUGO_API_KEY = os.environ.get("BENCH_CENTRIFUGO_API_KEY", "")
CENTRIFUGO_HMAC_KEY = os.environ.get("BENCH_CENTRIFUGO_HMAC_KEY", "")
SITE_NAME = "Bench site"

INSTANT_SIGNALS = {"TIMEOUT": (2.0, 10.0)}
if os.environ.get("BENCH_DELIVERY"):
    INSTANT_SIGNALS["DELIVERY"] = os.environ["BENCH_DELIVERY"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"instant_signals": {"handlers": ["console"], "level": "WARNING"}},
}
