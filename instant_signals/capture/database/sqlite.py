"""SQLite: three row-level ``AFTER`` triggers per declared table, writing ``json_object()`` images.

SQLite has no statement-level triggers: each row written runs its trigger's one ``INSERT``
into the change table. The image has one key per column of the model (so a column added by a
migration makes the trigger stale: ``manage.py instant_triggers`` or the ``post_migrate`` hook
rewrites it); values are written so that ``json_object()`` can never fail the user's write:

* a ``BLOB`` (``BinaryField``) as its hex text; a ``BLOB`` found in another column as
  ``["<hex>"]`` (the relay refuses it as a dead letter instead of guessing);
* a ``REAL`` of a ``FloatField`` as text with 17 significant digits (``json_object()`` writes
  15, which does not round-trip every double).

Suppression (``flag``): a non-temporary trigger may not read the ``temp`` schema, but it may
call ``pragma_cache_size('temp')``, a per-connection value that is not transactional. A Django
connection inside ``disable_broadcasts()`` sets the temp schema's cache size to ``MARK`` and
puts the old value back after; every other connection (another program, the ``sqlite3``
shell) keeps its own value, and its writes are captured.

Installed triggers are read from ``sqlite_master``; a trigger is stale when its SQL differs
from the SQL this module writes now.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from .objects import PREFIX, Installed, Object

MARK = -1009  # KiB: the temp schema's cache size while broadcasts are disabled
_OPS = (("insert", "I"), ("update", "U"), ("delete", "D"))


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _qn(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _value(field: models.Field[Any, Any], row: str) -> str:
    column = f"{row}.{_qn(str(field.column))}"
    kind = field.get_internal_type()
    if kind == "BinaryField":
        return f"CASE WHEN {column} IS NULL THEN NULL ELSE hex({column}) END"
    blob = f"WHEN 'blob' THEN json_array(hex({column}))"
    if kind == "FloatField":
        return (f"CASE typeof({column}) WHEN 'real' THEN printf('%!.17g', {column}) {blob} "
                f"ELSE {column} END")
    return f"CASE typeof({column}) {blob} ELSE {column} END"


def _image(model: type[models.Model], row: str) -> str:
    pairs = ", ".join(f"{_quote(str(f.column))}, {_value(f, row)}"
                      for f in model._meta.concrete_fields)
    return f"json_object({pairs})"


def trigger_objects(model: type[models.Model], change_table: str) -> list[Object]:
    """The three triggers of ``model``'s table."""
    table = model._meta.db_table
    pk = str(model._meta.pk.column)
    out = []
    for event, op in _OPS:
        name = f"{PREFIX}{table}_{event}"
        old = _image(model, "OLD") if op != "I" else "NULL"
        new = _image(model, "NEW") if op != "D" else "NULL"
        key = f"CAST({'OLD' if op == 'D' else 'NEW'}.{_qn(pk)} AS TEXT)"
        sql = (
            f"CREATE TRIGGER {_qn(name)} AFTER {event.upper()} ON {_qn(table)} "
            f"WHEN (SELECT cache_size FROM pragma_cache_size('temp')) IS NOT {MARK} "
            f"BEGIN INSERT INTO {_qn(change_table)} (table_name, op, row_pk, old_row, new_row, "
            f"txid, created_at, attempts) VALUES ({_quote(table)}, '{op}', {key}, {old}, {new}, "
            f"NULL, strftime('%Y-%m-%d %H:%M:%f', 'now'), 0); END")
        out.append(Object(key=(table, name), what=f"trigger {name} on {table}", signature=sql,
                          create=[sql], drop=[f"DROP TRIGGER IF EXISTS {_qn(name)}"]))
    return out


def expected(conn: BaseDatabaseWrapper, declared: list[type[models.Model]],
             change_table: str) -> list[Object]:
    return [o for model in declared for o in trigger_objects(model, change_table)]


def installed(conn: BaseDatabaseWrapper) -> list[Installed]:
    """The capture triggers in the database file, whatever declared them."""
    with conn.cursor() as cursor:
        cursor.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger' "
                       "AND substr(name, 1, %s) = %s", [len(PREFIX), PREFIX])
        rows = cursor.fetchall()
    return [Installed(key=(table, name), what=f"trigger {name} on {table}", signature=sql,
                      drop=[f"DROP TRIGGER IF EXISTS {_qn(name)}"]) for name, table, sql in rows]


# -- the per-connection mark (flag.py) --------------------------------------------------------

def mark(raw: Any) -> int:
    """Mark the raw sqlite3 connection: its writes are not captured. The previous value."""
    previous = int(raw.execute("PRAGMA temp.cache_size").fetchone()[0])
    raw.execute(f"PRAGMA temp.cache_size = {MARK}")
    return previous


def unmark(raw: Any, previous: int) -> None:
    raw.execute(f"PRAGMA temp.cache_size = {int(previous)}")
