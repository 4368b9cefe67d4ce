"""Many publishers at once: scenario 9 (threads and processes) and scenario 10 (async).

Scenario 9: 8 threads in this process, then 4 worker processes (worker.py ``publish``), each
calling its library n times into one channel per arm and round; total msg/s from the moment
all are released (a barrier / a "go" line; connections already open) to the last one done.
Arms: ``publish()`` (its shared urllib3 pool), cent 5's ``Client`` (one per thread, as its
requests session is not documented as thread-safe), and the floor: one shared
``urllib3.PoolManager`` posting pre-encoded bodies.

Scenario 10: n calls from one event loop with 100 in flight (100 tasks taking the next call
number), ``apublish()`` against cent 5's ``AsyncClient`` (aiohttp) and against what
``apublish()`` was before (``sync_to_async(publish, thread_sensitive=False)``). A ticker task
sleeping 1 ms measures how late the loop wakes it: the longest stall is the loop being blocked.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from common import (
    Unavailable, arm_result, cent5, describe, failed_arm, log, percentile, rotated, summary,
)
from workloads import dump

if TYPE_CHECKING:
    from bench import Bench

WARM = "bench:warm"  # warm-up publications go here, so the measured channels count exactly
SITE = "Bench site"


# -- scenario 9 -----------------------------------------------------------------------------------
def s9(bench: Bench) -> dict[str, Any]:
    n = bench.sizes["s9"]
    threads, processes = 8, 4
    api_url, api_key = bench.api_url, bench.api_key
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}

    def ours(channel: str) -> Callable[[], Callable[[int], Any]]:
        from instant_signals import publish

        def make() -> Callable[[int], Any]:
            publish(WARM, "warm-up")
            return lambda i: publish(channel, f"message {i}")

        return make

    def cent(channel: str) -> Callable[[], Callable[[int], Any]]:
        Client, PublishRequest = cent5()

        def make() -> Callable[[int], Any]:
            client = Client(api_url, api_key)
            client.publish(PublishRequest(channel=WARM, data={"message": "warm-up"}))
            return lambda i: client.publish(PublishRequest(channel=channel, data={
                "channel": channel, "site": SITE, "message": f"message {i}"}))

        return make

    def raw(channel: str) -> Callable[[], Callable[[int], Any]]:
        import urllib3

        pool = urllib3.PoolManager(maxsize=threads, retries=False,
                                   timeout=urllib3.Timeout(connect=2.0, read=10.0))
        url = f"{api_url}/publish"
        bodies = [dump({"channel": channel, "data": {"channel": channel, "site": SITE,
                                                     "message": f"message {i}"}}).encode()
                  for i in range(n)]

        def send(i: int) -> None:
            reply = pool.request("POST", url, body=bodies[i], headers=headers)
            if reply.status != 200 or b'"error"' in reply.data:
                raise RuntimeError(f"HTTP {reply.status}: {reply.data[:200]!r}")

        def make() -> Callable[[int], Any]:
            pool.request("POST", url, body=dump({"channel": WARM, "data": {}}), headers=headers)
            return send

        return make

    def in_threads(factory: Callable[[str], Callable[[], Callable[[int], Any]]],
                   channel: str) -> tuple[float, dict[str, float]]:
        make = factory(channel)
        barrier = threading.Barrier(threads + 1)
        errors: list[str] = []

        def work() -> None:
            try:
                send = make()
            except Exception as exc:  # noqa: BLE001
                errors.append(describe(exc))
                barrier.abort()
                return
            barrier.wait()
            try:
                for i in range(n):
                    send(i)
            except Exception as exc:  # noqa: BLE001
                errors.append(describe(exc))

        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        start, cpu = time.perf_counter(), time.process_time()
        for t in pool:
            t.join()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        if errors:
            raise RuntimeError(f"{len(errors)} thread(s) failed, first: {errors[0]}")
        return threads * n / elapsed, {"client_cpu_us_per_msg": cpu / (threads * n) * 1e6}

    def in_processes(kind: str, channel: str) -> tuple[float, dict[str, float]]:
        if kind == "cent5":
            cent5()  # Unavailable here means unavailable there
        procs = [bench.spawn("publish", kind, channel, str(n), wait=False)
                 for _ in range(processes)]
        for proc in procs:
            bench.ready(proc)
        for proc in procs:
            bench.go(proc)
        done = [bench.collect(proc) for proc in procs]
        errors = sum(d["errors"] for d in done)
        if errors:
            raise RuntimeError(f"{errors} publishes failed")
        return (processes * n / (max(d["t1"] for d in done) - min(d["t0"] for d in done)),
                {"client_cpu_us_per_msg": sum(d["cpu"] for d in done) / (processes * n) * 1e6})

    arms: dict[str, tuple[Callable[[str], Any], int]] = {
        "instant_signals publish(), 8 threads": (lambda ch: in_threads(ours, ch), threads),
        "cent 5 Client, 8 threads": (lambda ch: in_threads(cent, ch), threads),
        "raw urllib3 pool, 8 threads": (lambda ch: in_threads(raw, ch), threads),
        "instant_signals publish(), 4 processes": (lambda ch: in_processes("ours", ch), processes),
        "cent 5 Client, 4 processes": (lambda ch: in_processes("cent5", ch), processes),
        "raw urllib3 pool, 4 processes": (lambda ch: in_processes("raw", ch), processes),
    }
    out = run_rate_arms(bench, "s9", arms, n)
    for arm in out["arms"].values():
        cpu = arm.get("client_cpu_us_per_msg")
        if cpu and cpu.get("median") is not None:
            arm["note"] = f"client CPU {cpu['median']:.0f} µs per message"
    return out


def run_rate_arms(bench: Bench, tag: str, arms: dict[str, tuple[Callable[[str], float], int]],
                  n: int) -> dict[str, Any]:
    """Each arm once per round into its own channel; value = msg/s; delivered by Centrifugo."""
    raw = {name: {"values": [], "expected": [], "delivered": [], "status": "ok", "error": None,
                  "extra": {}} for name in arms}
    rounds = bench.rounds_for(tag)
    for r in range(rounds):
        for index, (name, (fn, callers)) in rotated(arms, r):
            slot = raw[name]
            if slot["status"] != "ok":
                continue
            channel = f"bench:{tag}-a{index}-r{r}"
            try:
                value = fn(channel)
            except Unavailable as exc:
                slot.update(status="unavailable", error=str(exc))
                continue
            except Exception as exc:  # noqa: BLE001
                slot.update(status="failed", error=describe(exc))
                log(f"{tag} {name}: FAILED {slot['error']}")
                continue
            if isinstance(value, tuple):
                value, extra = value
                for key, v in extra.items():
                    slot["extra"].setdefault(key, []).append(v)
            slot["values"].append(value)
            slot["expected"].append(n * callers)
            slot["delivered"].append(bench.offset(channel))
        log(f"{tag} round {r + 1}/{rounds} done")
    out: dict[str, Any] = {"unit": "msg/s", "n": n, "arms": {}}
    for name, slot in raw.items():
        if slot["status"] != "ok":
            out["arms"][name] = failed_arm(slot["status"], slot["error"])
            continue
        extra = {key: summarize(values) for key, values in slot["extra"].items()}
        out["arms"][name] = arm_result(slot["values"], expected=slot["expected"],
                                       delivered=slot["delivered"], **extra)
    return out


def summarize(values: list[float]) -> dict[str, Any]:

    return summary(values)


# -- scenario 10 ----------------------------------------------------------------------------------
INFLIGHT = 100


async def _lag_monitor(stop: asyncio.Event, lags: list[float], busy: list[float]) -> None:
    """How late a 1 ms sleep wakes up (wall clock: whatever held the loop, including the OS
    running another process), and how much CPU the loop's thread used meanwhile (its own
    work: code running on the loop, not waiting)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t, cpu = loop.time(), time.thread_time()
        await asyncio.sleep(0.001)
        lags.append(loop.time() - t - 0.001)
        busy.append(time.thread_time() - cpu)


