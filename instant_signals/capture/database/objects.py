"""What the vendor modules describe: database objects capture needs, and the installed ones."""

from __future__ import annotations

from typing import NamedTuple

PREFIX = "instant_signals_capture_"  # every capture trigger's name starts with it


class Object(NamedTuple):
    """A database object capture needs: a trigger, or PostgreSQL's function."""

    key: tuple[str, str]  # (table, name); ("", name) for a function
    what: str  # "trigger <name> on <table>"
    signature: str  # compared with the installed one
    create: list[str]
    drop: list[str]


class Installed(NamedTuple):
    """A capture object found in the database."""

    key: tuple[str, str]
    what: str
    signature: str
    drop: list[str]
