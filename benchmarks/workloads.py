"""Pieces shared by the harness and the peer runner (importable in both venvs).

Nothing here imports instant_signals: the django-instant venv imports this module too.
"""

from __future__ import annotations

import datetime
import decimal
import http.client
import json
import os
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent

CREATED_AT = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
BODY = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 2


def setup_django(db_path: str, *, peer: bool = False) -> None:
    """Configure the benchmark project on ``db_path`` (SQLite) and create its tables."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchproject.settings"
    os.environ["BENCH_DB"] = db_path
    if peer:
        os.environ["BENCH_PEER"] = "1"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0)


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


def save_items(n: int, start: int = 0) -> None:
    """``n`` saves of new rows inside one transaction (the timed block of scenario 2)."""
    from benchproject.benchapp.models import Item
    from django.db import transaction

    with transaction.atomic():
        for i in range(start, start + n):
            Item(**item_values(i)).save()


def clear_items() -> None:
    """Empty the table with raw SQL (no signals, so nothing is broadcast)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM benchapp_item")


def history_offset(api_url: str, api_key: str, channel: str) -> int:
    """Top offset of ``channel``'s stream: how many publications Centrifugo accepted into it."""
    response = requests.post(
        f"{api_url}/history", json={"channel": channel, "limit": 0},
        headers={"X-API-Key": api_key}, timeout=10,
    )
    response.raise_for_status()
    body = response.json()
    if "error" in body:
        raise RuntimeError(f"history of {channel}: {body['error']}")
    return int(body["result"].get("offset", 0))


def dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
