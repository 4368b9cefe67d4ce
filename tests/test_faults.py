"""Default (on_commit) delivery when Centrifugo is down, hung or refusing: saves never break.

Faults are made with a real Centrifugo: SIGKILLed (connection refused), SIGSTOPped (the kernel
still accepts connections, nobody answers: the read timeout fires), a wrong API key, an
unknown namespace. Each save is timed against the bound ``INSTANT_SIGNALS["TIMEOUT"]`` promises
(connect + read, plus a margin for the save itself): a correctness bound, not a benchmark.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

import pytest
from django.db import transaction

from instant_signals import CentrifugoError, broadcast_failed, broadcast_registry, publish
from instant_signals import client as http_client
from instant_signals.reporting import stats
from instant_signals.tokens import connection_token
from tests.conftest import start_centrifugo, use_server
from support.live import LiveClient
from tests.testapp.models import Note, Plain

pytestmark = pytest.mark.django_db(transaction=True)

MARGIN = 0.5  # seconds allowed on top of the configured timeout for the save itself


@pytest.fixture
def own_centrifugo(centrifugo_binary, tmp_path, settings):
    """A Centrifugo of this test only (it gets killed and frozen)."""
    server = start_centrifugo(centrifugo_binary, tmp_path)
    use_server(settings, server)
    yield server
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop(kill=True)
    http_client.close_session()


@pytest.fixture
def failures():
    """Publications reported through ``broadcast_failed``, and the stats delta."""
    seen: list[tuple[int, Exception]] = []

    def receiver(sender, publications, error, **kwargs):
        seen.append((len(publications), error))

    broadcast_failed.connect(receiver, weak=False)
    before = stats.snapshot()
    yield seen, before
    broadcast_failed.disconnect(receiver)


def timed(fn, *args, **kwargs) -> float:
    start = time.monotonic()
    fn(*args, **kwargs)
    return time.monotonic() - start


def freeze(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until every one of its threads is stopped (state T)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/stat") as handle:
                    states.append(handle.read().rsplit(")", 1)[1].split()[0])
            except OSError:
                continue
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.01)
    raise RuntimeError(f"process {pid} did not stop")


def bound(settings) -> float:
    connect, read = settings.INSTANT_SIGNALS["TIMEOUT"]
    return connect + read + MARGIN


def test_500_saves_with_centrifugo_down(own_centrifugo, settings, failures, caplog):
    seen, before = failures
    own_centrifugo.stop(kill=True)  # SIGKILL: the port now refuses connections
    limit = bound(settings)
    caplog.set_level(logging.ERROR, logger="instant_signals")
    durations = []
    for n in range(250):  # autocommit: each save publishes at once
        durations.append(timed(Note.objects.create, title=f"solo {n}"))
    for chunk in range(10):  # 10 transactions of 25: one /batch call at each commit
        def block():
            with transaction.atomic():
                for n in range(25):
                    Note.objects.create(title=f"tx {chunk}-{n}")
        durations.append(timed(block))
    assert Note.objects.count() == 500  # every save succeeded
    assert max(durations) < limit, f"slowest call {max(durations):.2f} s > {limit} s"
    assert sum(n for n, _ in seen) == 500  # every publication reported once
    assert all(isinstance(e, CentrifugoError) and e.retryable for _, e in seen)
    assert stats["failed"] - before["failed"] == 500
    assert stats["published"] == before["published"]
    errors = [r for r in caplog.records if r.name == "instant_signals" and r.levelno >= logging.ERROR]
    assert len(errors) == 260  # one line per failed request: 250 single + 10 batches
    assert all("not delivered" in r.getMessage() for r in errors)

    # Centrifugo comes back: the next save is delivered without restarting anything.
    own_centrifugo.start()
    live = LiveClient(own_centrifugo.ws_url, token=connection_token(None))
    try:
        live.connect()
        live.subscribe("notes")
        Note.objects.create(title="after the outage")
        assert [d["data"]["fields"]["title"] for d in live.wait_for(1)] == ["after the outage"]
    finally:
        live.close()


def test_hung_centrifugo_never_holds_a_save_past_the_timeout(own_centrifugo, settings, failures):
    seen, _ = failures
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "TIMEOUT": (0.2, 0.3)}
    Note.objects.create(title="warm")  # a keep-alive connection exists before the freeze
    freeze(own_centrifugo.process.pid)
    limit = bound(settings)
    durations = [timed(Note.objects.create, title=f"hung {n}") for n in range(10)]

    def block():
        with transaction.atomic():
            for n in range(20):
                Note.objects.create(title=f"hung tx {n}")

    durations.append(timed(block))
    http_client.close_session()  # new connections: accepted by the kernel, never answered
    durations += [timed(Note.objects.create, title=f"fresh {n}") for n in range(5)]
    os.kill(own_centrifugo.process.pid, signal.SIGCONT)
    assert max(durations) < limit, f"slowest call {max(durations):.2f} s > {limit} s"
    assert Note.objects.count() == 36
    assert sum(n for n, _ in seen) == 35
    assert all(e.retryable for _, e in seen)


def test_publish_raises_or_fails_silently_when_down(own_centrifugo, settings):
    own_centrifugo.stop(kill=True)
    with pytest.raises(CentrifugoError) as info:
        publish("public", "x")
    assert info.value.retryable and info.value.code is None
    assert publish("public", "x", fail_silently=True) is None


def test_error_classification_against_a_real_server(own_centrifugo, settings):
    settings.CENTRIFUGO_API_KEY = "wrong"
    with pytest.raises(CentrifugoError) as info:
        publish("public", "x")
    assert (info.value.code, info.value.retryable) == (401, False)
    assert "CENTRIFUGO_API_KEY" in str(info.value)
    use_server(settings, own_centrifugo)
    with pytest.raises(CentrifugoError) as info:
        publish("nowhere:1", "x")  # namespace not configured
    assert (info.value.code, info.value.retryable) == (102, False)
    replies = http_client.batch(['{"publish":{"channel":"public","data":{}}}',
                                 '{"publish":{"channel":"nowhere:1","data":{}}}'])
    assert http_client.reply_error(replies[0]) is None
    assert http_client.reply_error(replies[1]).code == 102


def test_unknown_namespace_in_a_batch_fails_only_that_publication(own_centrifugo, failures,
                                                                  caplog):
    """One refused publication in a /batch does not take the others down with it, and the log
    says which command fixes the config."""
    seen, before = failures
    broadcast_registry.register(Plain, channels=["public", "unconfigured:{code}"], fields=["name"])
    try:
        with caplog.at_level(logging.ERROR, logger="instant_signals"):
            with transaction.atomic():
                Plain.objects.create(name="a", code=1)
                Plain.objects.create(name="b", code=2)
    finally:
        broadcast_registry.unregister(Plain)
    assert sorted((n, e.code) for n, e in seen) == [(1, 102), (1, 102)]
    assert stats["published"] - before["published"] == 2
    assert "run `python manage.py installws`" in caplog.text
