"""System checks (``manage.py check``): settings, declarations, and agreement with Centrifugo.

Missing Centrifugo keys are warnings (so ``migrate``, ``test`` and ``runserver`` run in a
project or CI without them) and errors under ``check --deploy``; ``publish()`` then raises a
clear ``ImproperlyConfigured``. The ``database`` checks (``check --database default``, also run by
``migrate``) look at ``Channel`` rows.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DatabaseError
from django.urls import NoReverseMatch, reverse

from . import conf, delivery, levels
from .bulk import BroadcastQuerySet
from .channels import is_private
from .models import ChangeEntry, Channel, OutboxEntry
from .registry import broadcast_registry

FIX_CONFIG = ("run `python manage.py installws` (it keeps your secrets) and restart Centrifugo "
              "(`python manage.py runws`)")


def _url_ok(value: Any, schemes: tuple[str, ...]) -> bool:
    if not isinstance(value, str):
        return False
    parsed = urlparse(value)
    return parsed.scheme in schemes and bool(parsed.netloc)


def _missing_keys() -> list[str]:
    return [name for name in ("CENTRIFUGO_API_KEY", "CENTRIFUGO_HMAC_KEY")
            if not isinstance(getattr(settings, name, None), str)
            or not getattr(settings, name)]


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    hint = ("Run `python manage.py installws`: it prints them (or writes an env file with "
            "--write-env); the README shows how to read them from the environment.")
    for name in _missing_keys():
        messages.append(Warning(
            f"{name} is not set: model events and publish() cannot reach Centrifugo.",
            hint=hint, id="instant_signals.W002" if name.endswith("API_KEY") else
            "instant_signals.W003"))
    hmac = getattr(settings, "CENTRIFUGO_HMAC_KEY", None)
    if isinstance(hmac, str) and 0 < len(hmac) < 32:
        messages.append(Warning(
            "CENTRIFUGO_HMAC_KEY is shorter than 32 characters; tokens signed with it are weak.",
            hint="Use a long random key (installws generates one).", id="instant_signals.W001"))

    def err(id_: int, msg: str, hint: str) -> None:
        messages.append(Error(msg, hint=hint, id=f"instant_signals.E{id_:03d}"))

    port = getattr(settings, "CENTRIFUGO_PORT", None)
    if port is not None and (not isinstance(port, int) or isinstance(port, bool)
                             or not 0 < port < 65536):
        err(3, f"CENTRIFUGO_PORT must be an integer from 1 to 65535, not {port!r}.",
            "The default is 8427.")
    host = getattr(settings, "CENTRIFUGO_HOST", None)
    if host is not None and not _url_ok(host, ("http", "https")):
        err(4, f"CENTRIFUGO_HOST must be an http:// or https:// URL, not {host!r}.",
            'For example "http://localhost".')
    api_url = getattr(settings, "CENTRIFUGO_API_URL", None)
    if api_url is not None and not _url_ok(api_url, ("http", "https")):
        err(5, f"CENTRIFUGO_API_URL must be an http(s) URL, not {api_url!r}.",
            'For example "http://localhost:8427/api".')
    ws_url = getattr(settings, "CENTRIFUGO_WS_URL", None)
    if ws_url is not None and not _url_ok(ws_url, ("ws", "wss", "http", "https")):
        err(6, f"CENTRIFUGO_WS_URL must be a ws:// or wss:// URL, not {ws_url!r}.",
            'For example "ws://localhost:8427/connection/websocket".')
    messages.extend(_check_app_dict())
    return messages


@register(Tags.security, deploy=True)
def check_deploy_keys(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Under ``check --deploy`` missing keys are errors: a deployment must not run without them."""
    return [Error(f"{name} is not set.", hint="Set it from the environment (see the README).",
                  id="instant_signals.E001" if name.endswith("API_KEY") else
                  "instant_signals.E002") for name in _missing_keys()]


