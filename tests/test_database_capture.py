"""Database capture (``INSTANT_SIGNALS["CAPTURE"] = "database"``), on SQLite and PostgreSQL.

Triggers on every declared table record each committed write, whoever made it, in the change
table; ``manage.py relay_outbox`` turns the rows into the publications signal mode makes. Here:
a real Centrifugo and a real centrifuge-python client keep a replica of each channel, compared
with the database after every kind of write (the ORM's, raw SQL through ``connection.cursor()``,
and another OS process that is not Django: the ``sqlite3`` module or psycopg in a subprocess);
rollbacks and savepoint rollbacks leave nothing; ``disable_broadcasts()`` still silences the
writes made inside it; a row the relay cannot map becomes a dead letter that blocks nothing;
the drift between triggers and declarations is a system check naming the fix.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time

import pytest
from django.contrib.auth.models import User
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections, transaction
from django.db.models import F

from instant_signals import broadcast_failed, broadcast_registry, disable_broadcasts
from instant_signals.models import ChangeEntry, OutboxEntry
from instant_signals.tokens import connection_token
from tests.testapp.models import (
    DEFAULT_SHELF, LOST_AND_FOUND, Bar, Book, Counter, Item, LoudCounter, Place, QuietCounter,
    Restaurant, Shelf,
)

PG = "pg"
pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", PG])]
on_both = pytest.mark.parametrize("alias", ["default", PG], ids=["sqlite", "postgresql"])

COUNTER = ("id", "title", "count", "owner_id")
DECLARATIONS = [
    (Counter, {"channels": ["counters"], "fields": ["id", "title", "count", "owner"]}),
    (LoudCounter, {"channels": ["loud"], "fields": ["id", "title"]}),
    (Place, {"channels": ["places"], "fields": ["id", "name"]}),
    (Restaurant, {"channels": ["restaurants"], "fields": ["place_ptr", "name", "pizza"]}),
    (Book, {"channels": ["books"], "fields": ["id", "title", "shelf", "spare", "fallback"]}),
]


@pytest.fixture(autouse=True)
def declared():
    for model, options in DECLARATIONS:
        broadcast_registry.register(model, **options)
    yield
    for model, _ in DECLARATIONS:
        broadcast_registry.unregister(model)


@pytest.fixture
def capture(settings, alias):
    """Database mode on ``alias``: the setting, then the triggers (dropped afterwards)."""
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "CAPTURE": "database"}
    call_command("instant_triggers", database=alias, stdout=io.StringIO())
    yield alias
    call_command("instant_triggers", "--drop", database=alias, stdout=io.StringIO())


def changes(alias):
    return list(ChangeEntry.objects.using(alias).order_by("id"))


def relay(alias) -> str:
    out = io.StringIO()
    call_command("relay_outbox", "--once", database=alias, stdout=out)
    return out.getvalue()


def view(queryset, attnames, pk="id"):
    return {row[pk]: row for row in queryset.values(*attnames)}


def counters(alias):
    return view(Counter.objects.using(alias), COUNTER)


# -- triggers ------------------------------------------------------------------------------------

@on_both
def test_triggers_record_every_write_with_its_row_images(capture, alias):
    with connections[alias].cursor() as cursor:
        cursor.execute("INSERT INTO testapp_counter (title, count) VALUES (%s, %s)", ["raw", 1])
    c = Counter.objects.using(alias).get(title="raw")
    Counter.objects.using(alias).filter(pk=c.pk).update(count=F("count") + 1)
    Counter.objects.using(alias).filter(pk=c.pk).delete()
    rows = changes(alias)
    assert [(r.table_name, r.op, r.row_pk) for r in rows] == [
        ("testapp_counter", op, str(c.pk)) for op in "IUD"]
    assert rows[0].old_row is None and rows[0].new_row["count"] == 1
    assert rows[1].old_row["count"] == 1 and rows[1].new_row["count"] == 2
    assert rows[2].old_row["title"] == "raw" and rows[2].new_row is None
    assert (rows[0].txid is None) == (alias == "default")


@on_both
def test_rollbacks_leave_no_change_rows(capture, alias):
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        with transaction.atomic(using=alias):
            Counter.objects.using(alias).create(title="gone")
            raise Rollback
    with transaction.atomic(using=alias):
        kept = Counter.objects.using(alias).create(title="kept")
        try:
            with transaction.atomic(using=alias):
                kept.title = "rolled back"
                kept.save()
                raise Rollback
        except Rollback:
            pass
    assert [(r.op, r.new_row["title"]) for r in changes(alias)] == [("I", "kept")]


@on_both
def test_disable_broadcasts_reaches_the_triggers(capture, alias):
    with disable_broadcasts():
        Counter.objects.using(alias).create(title="silent")
        with connections[alias].cursor() as cursor:
            cursor.execute("UPDATE testapp_counter SET count = 5")
            cursor.execute("SELECT title FROM testapp_counter")
            assert cursor.fetchall() == [("silent",)]  # the statement's own results
        with transaction.atomic(using=alias):
            Counter.objects.using(alias).create(title="silent too")
    Counter.objects.using(alias).create(title="heard")
    assert [r.new_row["title"] for r in changes(alias)] == ["heard"]


@on_both
def test_drift_is_a_system_check_naming_the_fix(capture, alias, settings):
    def drift():
        return [m for m in run_checks(databases=[alias]) if m.id in (
            "instant_signals.W060", "instant_signals.W061")]

    assert drift() == []
    call_command("instant_triggers", "--check", database=alias, stdout=io.StringIO())
    with connections[alias].cursor() as cursor:
        cursor.execute("DROP TRIGGER instant_signals_capture_testapp_counter_update"
                       if alias == "default" else
                       "DROP TRIGGER instant_signals_capture_update ON testapp_counter")
    (message,) = drift()
    assert message.id == "instant_signals.W060" and "testapp_counter" in message.msg
    assert "manage.py instant_triggers" in message.hint
    with pytest.raises(CommandError, match="missing: trigger"):
        call_command("instant_triggers", "--check", database=alias, stdout=io.StringIO())
    out = io.StringIO()
    call_command("instant_triggers", database=alias, stdout=out)
    assert "missing" in out.getvalue() and drift() == []

    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "CAPTURE": "signals"}
    (message,) = drift()
    assert message.id == "instant_signals.W061" and "--drop" in message.hint
