"""``manage.py relay_outbox``: send the outbox table to Centrifugo (durable delivery mode).

Use it on databases other than PostgreSQL, or on PostgreSQL instead of Centrifugo's consumer.
With ``INSTANT_SIGNALS["CAPTURE"] = "database"`` it also turns the change table's rows into
outbox rows first, in each pass (``capture.database.relay.ChangeSource``).
Runs until stopped (SIGINT/SIGTERM finish the current batch, then exit); ``--once`` drains what
is there and exits 1 if a partition could not be delivered and waits for a retry (for cron and
health checks); rows that became dead letters are done (``OutboxEntry.objects.dead()``, system
check W040), not a reason for exit status 1.

Every ``--report-every`` seconds (10; 0: never) it prints one line of rate and backlog
(``delivery.outbox.report``); ``-v 0`` prints nothing but ``--once``'s result and errors.
"""

from __future__ import annotations

import argparse
import signal
import time
from types import FrameType
from typing import Any, Callable

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from ...capture import database
from ...capture.database.relay import ChangeSource
from ...delivery.outbox import Relay
from ...delivery.outbox.report import RelayReport
from ...progress import Progress
from ...registry import broadcast_registry


class Command(BaseCommand):
    help = "Send the rows of the instant_signals outbox to Centrifugo, in order per partition."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true",
                            help="drain the outbox once and exit (exit status 1 on failures)")
        parser.add_argument("--interval", type=float, default=1.0,
                            help="seconds to wait when the outbox is empty (default 1)")
        parser.add_argument("--batch-size", type=int, default=None,
                            help="rows per Centrifugo /batch request (default BATCH_SIZE)")
        parser.add_argument("--backoff", type=float, default=0.5,
                            help="first retry delay of a failed partition, doubled per failure")
        parser.add_argument("--max-backoff", type=float, default=30.0,
                            help="longest retry delay in seconds (default 30)")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS,
                            help="database alias holding the outbox (default 'default')")
        parser.add_argument("--report-every", type=float, default=10.0, metavar="SECONDS",
                            help="print delivered rows, rate and backlog this often "
                                 "(default 10; 0: never; -v 0: never)")
        parser.add_argument("--max-passes", type=int, default=None, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["interval"] <= 0:
            raise CommandError("--interval must be positive")
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        every = options["report_every"]
        if not every >= 0:  # also NaN
            raise CommandError("--report-every must be 0 (no reports) or a positive number of "
                               "seconds")
        # Database capture: the change table feeds the outbox before each pass.
        sources = [ChangeSource(broadcast_registry.capture.table, options["database"],
                                batch_size=options["batch_size"])] if database.enabled() else []
        relay = Relay(options["database"], batch_size=options["batch_size"],
                      backoff=options["backoff"], max_backoff=options["max_backoff"],
                      sources=sources)
        out = Progress(self.stdout, verbosity=options["verbosity"], tty=False)
        tick = RelayReport(relay, every, out.line).tick if every and out.verbosity else None
        if options["once"]:
            result = relay.run_once(tick=tick)  # a line per period only if the drain lasts
            captured = (f"captured {result.fed.moved} (dead {result.fed.dead}), "
                        if sources else "")
            self.stdout.write(f"{captured}sent {result.sent}, dead {result.dead}, "
                              f"pending {relay.pending()}")
            if result.failed_partitions:
                details = "; ".join(f"partition {p}: {e}"
                                    for p, e in sorted(result.failed_partitions.items()))
                raise CommandError(f"not delivered: {details}")
            return

        stopping: list[int] = []

        def stop(signum: int, frame: FrameType | None) -> None:
            stopping.append(signum)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        reports = f"; a report every {every:g} s" if tick else ""
        out.line(f"relaying the outbox of database {options['database']!r} "
                 f"(Ctrl-C to stop{reports})")
        try:
            relay.run(interval=options["interval"], stop=lambda: bool(stopping),
                      max_passes=options["max_passes"], sleep=_sleeper(stopping), tick=tick)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        out.line(f"stopped after delivering {relay.sent_total}; pending {relay.pending()}")


def _sleeper(stopping: list[int]) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    return sleep
