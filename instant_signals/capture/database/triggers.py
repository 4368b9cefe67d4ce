"""Keeping the capture triggers in step with the declarations, on one database.

``plan(conn, table)`` compares what should be installed (the triggers of every declared table
that exists, ``sqlite``/``postgresql``) with what is (read from the database's catalog):

* missing: a declared table without its trigger (its writes are not captured);
* stale: a trigger whose definition is not the one this version writes (SQLite: the model's
  columns changed, so its images lack a column);
* extra: a capture trigger on a table no declaration captures any more (it fills the change
  table with rows the relay can only dead-letter).

``install()`` applies the plan in one transaction (what ``manage.py instant_triggers`` and the
``post_migrate`` hook run), ``drop()`` removes every capture object, and the system check
``W060`` reports a plan that is not empty, naming the command that fixes it.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any, Iterable

from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.models.signals import post_migrate
from django.db.backends.base.base import BaseDatabaseWrapper

from ...models import ChangeEntry
from ..table import Table
from . import VENDORS, captured, enabled, postgresql, sqlite
from .objects import Installed, Object

FIX = "python manage.py instant_triggers"


@dataclasses.dataclass
class Plan:
    missing: list[Object] = dataclasses.field(default_factory=list)
    stale: list[Object] = dataclasses.field(default_factory=list)
    extra: list[Installed] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.stale or self.extra)

    def describe(self) -> list[str]:
        """One line per difference."""
        return ([f"missing: {o.what}" for o in self.missing]
                + [f"stale: {o.what}" for o in self.stale]
                + [f"not declared: {o.what}" for o in self.extra])

    def statements(self) -> list[str]:
        """The SQL that makes the database agree (what ``install()`` runs)."""
        out = [s for o in self.extra for s in o.drop]
        for o in self.stale:
            out += o.create if o.key[0] == "" else o.drop + o.create
        return out + [s for o in self.missing for s in o.create]


def vendor_module(conn: BaseDatabaseWrapper) -> ModuleType:
    if conn.vendor not in VENDORS:
        raise NotImplementedError(
            f"database capture has triggers for {' and '.join(VENDORS)}, not {conn.vendor}")
    return sqlite if conn.vendor == "sqlite" else postgresql


def declared_models(table: Table) -> list[type[models.Model]]:
    """The declared models whose tables the triggers capture, each table once."""
    by_table: dict[str, type[models.Model]] = {}
    for model in table.declared():
        if captured(model):
            by_table.setdefault(model._meta.db_table, model)
    return [by_table[name] for name in sorted(by_table)]


def expected(conn: BaseDatabaseWrapper, table: Table) -> list[Object]:
    """What should be installed: the triggers of every declared table that exists."""
    existing = set(conn.introspection.table_names())
    change_table = ChangeEntry._meta.db_table
    if change_table not in existing:
        return []  # not migrated yet: nothing can be captured
    models_ = [m for m in declared_models(table) if m._meta.db_table in existing]
    objects: list[Object] = vendor_module(conn).expected(conn, models_, change_table)
    return objects


def installed(conn: BaseDatabaseWrapper) -> list[Installed]:
    found: list[Installed] = vendor_module(conn).installed(conn)
    return found


def plan(conn: BaseDatabaseWrapper, table: Table | None) -> Plan:
    """What to change so that the installed objects are the expected ones (``table`` None:
    nothing expected, i.e. remove everything)."""
    wanted = {o.key: o for o in (expected(conn, table) if table is not None else ())}
    present = {o.key: o for o in installed(conn)}
    result = Plan()
    for key, obj in wanted.items():
        there = present.get(key)
        if there is None:
            result.missing.append(obj)
        elif there.signature != obj.signature:
            result.stale.append(obj)
    # Triggers before the function they call (PostgreSQL drops them with it anyway).
    result.extra = sorted((o for key, o in present.items() if key not in wanted),
                          key=lambda o: o.key[0] == "")
    return result


def apply(conn: BaseDatabaseWrapper, statements: Iterable[str]) -> int:
    """Run ``statements`` in one transaction; how many."""
    count = 0
    with transaction.atomic(using=conn.alias):
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
                count += 1
    return count


def install(conn: BaseDatabaseWrapper, table: Table) -> Plan:
    """Make the installed triggers agree with ``table``'s declarations; the plan applied."""
    todo = plan(conn, table)
    if todo:
        apply(conn, todo.statements())
    return todo


def drop(conn: BaseDatabaseWrapper) -> Plan:
    """Remove every capture trigger (and PostgreSQL's function); the plan applied."""
    todo = plan(conn, None)
    if todo:
        apply(conn, todo.statements())
    return todo


def keep_in_step(table: Table) -> None:
    """After every ``migrate`` in database mode, install what ``table`` declares on the
    migrated database (SQLite rebuilds a table to alter it, which drops its triggers)."""

    def after_migrate(sender: Any, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
        if getattr(sender, "name", None) != "instant_signals" or not enabled():
            return  # post_migrate is sent once per app: act once, after every app's migrations
        conn = connections[using]
        if conn.vendor not in VENDORS:
            return  # reported by check E013
        done = install(conn, table)
        if done and kwargs.get("verbosity", 1) >= 1:
            for line in done.describe():
                print(f"  instant_signals: capture triggers fixed ({line})")

    post_migrate.connect(after_migrate, weak=False,
                         dispatch_uid=f"instant_signals.capture.database.{id(table)}")