async def _drive(call: Callable[[int], Any], n: int) -> tuple[float, list[float], list[float]]:
    """n calls, INFLIGHT at a time; (seconds, loop lags, loop thread's CPU per tick)."""
    stop, lags, busy = asyncio.Event(), [], []
    monitor = asyncio.create_task(_lag_monitor(stop, lags, busy))
    await asyncio.sleep(0.01)
    lags.clear()
    busy.clear()
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(INFLIGHT)))
    elapsed = time.perf_counter() - start
    stop.set()
    await monitor
    return elapsed, lags, busy


def s10(bench: Bench) -> dict[str, Any]:
    n = bench.sizes["s10"]

    def ours(channel: str) -> tuple[float, dict[str, float]]:
        from instant_signals import apublish

        async def main() -> tuple[float, list[float], list[float]]:
            await apublish(WARM, "warm-up")
            return await _drive(lambda i: apublish(channel, f"message {i}"), n)

        return finish(asyncio.run(main()))

    def previous(channel: str) -> tuple[float, dict[str, float]]:
        from asgiref.sync import sync_to_async

        from instant_signals import publish

        threaded = sync_to_async(publish, thread_sensitive=False)

        async def main() -> tuple[float, list[float], list[float]]:
            await threaded(WARM, "warm-up")
            return await _drive(lambda i: threaded(channel, f"message {i}"), n)

        return finish(asyncio.run(main()))

    def cent(channel: str) -> tuple[float, dict[str, float]]:
        cent5()
        from cent import AsyncClient, PublishRequest

        async def main() -> tuple[float, list[float], list[float]]:
            client = AsyncClient(bench.api_url, bench.api_key)
            try:
                await client.publish(PublishRequest(channel=WARM, data={"m": "warm-up"}))
                return await _drive(lambda i: client.publish(PublishRequest(
                    channel=channel, data={"channel": channel, "site": SITE,
                                           "message": f"message {i}"})), n)
            finally:
                await client._session.close()

        return finish(asyncio.run(main()))

    def finish(measured: tuple[float, list[float], list[float]]) -> tuple[float, dict[str, float]]:
        seconds, lags, busy = measured
        lag_ms = [x * 1000 for x in lags] or [0.0]
        return n / seconds, {"loop_lag_max_ms": max(lag_ms),
                             "loop_lag_p99_ms": percentile(lag_ms, 0.99),
                             "loop_busy_max_ms": max(busy or [0.0]) * 1000}

    arms = {
        "instant_signals apublish()": (ours, 1),
        "cent 5 AsyncClient": (cent, 1),
        "sync_to_async(publish) (apublish before)": (previous, 1),
    }
    out = run_rate_arms(bench, "s10", arms, n)
    out["inflight"] = INFLIGHT
    for arm in out["arms"].values():
        lag = arm.get("loop_lag_max_ms")
        if lag and lag.get("max") is not None:
            arm["note"] = (f"event loop: longest stall {lag['max']:.2f} ms (median of the "
                           f"rounds' longest {lag['median']:.2f} ms), p99 "
                           f"{arm['loop_lag_p99_ms']['median']:.2f} ms; longest run of the "
                           f"loop's own thread {arm['loop_busy_max_ms']['max']:.2f} ms")
    return out


# -- profiles -----------------------------------------------------------------------------------
def publish_loop(bench: Bench, n: int) -> None:
    from instant_signals import publish

    for i in range(n):
        publish("bench:profile", f"message {i}")


def profile_jobs(bench: Bench) -> dict[str, Any]:
    n = bench.sizes["s10"]

    def apublish_run() -> None:
        from instant_signals import apublish

        async def main() -> None:
            await _drive(lambda i: apublish("bench:profile", f"message {i}"), n)

        asyncio.run(main())

    return {"s10-apublish": apublish_run}