def _check_app_dict() -> list[CheckMessage]:
    value = getattr(settings, "INSTANT_SIGNALS", None)
    if value is None:
        return []
    if not isinstance(value, dict):
        return [Error("INSTANT_SIGNALS must be a dict.", id="instant_signals.E007")]
    errors: list[CheckMessage] = []
    unknown = sorted(set(value) - set(conf.DEFAULTS))
    if unknown:
        errors.append(Error(f"INSTANT_SIGNALS has unknown keys: {', '.join(unknown)}.",
                            hint=f"Known keys: {', '.join(sorted(conf.DEFAULTS))}.",
                            id="instant_signals.E012"))
    modes = delivery.modes()
    if value.get("DELIVERY", "on_commit") not in modes:
        errors.append(Error(f"INSTANT_SIGNALS['DELIVERY'] must be one of {modes}, "
                            f"not {value['DELIVERY']!r}.", id="instant_signals.E008"))
    capture = value.get("CAPTURE", "signals")
    if capture not in ("signals", "database"):
        errors.append(Error(f"INSTANT_SIGNALS['CAPTURE'] must be \"signals\" or \"database\", "
                            f"not {capture!r}.", id="instant_signals.E013"))
    elif capture == "database":
        from django.db import connections

        for alias in connections:
            vendor = connections[alias].vendor
            if vendor not in ("sqlite", "postgresql"):
                errors.append(Error(
                    f"INSTANT_SIGNALS['CAPTURE'] is \"database\", but DATABASES[{alias!r}] is "
                    f"{vendor}: database capture has triggers for SQLite and PostgreSQL only.",
                    hint='Use "signals" (the default) with this database.',
                    id="instant_signals.E013"))
    timeout = value.get("TIMEOUT", conf.DEFAULTS["TIMEOUT"])
    if not _timeout_ok(timeout):
        errors.append(Error(f"INSTANT_SIGNALS['TIMEOUT'] must be a positive number or a "
                            f"(connect, read) pair of them, not {timeout!r}.",
                            id="instant_signals.E009"))
    for key in ("CONNECTION_TOKEN_LIFETIME", "SUBSCRIPTION_TOKEN_LIFETIME", "BATCH_SIZE",
                "MAX_PAYLOAD_BYTES", "OUTBOX_PARTITIONS", "OUTBOX_MAX_ATTEMPTS",
                "OUTBOX_MAX_AGE", "SUBSCRIBE_MAX_CHANNELS",
                "COLLECTION_MAX_ROWS"):
        item = value.get(key, conf.DEFAULTS[key])
        if not isinstance(item, int) or isinstance(item, bool) or item <= 0:
            errors.append(Error(f"INSTANT_SIGNALS['{key}'] must be a positive integer, "
                                f"not {item!r}.", id="instant_signals.E010"))
    if not isinstance(value.get("MODELS", {}), dict):
        errors.append(Error("INSTANT_SIGNALS['MODELS'] must be a dict of model label to options.",
                            id="instant_signals.E011"))
    return errors


