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


class CountingProxy:
    """An HTTP/1.1 keep-alive reverse proxy on loopback that counts requests and connections.

    It sees exactly what a library sends on the wire, whatever the library, which is why the
    HTTP request counts of scenario 2 are taken through it (in a pass of their own, untimed).
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.requests = 0
        self.connections = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with proxy.lock:
                    proxy.connections += 1
                self.upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)

            def do_POST(self) -> None:  # noqa: N802
                with proxy.lock:
                    proxy.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length")}
                self.upstream.request("POST", self.path, body=body, headers=headers)
                reply = self.upstream.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.getheader("Content-Type") or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.connections = 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
