"""PostgreSQL: statement-level ``AFTER`` triggers with transition tables, one function for all.

Per declared table, three triggers (``FOR EACH STATEMENT``, ``REFERENCING OLD TABLE``/``NEW
TABLE``) call one function, ``instant_signals_capture(<pk column>)``: one call per statement,
however many rows it wrote, and one ``INSERT ... SELECT`` of ``to_jsonb()`` images into the
change table. The images hold every column the row has (a column added or dropped outside
Django changes the images, never breaks the trigger); an update pairs old and new rows by
their key (a row whose key changed is a delete and an insert).

Each change row carries ``txid_current()``: the relay publishes a row only once every
transaction that could precede it has finished (``relay``'s horizon). ``txid_current()`` and
``txid_snapshot_xmin()`` exist on every supported version (``pg_current_xact_id()`` is their
PostgreSQL 13+ name).

What the owner of the tables may do, and nothing more: no superuser, no ``wal_level``, no
replication slot. The function is ``SECURITY DEFINER`` (owned by the user that ran
``migrate``) with a fixed ``search_path``, so another role that writes a declared table needs
no privilege on the change table. Its body cannot fail the user's statement: an error (the
change table dropped, say) is caught, the change is lost and PostgreSQL logs a ``WARNING``.
A statement that wrote rows notifies ``CHANNEL``, which wakes the relay.

Suppression (``flag``): ``set_config('instant_signals.off', 'on', false)`` before a statement
run inside ``disable_broadcasts()``, reset right after it; a rolled-back statement's setting is
rolled back with it. Other sessions never have it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from ...delivery.outbox.wake import CHANGES_CHANNEL
from .objects import PREFIX, Installed, Object

FUNCTION = "instant_signals_capture"
CHANNEL = CHANGES_CHANNEL  # the NOTIFY channel the relay LISTENs to
SETTING = "instant_signals.off"
_OLD, _NEW = "instant_signals_old", "instant_signals_new"
_OPS = (("insert", None, _NEW), ("update", _OLD, _NEW), ("delete", _OLD, None))

_BODY = """
DECLARE
  key text := TG_ARGV[0];
  xid bigint;
  written bigint;
BEGIN
  IF current_setting('{setting}', true) = 'on' THEN
    RETURN NULL;
  END IF;
  xid := txid_current();
  IF TG_OP = 'INSERT' THEN
    INSERT INTO {change} (table_name, op, row_pk, old_row, new_row, txid, created_at, attempts)
    SELECT TG_TABLE_NAME, 'I', r.j ->> key, NULL, r.j, xid, now(), 0
    FROM (SELECT to_jsonb(t) AS j FROM {new} t) r;
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO {change} (table_name, op, row_pk, old_row, new_row, txid, created_at, attempts)
    SELECT TG_TABLE_NAME, 'U', coalesce(b.j ->> key, a.j ->> key), a.j, b.j, xid, now(), 0
    FROM (SELECT to_jsonb(t) AS j FROM {old} t) a
    FULL JOIN (SELECT to_jsonb(t) AS j FROM {new} t) b ON (a.j ->> key) = (b.j ->> key);
  ELSE
    INSERT INTO {change} (table_name, op, row_pk, old_row, new_row, txid, created_at, attempts)
    SELECT TG_TABLE_NAME, 'D', r.j ->> key, r.j, NULL, xid, now(), 0
    FROM (SELECT to_jsonb(t) AS j FROM {old} t) r;
  END IF;
  GET DIAGNOSTICS written = ROW_COUNT;
  IF written > 0 THEN
    PERFORM pg_notify('{channel}', '');
  END IF;
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'instant_signals: a change of table % was not captured: %', TG_TABLE_NAME, SQLERRM;
  RETURN NULL;
