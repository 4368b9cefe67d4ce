"""One poison row never blocks its partition (issue 19, item 4).

A row Centrifugo can never accept goes to the dead-letter state (kept in the table with its
reason and attempts, skipped by the relay, reported) and the rows behind it are published
exactly once. Real Centrifugo, the real ``relay_outbox`` command on SQLite, and the relay on
PostgreSQL.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.management import call_command

from instant_signals import broadcast_failed
from instant_signals.exceptions import CentrifugoError, RETRYABLE_CODES
from instant_signals.models import OutboxEntry
from instant_signals.reporting import stats
from instant_signals.tokens import connection_token
from tests.conftest import start_centrifugo, use_server
from support.services import redis_server  # noqa: F401 - fixture

PG = "pg"
DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture
def failures():
    seen: list[tuple[list, Exception]] = []

    def receiver(sender, publications, error, **kwargs):
        seen.append((publications, error))

    broadcast_failed.connect(receiver, weak=False)
    yield seen
    broadcast_failed.disconnect(receiver)


def relay_once(*args: str) -> str:
    """``manage.py relay_outbox --once``; its output (raises CommandError on exit status 1)."""
    import io

    out = io.StringIO()
    call_command("relay_outbox", "--once", *args, stdout=out)
    return out.getvalue()


def received_until(live, sentinel: int) -> list:
    """What the subscriber got up to the sentinel publication (one channel keeps its order)."""
    count = 1
    while True:
        got = live.wait_for(count)
        if len(got) < count or got[-1].get("n") == sentinel:
            return got  # timed out (the assertion shows what came), or the sentinel came
        count = len(got) + 1


def poison_then_good(using: str = "default") -> None:
    """A presence command on a channel without presence (Centrifugo: 108 not available), then a
    good publication of another program's, without idempotency key, in the same partition."""
    OutboxEntry.objects.using(using).create(method="presence", payload={"channel": "news"})
    OutboxEntry.objects.using(using).create(method="publish",
                                            payload={"channel": "news", "data": {"n": 1}})


@pytest.mark.django_db(transaction=True)
def test_a_poison_row_never_blocks_its_partition_and_the_rest_is_published_once(
        centrifugo, live_client, failures):
    live = live_client(connection_token(None))
    live.subscribe("news")
    poison_then_good()
    dead_before = stats["dead"]

    first = relay_once()  # exit status 0: nothing is waiting for a retry
    second = relay_once()
    OutboxEntry.objects.create(method="publish", payload={"channel": "news", "data": {"n": 2}})
    relay_once()

    assert "sent 1, dead 1, pending 0" in first
    assert "sent 0, dead 0, pending 0" in second
    assert [d["n"] for d in received_until(live, 2)] == [1, 2]  # the good row once, in order
    dead = list(OutboxEntry.objects.dead())
    assert [(row.method, row.attempts) for row in dead] == [("presence", 1)]
    assert dead[0].error.startswith("[108] ") and dead[0].dead_at is not None
    assert not OutboxEntry.objects.pending().exists()
    assert [error.code for _, error in failures] == [108]
    assert stats["dead"] == dead_before + 1


@pytest.mark.django_db(transaction=True)
def test_rows_centrifugo_can_never_accept_are_dead_at_once_and_reported(
        centrifugo, live_client, failures):
    live = live_client(connection_token(None))
    live.subscribe("news")
    put = OutboxEntry.objects.create
    put(method="publish", payload={"channel": "news", "data": {"n": 1}, "idempotency_key": "d1"})
    put(method="publish", payload={"channel": "nowhere:1", "data": {}})  # 102 unknown channel
    put(method="nosuch", payload={"channel": "news"})  # 104 method not found
    put(method="publish", payload={"channel": 5, "data": {}})  # the whole /batch is HTTP 400
    put(method="publish", payload={"channel": "news", "data": {"n": 2}, "idempotency_key": "d2"})
    from instant_signals.delivery.outbox import Relay

    result = Relay(batch_size=10).run_once()
    assert (result.sent, result.dead, result.ok) == (2, 3, True)
    assert [d["n"] for d in received_until(live, 2)] == [1, 2]
    codes = [int(re.match(r"\[(\d+)\]", row.error).group(1)) for row in OutboxEntry.objects.dead()]
    assert codes == [102, 104, 400]
    assert sorted(error.code for _, error in failures) == [102, 104, 400]
    assert Relay().pending() == 0