def _timeout_ok(value: Any) -> bool:
    def positive(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0

    if positive(value):
        return True
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(map(positive, value))


@register()
def check_declarations(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """What ``fields="__all__"``/``exclude`` left out, and drift from Centrifugo's config."""
    messages: list[CheckMessage] = []
    for declaration in broadcast_registry.declarations():
        if declaration.dropped_secrets:
            messages.append(Warning(
                f"@broadcast on {declaration.label} leaves out secret-looking fields: "
                f"{', '.join(declaration.dropped_secrets)}.",
                hint="They are never published. If one is not a secret, list the fields to "
                     "publish with fields=[...].", obj=declaration.model,
                id="instant_signals.W010"))
    messages.extend(_check_centrifugo_config())
    return messages


MANAGER_FIX = ("objects = BroadcastManager() (from instant_signals.bulk import BroadcastManager), or "
               "a manager of your own built with YourManager.from_queryset(BroadcastQuerySet)")


@register()
def check_managers(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Managers of registered models whose ``update()``/``bulk_create()``/``bulk_update()``
    publish nothing (Django sends no signal for them): W050 the default manager (related
    managers, ``user.task_set``, are built from it), W051 another manager of the model."""
    messages: list[CheckMessage] = []
    for model in broadcast_registry.get_models():
        default = model._meta.default_manager
        for manager in model._meta.managers:
            if isinstance(manager.get_queryset(), BroadcastQuerySet):
                continue
            label = model._meta.label
            if manager is default:
                messages.append(Warning(
                    f"{label} is registered with @broadcast, but its default manager "
                    f"{label}.{manager.name} is not broadcast-aware: {manager.name}.update(), "
                    f"bulk_create(), bulk_update() and its related managers' update() publish "
                    f"nothing.",
                    hint=f"On the model: {MANAGER_FIX}. For a model you don't own, call "
                         f"instant_signals.bulk.broadcast_instances() after such writes and "
                         f"silence this warning.",
                    obj=model, id="instant_signals.W050"))
            else:
                messages.append(Warning(
                    f"{label}.{manager.name} is not broadcast-aware: its update(), "
                    f"bulk_create() and bulk_update() publish nothing.",
                    hint=f"Build it from BroadcastQuerySet, e.g. {manager.name} = "
                         f"YourManager.from_queryset(BroadcastQuerySet)().",
                    obj=model, id="instant_signals.W051"))
    return messages


def _check_centrifugo_config() -> list[CheckMessage]:
    path = conf.centrifugo_config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return []  # Centrifugo is configured elsewhere: nothing to compare with
    except (OSError, ValueError) as exc:
        return [Warning(f"Cannot read the Centrifugo config {path}: {exc}.",
                        hint=FIX_CONFIG, id="instant_signals.W011")]
    channel = config.get("channel") if isinstance(config, dict) else None
    namespaces = {n.get("name"): n for n in (channel or {}).get("namespaces", [])
                  if isinstance(n, dict)}
    namespaces[""] = (channel or {}).get("without_namespace") or {}
    messages: list[CheckMessage] = _check_config_agrees_with_settings(config, path)
    for name, needs in sorted(broadcast_registry.namespaces().items()):
        found = namespaces.get(name)
        if found is None:
            messages.append(Warning(
                f"Channels of namespace {name!r} are declared with @broadcast, but {path} has "
                f"no such namespace: Centrifugo refuses them (error 102 unknown channel).",
                hint=FIX_CONFIG + ".", id="instant_signals.W011"))
            continue
        opens = bool(found.get("allow_subscribe_for_client")
                     or found.get("allow_subscribe_for_anonymous"))
        if opens and not needs["public"] and name:
            messages.append(Warning(
                f"Namespace {name!r} in {path} lets clients subscribe without a token, but every "
                f"declared channel in it is private.", hint=FIX_CONFIG + ".",
                id="instant_signals.W012"))
        if needs["presence"] and not found.get("presence"):
            messages.append(Warning(
                f"@broadcast(presence=True) channels of namespace {name or '(none)'!r} need "
                f"presence, which {path} does not enable.", hint=FIX_CONFIG + ".",
                id="instant_signals.W013"))
        wanted = needs.get("options") or {}
        wrong = [f"{key}={wanted[key]!r}" for key in sorted(wanted)
                 if found.get(key) != wanted[key]]
        if wrong:
            messages.append(Warning(
                f"The output format of channels of namespace {name or '(none)'!r} needs "
                f"{', '.join(wrong)} there, which {path} does not set.", hint=FIX_CONFIG + ".",
                id="instant_signals.W018"))
    return messages


def _check_config_agrees_with_settings(config: Any, path: Any) -> list[CheckMessage]:
    """The keys Django uses are the ones Centrifugo was configured with, and the site's origins
    may open a websocket. (Never prints a key.)"""
    if not isinstance(config, dict):
        return []
    client = _section(config, "client")
    token = _section(client, "token")
    fix_keys = (f"Load the keys installws wrote (`set -a; . ./.env; set +a`), or run "
                f"`python manage.py installws --write-env .env` and restart Centrifugo")
    messages: list[CheckMessage] = []
    for setting, found, refused, id_ in (
            ("CENTRIFUGO_API_KEY", _section(config, "http_api").get("key"),
             "publish() would be refused (401 Unauthorized)", "W015"),
            ("CENTRIFUGO_HMAC_KEY", token.get("hmac_secret_key"),
             "Centrifugo would refuse every token (3500 invalid token)", "W016")):
        mine = getattr(settings, setting, None)
        if isinstance(found, str) and found and isinstance(mine, str) and mine and mine != found:
            messages.append(Warning(
                f"{setting} is not the key of the Centrifugo config {path}: {refused}.",
                hint=fix_keys + ".", id=f"instant_signals.{id_}"))
    allowed = client.get("allowed_origins")
    if isinstance(allowed, list) and "*" not in allowed:
        missing = [origin for origin in _site_origins() if origin not in allowed]
        if missing:
            messages.append(Warning(
                f"The Centrifugo config {path} does not allow the origin(s) "
                f"{', '.join(missing)}: browsers on them cannot open the websocket.",
                hint="Run `python manage.py installws --origin ORIGIN` for each (it keeps "
                     "your secrets) and restart Centrifugo.", id="instant_signals.W017"))
    return messages


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    found = config.get(name)
    return found if isinstance(found, dict) else {}


def _site_origins() -> list[str]:
    """The origins the settings name for certain: ``CSRF_TRUSTED_ORIGINS`` without wildcards."""
    origins = getattr(settings, "CSRF_TRUSTED_ORIGINS", None) or []
    return [o.rstrip("/") for o in origins if isinstance(o, str) and "*" not in o]


@register(Tags.urls)
def check_urls(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The browser module needs the token endpoints: ``include("instant_signals.urls")``."""
    try:
        reverse("instant_signals:get_token")
    except NoReverseMatch:
        return [Warning(
            "instant_signals' URLs are not included: browsers get no tokens (get_token/ "
            "answers 404) and live pages stay blank.",
            hint='Add path("instant/", include("instant_signals.urls")) to your ROOT_URLCONF.',
            id="instant_signals.W014")]
    except Exception:  # noqa: BLE001 - a broken URLconf is reported by Django's own checks
        return []
    return []


@register(Tags.database)
def check_channel_rows(app_configs: Any = None, databases: Any = None,
                       **kwargs: Any) -> list[CheckMessage]:
    """``Channel`` rows Centrifugo would serve to anyone, and rows a declaration overrides."""
    if not databases or "default" not in databases:
        return []
    try:
        rows = list(Channel.objects.values_list("name", "level"))
    except DatabaseError:
        return []  # not migrated yet
    messages: list[CheckMessage] = []
    for name, level in rows:
        if level != levels.PUBLIC and not is_private(name):
            messages.append(Error(
                f"Channel {name!r} has level {level!r} but no \"$\": Centrifugo lets anyone "
                f"subscribe to it without a token.",
                hint=f'Rename it to "${name}" (or make it public).', id="instant_signals.E020"))
        elif broadcast_registry.may_read(None, name) is not None:
            messages.append(Warning(
                f"Channel row {name!r} names a channel declared with @broadcast; the declaration "
                f"decides who reads it and the row is ignored.",
                hint="Delete the row, or change the declaration's level=/authorize=.",
                id="instant_signals.W021"))
    return messages


@register(Tags.database)
def check_outbox_rows(app_configs: Any = None, databases: Any = None,
                      **kwargs: Any) -> list[CheckMessage]:
    """W040 dead letters in the outbox, W041 its oldest pending row is older than
    ``OUTBOX_MAX_AGE`` (no relay runs, or it cannot deliver)."""
    from datetime import timedelta

    from django.utils import timezone

    messages: list[CheckMessage] = []
    for alias in databases or ():
        rows = OutboxEntry.objects.using(alias)
        try:
            dead = rows.dead().count()
            oldest = rows.pending().order_by("id").values_list("created_at", flat=True).first()
        except DatabaseError:
            continue  # not migrated yet
        if dead:
            messages.append(Warning(
                f"The outbox of database {alias!r} holds {dead} dead letter(s): rows Centrifugo "
                f"refused for good, never sent.",
                hint="See why in OutboxEntry.objects.dead() (error, attempts); fix the cause, then "
                     "delete them or clear dead_at to send them again "
                     "(docs/how-to/durable-delivery.md).", id="instant_signals.W040"))
        max_age = int(conf.app_setting("OUTBOX_MAX_AGE"))
        if oldest is not None and oldest < timezone.now() - timedelta(seconds=max_age):
            messages.append(Warning(
                f"The oldest pending row of the outbox of database {alias!r} was written at "
                f"{oldest:%Y-%m-%d %H:%M:%S} UTC, more than OUTBOX_MAX_AGE ({max_age} s) ago.",
                hint="Is `manage.py relay_outbox` (or Centrifugo's consumer) running and able to "
                     "reach Centrifugo? Its log says why partitions wait.",
                id="instant_signals.W041"))
    return messages


@register()
def check_outbox_sqlite(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``DELIVERY="outbox"`` on SQLite: the settings that let the site's writers and
    ``relay_outbox`` share the file without "database is locked" (measured: benchmarks S6b).

    W030 WAL (readers never block the writer and the writer never blocks readers), W031
    ``BEGIN IMMEDIATE`` transactions (a transaction that reads then writes otherwise fails at
    once with "database is locked" when another connection wrote meanwhile: SQLite does not wait
    where waiting could deadlock), W032 a busy timeout of at least 20 s (how long a writer waits
    for the write lock; Python's default is 5 s). Only what the settings say can be checked: WAL
    set another way (it is stored in the file) or a backend that begins IMMEDIATE itself is
    fine, then silence the warning with ``SILENCED_SYSTEM_CHECKS``. In-memory databases are
    skipped (one connection, nothing to share).
    """
    import django
    from django.db import connections

    try:
        if not delivery.is_durable():
            return []
    except Exception:  # noqa: BLE001 - a malformed INSTANT_SIGNALS is reported by E007/E012
        return []
    modern = django.VERSION >= (5, 1)
    messages: list[CheckMessage] = []
    for alias in connections:
        try:
            if connections[alias].vendor != "sqlite":
                continue
        except Exception:  # noqa: BLE001 - a broken DATABASES entry is Django's to report
            continue
        db = connections.settings[alias]
        name = str(db.get("NAME") or "")
        if name in ("", ":memory:") or "mode=memory" in name:
            continue
        options = db.get("OPTIONS") or {}
        where = f"DATABASES[{alias!r}]"
        init = str(options.get("init_command") or "").replace(" ", "").lower()
        if "journal_mode=wal" not in init:
            messages.append(Warning(
                f'INSTANT_SIGNALS["DELIVERY"] is "outbox" and {where} is SQLite without WAL: '
                f"the site's writers and relay_outbox block each other and fail with "
                f'"database is locked".',
                hint=('Add "init_command": "PRAGMA journal_mode=WAL;" to its OPTIONS.' if modern
                      else "Run `PRAGMA journal_mode=WAL` once on the file (it is kept) or in a "
                           "connection_created receiver, then silence this warning.")
                + " See docs/how-to/durable-delivery.md (SQLite: the settings it needs).", id="instant_signals.W030"))
        if str(options.get("transaction_mode") or "").upper() != "IMMEDIATE":
            messages.append(Warning(
                f'INSTANT_SIGNALS["DELIVERY"] is "outbox" and {where} is SQLite with deferred '
                f'transactions: a transaction that reads before it writes fails with "database '
                f'is locked" when relay_outbox or another writer wrote meanwhile.',
                hint=('Add "transaction_mode": "IMMEDIATE" to its OPTIONS.' if modern else
                      "Django before 5.1 has no transaction_mode: use a database backend whose "
                      '_start_transaction_under_autocommit() runs "BEGIN IMMEDIATE" (see the '
                      "docs/how-to/durable-delivery.md), then silence this warning.")
                + " See docs/how-to/durable-delivery.md (SQLite: the settings it needs).", id="instant_signals.W031"))
        timeout = options.get("timeout", 5)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 20:
            messages.append(Warning(
                f'INSTANT_SIGNALS["DELIVERY"] is "outbox" and {where} is SQLite with a busy '
                f"timeout of {timeout!r} s: a writer gives up on the write lock that soon.",
                hint='Add "timeout": 20 (seconds) to its OPTIONS.', id="instant_signals.W032"))
    return messages


@register(Tags.database)
def check_capture(app_configs: Any = None, databases: Any = None,
                  **kwargs: Any) -> list[CheckMessage]:
    """Database capture: W060 triggers not in step with the declarations (a declared table
    without its trigger, a stale one, one on a table no longer declared), W061 capture triggers
    while ``CAPTURE`` is not ``"database"``, W062 dead letters in the change table, W063 its
    oldest pending row is older than ``OUTBOX_MAX_AGE`` (no relay runs, or it is held back)."""
    from datetime import timedelta

    from django.db import connections
    from django.utils import timezone

    from .capture import database
    from .capture.database import triggers

    messages: list[CheckMessage] = []
    on = database.enabled()
    for alias in databases or ():
        conn = connections[alias]
        if conn.vendor not in database.VENDORS:
            continue
        fix = triggers.FIX + ("" if alias == "default" else f" --database {alias}")
        try:
            todo = triggers.plan(conn, broadcast_registry.capture.table if on else None)
        except DatabaseError:
            continue
        listed = "; ".join(todo.describe()[:5]) + ("; ..." if len(todo.describe()) > 5 else "")
        if todo and on:
            messages.append(Warning(
                f"The capture triggers of database {alias!r} are not in step with the "
                f"declarations ({listed}): writes of those tables are not captured as declared.",
                hint=f"Run `{fix}` (migrate does it too).", id="instant_signals.W060"))
        elif todo.extra and not on:
            messages.append(Warning(
                f"Database {alias!r} has capture triggers ({listed}) but INSTANT_SIGNALS"
                f"['CAPTURE'] is not \"database\": they fill the change table with rows nothing "
                f"publishes.", hint=f"Run `{fix} --drop`, or set CAPTURE to \"database\".",
                id="instant_signals.W061"))
        rows = ChangeEntry.objects.using(alias)
        try:
            dead = rows.dead().count()
            oldest = rows.pending().order_by("id").values_list("created_at", flat=True).first()
        except DatabaseError:
            continue  # not migrated yet
        if dead:
            messages.append(Warning(
                f"The change table of database {alias!r} holds {dead} dead letter(s): captured "
                f"writes the relay could not map to their model, never published.",
                hint="See why in ChangeEntry.objects.dead() (error); fix the cause, then delete "
                     "them or clear dead_at to try again (docs/explanation/capture.md).",
                id="instant_signals.W062"))
        max_age = int(conf.app_setting("OUTBOX_MAX_AGE"))
        if oldest is not None and oldest < timezone.now() - timedelta(seconds=max_age):
            messages.append(Warning(
                f"The oldest pending captured change of database {alias!r} was written at "
                f"{oldest:%Y-%m-%d %H:%M:%S} UTC, more than OUTBOX_MAX_AGE ({max_age} s) ago.",
                hint="Is `manage.py relay_outbox` running? On PostgreSQL a transaction left "
                     "open holds publication back (pg_stat_activity shows it).",
                id="instant_signals.W063"))
    return messages