END
"""


def _qn(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _schema_of(conn: BaseDatabaseWrapper, table: str) -> str:
    """The schema that holds ``table`` as the connection sees it (else the current one)."""
    with conn.cursor() as cursor:
        cursor.execute("SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                       "c.relnamespace WHERE c.oid = to_regclass(%s)", [_qn(table)])
        found = cursor.fetchone()
        if found is None:
            cursor.execute("SELECT current_schema()")
            found = cursor.fetchone()
    return str(found[0])


def body(change: str) -> str:
    return _BODY.format(setting=SETTING, change=change, old=_OLD, new=_NEW, channel=CHANNEL)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def expected(conn: BaseDatabaseWrapper, declared: list[type[models.Model]],
             change_table: str) -> list[Object]:
    schema = _schema_of(conn, change_table)
    function = f"{_qn(schema)}.{_qn(FUNCTION)}"
    source = body(f"{_qn(schema)}.{_qn(change_table)}")
    objects = [Object(
        key=("", FUNCTION), what=f"function {schema}.{FUNCTION}()", signature=_digest(source),
        create=[f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql "
                f"SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $instant$"
                f"{source}$instant$"],
        drop=[f"DROP FUNCTION IF EXISTS {function}() CASCADE"])]
    for model in declared:
        table = model._meta.db_table
        pk = str(model._meta.pk.column)
        for event, old, new in _OPS:
            name = f"{PREFIX}{event}"
            referencing = " ".join(
                part for part in (f"OLD TABLE AS {old}" if old else "",
                                  f"NEW TABLE AS {new}" if new else "") if part)
            objects.append(Object(
                key=(table, name), what=f"trigger {name} on {table}",
                signature=_signature(pk, old, new),
                create=[f"CREATE TRIGGER {name} AFTER {event.upper()} ON {_qn(table)} "
                        f"REFERENCING {referencing} FOR EACH STATEMENT "
                        f"EXECUTE FUNCTION {function}({_quote(pk)})"],
                drop=[f"DROP TRIGGER IF EXISTS {name} ON {_qn(table)}"]))
    return objects


def _signature(pk: str, old: str | None, new: str | None) -> str:
    return f"{FUNCTION}({pk}) old={old or ''} new={new or ''}"


def installed(conn: BaseDatabaseWrapper) -> list[Installed]:
    """The capture function and triggers on the tables this connection sees."""
    found: list[Installed] = []
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT n.nspname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = "
            "p.pronamespace WHERE p.proname = %s AND n.nspname = ANY(current_schemas(false))",
            [FUNCTION])
        for schema, source in cursor.fetchall():
            function = f"{_qn(schema)}.{_qn(FUNCTION)}"
            found.append(Installed(key=("", FUNCTION), what=f"function {schema}.{FUNCTION}()",
                                   signature=_digest(source),
                                   drop=[f"DROP FUNCTION IF EXISTS {function}() CASCADE"]))
        cursor.execute(
            "SELECT c.relname, t.tgname, t.tgargs, t.tgoldtable, t.tgnewtable, p.proname "
            "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE NOT t.tgisinternal AND substr(t.tgname, 1, %s) = %s "
            "AND pg_table_is_visible(c.oid)", [len(PREFIX), PREFIX])
        for table, name, args, old, new, proname in cursor.fetchall():
            arguments = bytes(args).split(b"\x00")
            pk = arguments[0].decode() if arguments and arguments[0] else ""
            signature = _signature(pk, old, new) if proname == FUNCTION else f"{proname}()"
            found.append(Installed(key=(table, name), what=f"trigger {name} on {table}",
                                   signature=signature,
                                   drop=[f"DROP TRIGGER IF EXISTS {name} ON {_qn(table)}"]))
    return found


# -- the per-statement mark (flag.py) ---------------------------------------------------------

MARK_SQL = f"SELECT set_config('{SETTING}', 'on', false)"
UNMARK_SQL = f"SELECT set_config('{SETTING}', '', false)"


def mark(raw_cursor: Any) -> None:
    raw_cursor.execute(MARK_SQL)


def unmark(raw_cursor: Any) -> None:
    raw_cursor.execute(UNMARK_SQL)
