"""Worker processes of the benchmarks (run in .venv-bench by the harness, one role each).

Every role sets Django up on the tables the harness made, prints ``ready``, waits for a line
on stdin (so process start-up stays out of the numbers), does its work and prints one JSON
object as its last line. Times are ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux: one clock
for every process on the machine).

Roles:
  relay-once  DB           ``manage.py relay_outbox --once`` on alias DB (scenario 7)
  relay       DB           ``manage.py relay_outbox`` until SIGTERM, counting lock errors and
                           rows sent more than once (scenarios 6b and 8)
  writer      DB CHANNEL N N transactions of a web request's shape in durable mode: read a row,
                           update it, create another (scenario 6b)
  publish     ARM CHANNEL N  N sequential publishes with ``ours``, ``cent5`` or ``raw``
                           (scenario 9, one of 4 processes)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from workloads import dump, item_values, setup_django  # noqa: E402

from support.processes import LockErrorLog, is_lock_error  # noqa: E402


def ready() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


def relay_once(args: argparse.Namespace) -> dict:
    from django.core.management import call_command

    ready()
    out = io.StringIO()
    t0 = time.perf_counter()
    call_command("relay_outbox", "--once", "--database", args.database, stdout=out)
    t1 = time.perf_counter()
    return {"t0": t0, "t1": t1, "output": out.getvalue().strip()}


def relay(args: argparse.Namespace) -> dict:
    """The real ``relay_outbox`` command, instrumented from outside: every batch it sends is
    recorded by row id, so a row sent twice (a re-sent batch) is counted, whatever the cause."""
    from django.core.management import call_command

    from instant_signals.delivery import outbox

    counter = LockErrorLog()
    sent: set[int] = set()
    stats = {"batches": 0, "rows": 0, "resent_batches": 0, "resent_rows": 0}
    original = outbox.Relay._send

    def _send(self, batch):  # type: ignore[no-untyped-def]
        ids = [row.id for row in batch]
        again = [i for i in ids if i in sent]
        stats["batches"] += 1
        stats["rows"] += len(ids)
        if again:
            stats["resent_batches"] += 1
            stats["resent_rows"] += len(again)
        sent.update(ids)
        return original(self, batch)

    outbox.Relay._send = _send  # type: ignore[method-assign]
    print("ready", flush=True)  # no go line: it runs until SIGTERM
    out = io.StringIO()
    call_command("relay_outbox", "--database", args.database, stdout=out)
    return {**stats, "lock_errors": counter.lock_errors, "other_errors": counter.other_errors,
            "first_error": counter.first}


def writer(args: argparse.Namespace) -> dict:
    from django.db import OperationalError, transaction

    from benchproject.benchapp.models import Item
    from instant_signals import broadcast_registry

    broadcast_registry.register(Item, channels=[args.channel], fields="__all__")
    using = args.database
    base = 10_000_000 * (args.index + 1)
    mine = Item(**item_values(base))
    mine.save(using=using)  # one event (created), committed on its own
    events, committed, lock_errors, other_errors, first = 1, 0, 0, 0, None
    ready()
    t0 = time.perf_counter()
    for i in range(1, args.n + 1):
        for attempt in range(20):  # a job queue would retry a failed transaction
            try:
                with transaction.atomic(using=using):
                    row = Item.objects.using(using).get(pk=mine.pk)  # read ...
                    row.count += 1  # ... then write: what a view or a task does
                    row.save(using=using)
                    Item(**item_values(base + i)).save(using=using)
                committed += 1
                events += 2
                break
            except OperationalError as exc:
                if is_lock_error(exc):
                    lock_errors += 1
                else:
                    other_errors += 1
                first = first or repr(exc)[:500]
                time.sleep(0.01 * (attempt + 1))
    t1 = time.perf_counter()
    return {"t0": t0, "t1": t1, "committed": committed, "events": events,
            "lock_errors": lock_errors, "other_errors": other_errors, "first_error": first}


def publish(args: argparse.Namespace) -> dict:
    from django.conf import settings

    n, channel = args.n, args.channel
    api_url = f"{settings.CENTRIFUGO_HOST}:{settings.CENTRIFUGO_PORT}/api"
    errors = 0
    if args.arm == "ours":
        from instant_signals import publish as ours

        ours("bench:warm", "warm-up")  # connect, as a running process would be
        ready()
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            ours(channel, f"message {i}")
    elif args.arm == "cent5":
        from cent import Client, PublishRequest

        client = Client(api_url, settings.CENTRIFUGO_API_KEY)
        client.publish(PublishRequest(channel="bench:warm", data={"message": "warm-up"}))
        ready()
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            client.publish(PublishRequest(channel=channel, data={
                "channel": channel, "site": "Bench site", "message": f"message {i}"}))
    else:
        import urllib3

        pool = urllib3.PoolManager(maxsize=1)
        url = f"{api_url}/publish"
        headers = {"X-API-Key": settings.CENTRIFUGO_API_KEY, "Content-Type": "application/json"}
        bodies = [dump({"channel": channel, "data": {"channel": channel, "site": "Bench site",
                                                     "message": f"message {i}"}}).encode()
                  for i in range(n)]
        pool.request("POST", url, body=dump({"channel": "bench:warm", "data": {"m": "warm-up"}}),
                     headers=headers)
        ready()
        t0, c0 = time.perf_counter(), time.process_time()
        for body in bodies:
            reply = pool.request("POST", url, body=body, headers=headers)
            if reply.status != 200 or b'"error"' in reply.data:
                errors += 1
    t1 = time.perf_counter()
    return {"t0": t0, "t1": t1, "errors": errors, "cpu": time.process_time() - c0}


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("relay-once")
    p.add_argument("database")
    p = sub.add_parser("relay")
    p.add_argument("database")
    p = sub.add_parser("writer")
    p.add_argument("database")
    p.add_argument("channel")
    p.add_argument("n", type=int)
    p.add_argument("--index", type=int, default=0)
    p = sub.add_parser("publish")
    p.add_argument("arm", choices=["ours", "cent5", "raw"])
    p.add_argument("channel")
    p.add_argument("n", type=int)
    args = parser.parse_args()
    if args.role == "writer":
        os.environ["BENCH_DELIVERY"] = "outbox"
    setup_django(migrate=False)
    result = {"relay-once": relay_once, "relay": relay, "writer": writer,
              "publish": publish}[args.role](args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