@pytest.mark.django_db(transaction=True)
def test_a_retryable_row_goes_dead_after_the_attempts_setting_and_the_rest_goes_once(
        centrifugo_binary, redis_server, tmp_path, settings, failures):
    """Redis down: Centrifugo answers each publication "100 internal" (retryable). The head row
    is tried OUTBOX_MAX_ATTEMPTS times, then dead; the row behind it is published once Redis is
    back, and never twice although Centrifugo ran it in the failed requests' batches."""
    from support.live import LiveClient

    server = start_centrifugo(centrifugo_binary, tmp_path, redis=[redis_server.address])
    try:
        use_server(settings, server)
        settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "OUTBOX_MAX_ATTEMPTS": 3}
        from instant_signals.delivery.outbox import Relay

        relay = Relay(backoff=0.0, max_backoff=0.0)
        OutboxEntry.objects.create(method="publish", payload={"channel": "news", "data": {"n": 0}})
        redis_server.stop()
        results = [relay.run_once() for _ in range(3)]
        assert [(r.sent, r.dead) for r in results] == [(0, 0), (0, 0), (0, 1)]
        assert [e.code for _, e in failures] == [100]
        row = OutboxEntry.objects.dead().get()
        assert (row.attempts, row.error.startswith("[100] ")) == (3, True)

        redis_server.start()
        server.stop()
        server.start()  # reconnects to the new Redis at once
        live = LiveClient(server.ws_url, token=connection_token(None))
        live.connect()
        try:
            live.subscribe("news")
            OutboxEntry.objects.create(method="publish",
                                       payload={"channel": "news", "data": {"n": 1}})
            OutboxEntry.objects.create(method="publish",
                                       payload={"channel": "news", "data": {"n": 2}})
            assert relay.run_once().sent == 2
            assert [d["n"] for d in received_until(live, 2)] == [1, 2]
        finally:
            live.close()
    finally:
        server.stop()


@pytest.mark.django_db(transaction=True)
def test_outage_is_not_the_rows_fault(settings):
    """Centrifugo unreachable: every row stays pending however often it is tried."""
    from instant_signals import client as http_client
    from django.core.management.base import CommandError

    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"  # nothing listens on port 9
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "OUTBOX_MAX_ATTEMPTS": 1}
    http_client.close_session()
    OutboxEntry.objects.create(method="publish", payload={"channel": "news", "data": {}})
    for _ in range(2):
        with pytest.raises(CommandError, match="not delivered"):
            relay_once()
    assert (OutboxEntry.objects.pending().count(), OutboxEntry.objects.dead().count()) == (1, 0)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, databases=["default", PG])
def test_postgresql_relay_skips_a_poison_row(centrifugo, live_client, failures):
    live = live_client(connection_token(None))
    live.subscribe("news")
    poison_then_good(PG)
    relay_once("--database", PG)
    relay_once("--database", PG)
    OutboxEntry.objects.using(PG).create(method="publish",
                                         payload={"channel": "news", "data": {"n": 2}})
    relay_once("--database", PG)
    assert [d["n"] for d in received_until(live, 2)] == [1, 2]
    dead = OutboxEntry.objects.using(PG).dead().get()
    assert (dead.method, dead.attempts, dead.error[:6]) == ("presence", 1, "[108] ")
    assert not OutboxEntry.objects.using(PG).pending().exists()


@pytest.mark.django_db(transaction=True)
def test_database_check_warns_about_dead_letters_and_an_old_backlog(settings):
    from datetime import timedelta

    from django.utils import timezone

    def ids(**kwargs):
        return sorted(m.id for m in run_checks(**kwargs) if m.id.startswith("instant_signals.W04"))

    assert ids(databases=["default"]) == []
    row = OutboxEntry.objects.create(method="publish", payload={"channel": "news"})
    assert ids(databases=["default"]) == []  # young
    OutboxEntry.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(hours=1))
    assert ids(databases=["default"]) == ["instant_signals.W041"]
    OutboxEntry.objects.create(method="presence", payload={"channel": "news"}, attempts=1,
                               error="[108] not available", dead_at=timezone.now())
    assert ids(databases=["default"]) == ["instant_signals.W040", "instant_signals.W041"]
    assert ids() == []  # a database check: only with --database


def test_the_docs_list_the_retryable_codes_the_client_retries():
    table = (DOCS / "reference" / "publish.md").read_text()
    documented = {int(code) for code, flag in
                  re.findall(r"^\| `(\d{3})` \| `(True|False)` \|", table, re.M) if flag == "True"}
    assert documented == set(RETRYABLE_CODES)
    for code in range(100, 120):
        assert CentrifugoError.from_reply({"code": code, "message": "m"}).retryable == (
            code in documented)
    assert not CentrifugoError.from_reply({"code": 108, "message": "not available"}).retryable
