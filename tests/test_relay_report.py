"""``relay_outbox`` reports its rate and backlog every ``--report-every`` seconds (issue 21, 4).

The line itself is checked with a clock the test moves (rows with known ages, a known count
delivered); then the real command, in a process of its own on a SQLite file, against a real
Centrifugo that is started only once the relay has reported the rows it cannot deliver: the test
waits for each line it expects on the command's output, never for a time.
"""

from __future__ import annotations

import io
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from instant_signals.delivery.outbox import Relay
from instant_signals.delivery.outbox.report import RelayReport, age
from instant_signals.models import OutboxEntry
from support.processes import CentrifugoProcess, free_port, stop_process
from tests.test_relay_sqlite import ROOT, database_settings, write_settings

LINE = re.compile(r"^delivered (\d+) in [\d.]+ s \([\d.]+/s\), pending (\d+)"
                  r"(?: \(oldest [\d.]+ (?:s|min|h|d)\))?, dead letters (\d+)"
                  r"(?:, waiting to retry: (\d+) partitions?)?$")


# -- the line -----------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_the_line_counts_what_was_delivered_since_the_last_one_and_the_backlog():
    now = timezone.now()
    rows = [OutboxEntry.objects.create(method="publish", payload={"channel": "news"},
                                       partition=p) for p in (0, 0, 3)]
    OutboxEntry.objects.filter(pk=rows[0].pk).update(created_at=now - timedelta(seconds=150))
    OutboxEntry.objects.filter(pk=rows[2].pk).update(dead_at=now, error="102: unknown channel")
    clock = [100.0]
    lines: list[str] = []
    relay = Relay()
    report = RelayReport(relay, 10, lines.append, clock=lambda: clock[0], now=lambda: now)

    clock[0] = 109.9
    report.tick()
    assert lines == []  # not a period yet
    relay.sent_total += 30
    clock[0] = 110.0
    report.tick()
    assert lines == ["delivered 30 in 10.0 s (3.0/s), pending 2 (oldest 2.5 min), "
                     "dead letters 1"]
    relay.not_before[0] = 130.0  # partition 0 backs off after a failure
    clock[0] = 125.0
    report.tick()
    assert lines[1] == ("delivered 0 in 15.0 s (0.0/s), pending 2 (oldest 2.5 min), "
                        "dead letters 1, waiting to retry: 1 partition")
    OutboxEntry.objects.all().delete()
    clock[0] = 140.0
    report.tick()
    assert lines[2] == "delivered 0 in 15.0 s (0.0/s), pending 0, dead letters 0"
    assert all(LINE.match(line) for line in lines), lines


def test_ages_read_as_a_person_would():
    assert [age(timedelta(seconds=s)) for s in (-3, 0.04, 119, 120, 7200, 3 * 86400)] == [
        "0.0 s", "0.0 s", "119.0 s", "2.0 min", "2.0 h", "3.0 d"]


@pytest.mark.django_db(transaction=True)
def test_reports_are_quiet_under_verbosity_0_and_off_with_0(settings):
    """The relay waits ``--interval`` per idle pass, so 8 passes outlast a 0.05 s period."""
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"  # never reached: nothing to send
    args = ["--interval", "0.05", "--max-passes", "8", "--report-every", "0.05"]
    out = io.StringIO()
    call_command("relay_outbox", *args, stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("relaying the outbox of database 'default'"), lines
    assert "a report every 0.05 s" in lines[0]
    assert any(LINE.match(line) for line in lines[1:-1]), lines
    assert lines[-1] == "stopped after delivering 0; pending 0"

    out = io.StringIO()
    call_command("relay_outbox", *args, stdout=out, verbosity=0)
    assert out.getvalue() == ""

    out = io.StringIO()
    call_command("relay_outbox", *args[:-1], "0", stdout=out)
    assert len(out.getvalue().splitlines()) == 2, out.getvalue()  # start and stop lines only

    for wrong in ("-1", "nan"):
        with pytest.raises(CommandError, match="--report-every"):
            call_command("relay_outbox", "--report-every", wrong)


# -- the command, against a Centrifugo that comes later -------------------------------------------

class Output:
    """A process's stdout, read on a thread: ``expect()`` waits for a line that matches."""

    def __init__(self, process: subprocess.Popen, errors: Path):
        self.process = process
        self.errors = errors
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, condition, what: str, timeout: float = 60) -> str:
        """The first new line for which ``condition(line)`` holds; fails after ``timeout``
        seconds (a bound on a broken run, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line {what} in {timeout} s; output: {self.lines}")
            if line is None:
                pytest.fail(f"the relay exited before a line {what}: {self.lines}; "
                            f"{self.errors.read_text()[-3000:]}")
            self.lines.append(line)
            if condition(line):
                return line


def django(env, *args: str, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "django", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, **kwargs)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def outbox(path: Path) -> tuple[int, int]:
    """(pending, dead) rows, read with sqlite3 as an operator would."""
    with sqlite3.connect(path, timeout=20) as conn:
        return conn.execute("SELECT COUNT(*) - COUNT(dead_at), COUNT(dead_at) "
                            "FROM instant_signals_outbox").fetchone()


@pytest.mark.slow
def test_the_command_reports_the_backlog_while_centrifugo_is_down_then_the_delivery(
        centrifugo_binary, tmp_path):
    from instant_signals.centrifugo_config import generate_config, write_config

    server = CentrifugoProcess(centrifugo_binary, write_config(
        tmp_path / "centrifugo.json", generate_config(port=free_port())))  # not started yet
    path = tmp_path / "site.sqlite3"
    env = write_settings(tmp_path, "report_site", server=server,
                         database=database_settings(path, tmp_path))
    django(env, "migrate", "--verbosity", "0")
    errors = tmp_path / "relay.stderr"  # a file: its warnings while Centrifugo is down add up
    relay = subprocess.Popen(
        [sys.executable, "-m", "django", "relay_outbox", "--report-every", "0.2",
         "--interval", "0.1", "--backoff", "0.1", "--max-backoff", "0.2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors.open("w"), text=True)
    out = Output(relay, errors)
    try:
        out.expect(lambda line: line.startswith("relaying the outbox"), "to start")
        django(env, "shell", "-c", "from tests.testapp.models import Note\n"
                                   "for n in range(5): Note.objects.create(title=f'n{n}')")
        assert outbox(path) == (5, 0)
        # Centrifugo is down: the rows wait, the line says how many, how old, and the retry.
        down = LINE.match(out.expect(
            lambda line: (m := LINE.match(line)) and m[2] == "5" and m[4], "with 5 pending"))
        assert down[1] == "0" and "(oldest " in down[0], down[0]

        server.start()
        django(env, "shell", "-c", "from instant_signals.models import OutboxEntry\n"
                                   "OutboxEntry.objects.create(method='publish', payload="
                                   "{'channel': 'nonamespace:x', 'data': {}}, partition=1)")
        done = LINE.match(out.expect(
            lambda line: (m := LINE.match(line)) and m[2] == "0" and m[3] == "1",
            "with nothing pending and the dead letter"))
        assert done[4] is None  # no partition waits any more
        assert outbox(path) == (0, 1)
        reports = [m for m in map(LINE.match, out.lines) if m]
        assert sum(int(m[1]) for m in reports) == 5  # every delivered row counted once
        relay.send_signal(signal.SIGTERM)
        out.expect(lambda line: line.startswith("stopped"), "at the end")
        assert out.lines[-1] == "stopped after delivering 5; pending 0"
        assert relay.wait(timeout=60) == 0
    finally:
        stop_process(relay, kill=True)
        server.stop()
