"""``manage.py instant_triggers``: install, check or drop the database capture triggers.

With ``INSTANT_SIGNALS["CAPTURE"] = "database"``, ``migrate`` keeps the triggers in step by
itself (a ``post_migrate`` hook); this command does the same on demand and shows what it does:

* (no option) install what is missing, rewrite what is stale, drop triggers of tables no
  declaration captures any more; prints one line per change;
* ``--check``: change nothing, exit 1 when the triggers differ from the declarations (CI, a
  deploy step); the system check ``W060`` says the same;
* ``--sql``: print the SQL that would run (for a DBA who applies it by hand);
* ``--drop``: remove every capture trigger (and PostgreSQL's function), e.g. before going back
  to signal mode.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from ...capture.database import enabled, triggers
from ...registry import broadcast_registry


class Command(BaseCommand):
    help = "Install (or check, or drop) the triggers of database capture (CAPTURE='database')."

    def add_arguments(self, parser: CommandParser) -> None:
        what = parser.add_mutually_exclusive_group()
        what.add_argument("--check", action="store_true",
                          help="change nothing; exit status 1 when the triggers are not in step")
        what.add_argument("--sql", action="store_true",
                          help="print the SQL that would run, change nothing")
        what.add_argument("--drop", action="store_true",
                          help="remove every capture trigger")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS,
                            help="database alias (default 'default')")

    def handle(self, *args: Any, **options: Any) -> None:
        conn = connections[options["database"]]
        try:
            triggers.vendor_module(conn)
        except NotImplementedError as exc:
            raise CommandError(str(exc)) from None
        if options["drop"]:
            done = triggers.drop(conn)
            for line in done.describe():
                self.stdout.write(f"dropped ({line})")
            self.stdout.write(f"{len(done.statements())} statement(s) run")
            return
        if not enabled() and not options["check"] and not options["sql"]:
            raise CommandError(
                'INSTANT_SIGNALS["CAPTURE"] is not "database": installing triggers would fill '
                "the change table with rows nothing publishes. Set it first (or use --drop).")
        table = broadcast_registry.capture.table if enabled() else None
        todo = triggers.plan(conn, table)
        if options["sql"]:
            for statement in todo.statements():
                self.stdout.write(statement.rstrip() + ";")
            return
        if options["check"]:
            if todo:
                raise CommandError(
                    "capture triggers are not in step with the declarations:\n  "
                    + "\n  ".join(todo.describe()) + f"\nRun `{triggers.FIX}`.")
            self.stdout.write("capture triggers are in step with the declarations")
            return
        triggers.apply(conn, todo.statements())
        for line in todo.describe():
            self.stdout.write(f"fixed ({line})")
        self.stdout.write(f"capture triggers in step on database {options['database']!r} "
                          f"({len(todo.statements())} statement(s) run)")
