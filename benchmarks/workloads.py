"""Pieces shared by the harness, its worker processes and the peer runner.

Nothing here imports instant_signals at module level: the django-instant venv imports this
module too.
"""

from __future__ import annotations

import datetime
import decimal
import json
import os
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

CREATED_AT = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
BODY = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 2


def setup_django(db_dir: str | None = None, *, peer: bool = False, migrate: bool = True,
                 databases: tuple[str, ...] = ("default",)) -> None:
    """Configure the benchmark project (SQLite files in ``db_dir``); create the tables of
    ``databases`` when ``migrate`` (worker processes reuse the tables the harness made)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchproject.settings"
    if db_dir is not None:
        os.environ["BENCH_DB_DIR"] = db_dir
    if peer:
        os.environ["BENCH_PEER"] = "1"
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        for alias in databases:
            call_command("migrate", run_syncdb=True, verbosity=0, database=alias)


def item_values(i: int) -> dict[str, Any]:
    """Field values of the i-th benchmark row (the 10th field, id, comes from the database)."""
    return {
        "title": f"Item {i}",
        "body": BODY,
        "count": i,
        "price": decimal.Decimal("19.99"),
        "done": i % 2 == 0,
        "created": CREATED_AT,
        "day": CREATED_AT.date(),
        "ratio": i / 7,
        "ref": uuid.UUID(int=i + 1),
    }


def save_items(n: int, start: int = 0, using: str = "default", model: Any = None) -> None:
    """``n`` saves of new rows inside one transaction (the timed block of scenarios 2 and 6)."""
    from django.db import transaction

    if model is None:
        from benchproject.benchapp.models import Item as model

    with transaction.atomic(using=using):
        for i in range(start, start + n):
            model(**item_values(i)).save(using=using)


def clear_table(table: str, using: str = "default") -> None:
    """Empty a table with raw SQL (no signals, so nothing is broadcast)."""
    from django.db import connections

    with connections[using].cursor() as cursor:
        cursor.execute(f"DELETE FROM {table}")


def clear_items(using: str = "default") -> None:
    clear_table("benchapp_item", using)


def api_post(api_url: str, api_key: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One server API call with the standard library (the harness' own bookkeeping)."""
    request = urllib.request.Request(
        f"{api_url}/{method}", data=json.dumps(params).encode(), method="POST",
        headers={"X-API-Key": api_key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        body = json.loads(answer.read())
    if "error" in body:
        raise RuntimeError(f"{method} {params}: {body['error']}")
    return body.get("result", {})


def history_offset(api_url: str, api_key: str, channel: str) -> int:
    """Top offset of ``channel``'s stream: how many publications Centrifugo accepted into it."""
    result = api_post(api_url, api_key, "history", {"channel": channel, "limit": 0})
    return int(result.get("offset", 0))


def dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
