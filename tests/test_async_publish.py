"""apublish(): concurrent calls from one event loop share /batch requests, against a real
Centrifugo and a real subscribed client; each caller gets its own result or error.

What a user relies on: every message arrives once, in the order the calls were made; a bad
channel is a ValueError before any network call; Centrifugo's per-publication errors (102
unknown namespace) reach the caller that made that publication and no other; an unreachable
Centrifugo reaches every caller as a retryable CentrifugoError (or None with fail_silently);
capture_broadcasts() records apublish() like publish().
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from instant_signals import CentrifugoError, apublish
from instant_signals.reporting import stats
from instant_signals.testing import capture_broadcasts
from instant_signals.tokens import connection_token
from tests.conftest import start_centrifugo


@pytest.fixture
def public_client(live_client):
    client = live_client(connection_token(None))
    client.subscribe("public")
    return client


def test_a_burst_arrives_once_each_in_call_order_in_few_requests(public_client):
    n = 300
    counter = itertools.count()

    async def call() -> dict:
        # nothing awaits between taking the number and the call: numbers are the call order
        return await apublish("public", data={"seq": next(counter)})

    async def main() -> list:
        return await asyncio.gather(*(call() for _ in range(n)))

    requests = stats["requests"]
    results = asyncio.run(main())
    used = stats["requests"] - requests
    public_client.wait_for(n, timeout=10)
    got = public_client.wait_for(n + 1, timeout=0.5)  # a duplicate would arrive by now
    assert [d["data"]["seq"] for d in got] == list(range(n))
    assert all(isinstance(r, dict) for r in results)
    assert used <= 10, used  # one /batch per BATCH_SIZE waiting calls, not one per call


def test_each_caller_gets_its_own_offset(public_client):
    """"public" keeps a history: each result is that publication's offset, in call order."""

    async def main() -> list:
        return await asyncio.gather(*(apublish("public", f"m{i}") for i in range(50)))

    results = asyncio.run(main())
    offsets = [r["offset"] for r in results]
    assert offsets == sorted(set(offsets)) and offsets[-1] - offsets[0] == 49
    assert [d["message"] for d in public_client.wait_for(50)] == [f"m{i}" for i in range(50)]


def test_tasks_making_sequential_calls_keep_each_tasks_order(public_client):
    async def task(t: int) -> None:
        for k in range(10):
            await apublish("public", data={"t": t, "k": k})

    async def main() -> None:
        await asyncio.gather(*(task(t) for t in range(20)))

    asyncio.run(main())
    public_client.wait_for(200, timeout=10)
    got = public_client.wait_for(201, timeout=0.5)
    assert len(got) == 200
    for t in range(20):
        assert [d["data"]["k"] for d in got if d["data"]["t"] == t] == list(range(10))


@pytest.mark.parametrize("call", [
    lambda: apublish("a b", "x"),
    lambda: apublish("", "x"),
    lambda: apublish("public"),  # neither message nor data
    lambda: apublish("public", data={"when": object()}),  # not JSON
])
def test_bad_input_is_a_value_error_before_any_network_call(call, settings):
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"  # would fail loudly if reached
    requests = stats["requests"]
    with pytest.raises(ValueError):
        asyncio.run(call())
    assert stats["requests"] == requests


def test_an_unknown_namespace_fails_only_its_own_caller(public_client):
    async def main() -> list:
        return await asyncio.gather(
            apublish("public", data={"n": 0}),
            apublish("$nowhere:1", data={"n": 1}),
            apublish("public", data={"n": 2}),
            apublish("nowhere:2", data={"n": 3}, fail_silently=True),
            apublish("public", data={"n": 4}),
            return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[1], CentrifugoError) and results[1].code == 102
    assert results[3] is None
    assert all(isinstance(results[i], dict) for i in (0, 2, 4))
    public_client.wait_for(3, timeout=5)
    assert [d["data"]["n"] for d in public_client.wait_for(4, timeout=0.5)] == [0, 2, 4]


def test_centrifugo_down_reaches_every_caller(centrifugo_binary, tmp_path, settings):
    from tests.conftest import use_server

    server = start_centrifugo(centrifugo_binary, tmp_path)
    use_server(settings, server)
    server.stop()  # a real Centrifugo that is gone: nothing listens on its port now

    async def main() -> list:
        return await asyncio.gather(*(apublish("public", f"m{i}") for i in range(5)),
                                    apublish("public", "quiet", fail_silently=True),
                                    return_exceptions=True)

    results = asyncio.run(main())
    errors = results[:5]
    assert all(isinstance(e, CentrifugoError) and e.retryable for e in errors), results
    assert len({id(e) for e in errors}) == 5  # one exception object per caller
    assert results[5] is None


def test_a_caller_cancelled_while_waiting_is_not_sent_and_disturbs_no_one(public_client):
    async def main() -> list:
        calls = [asyncio.ensure_future(apublish("public", data={"n": i})) for i in range(6)]
        await asyncio.sleep(0)  # every call has been made and waits for its request
        calls[3].cancel()
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[3], asyncio.CancelledError)
    public_client.wait_for(5, timeout=5)
    assert [d["data"]["n"] for d in public_client.wait_for(6, timeout=0.5)] == [0, 1, 2, 4, 5]


def test_capture_broadcasts_records_apublish(settings):
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"

    async def main() -> None:
        await asyncio.gather(apublish("public", "one"), apublish("public", data={"n": 2}))

    with capture_broadcasts() as published:
        asyncio.run(main())
    assert published == [{"channel": "public", "site": "Test site", "message": "one"},
                         {"channel": "public", "site": "Test site", "data": {"n": 2}}]
