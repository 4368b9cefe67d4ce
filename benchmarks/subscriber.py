"""A centrifuge-python client in a background thread: what a browser tab sees, timed.

The publication handler stamps ``time.perf_counter()`` on arrival (one clock with the harness
and its worker processes) and keeps per channel: the count, the last arrival, the arrival of
each model event by pk (``expect``/``wait``, scenarios 3 and 8) and, when asked, every event id
and version in arrival order (scenario 6b counts duplicates, the hung-server run checks order).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from centrifuge import Client, PublicationContext, SubscriptionEventHandler


class _Handler(SubscriptionEventHandler):
    def __init__(self, owner: "Subscriber", channel: str):
        self.owner = owner
        self.channel = channel

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.owner.arrived(self.channel, ctx.pub.data, time.perf_counter())


class Stream:
    """What one subscribed channel received."""

    def __init__(self, keep: bool):
        self.count = 0
        self.last = 0.0
        self.first = 0.0
        self.keep = keep
        self.events: list[tuple[Any, Any, Any, float, Any]] = []  # (id, pk, version, arrival, data)


class Subscriber:
    def __init__(self, ws_url: str, token: str = ""):
        self.ws_url = ws_url
        self.token = token
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.lock = threading.Lock()
        self.streams: dict[str, Stream] = {}
        self.subs: dict[str, Any] = {}
        self.waiting: dict[str, threading.Event] = {}
        self.times: dict[str, float] = {}

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> "Subscriber":
        self.thread.start()

        async def go() -> None:
            self.client = Client(self.ws_url, token=self.token, timeout=5.0)
            await self.client.connect()
            await self.client.ready(timeout=5.0)

        self._run(go())
        return self

    def add(self, channel: str, keep: bool = False) -> Stream:
        """Subscribe to ``channel`` (and wait until subscribed)."""
        stream = Stream(keep)
        with self.lock:
            self.streams[channel] = stream

        async def go() -> None:
            sub = self.client.new_subscription(channel, events=_Handler(self, channel))
            self.subs[channel] = sub
            await sub.subscribe()
            await sub.ready(timeout=5.0)

        self._run(go())
        return stream

    def remove(self, channel: str) -> None:
        sub = self.subs.pop(channel, None)
        if sub is None:
            return

        async def go() -> None:
            await sub.unsubscribe()
            self.client.remove_subscription(sub)

        try:
            self._run(go(), 5)
        except Exception:  # noqa: BLE001 - the channel is not used again
            pass

    def arrived(self, channel: str, data: Any, when: float) -> None:
        inner = data.get("data") if isinstance(data, dict) else None
        pk = inner.get("pk") if isinstance(inner, dict) else None
        with self.lock:
            stream = self.streams.get(channel)
            if stream is None:
                return
            stream.count += 1
            stream.last = when
            if stream.count == 1:
                stream.first = when
            if stream.keep:
                stream.events.append((data.get("id"), pk, inner.get("version") if inner else None,
                                      when, data))
            if pk is None:
                return
            key = f"{channel}/{pk}"
            self.times[key] = when
            event = self.waiting.get(key)
        if event is not None:
            event.set()

    # -- one event at a time (latency) ----------------------------------------------------------
    def expect(self, channel: str, pk: Any) -> None:
        with self.lock:
            self.waiting[f"{channel}/{pk}"] = threading.Event()

    def wait(self, channel: str, pk: Any, timeout: float = 5.0) -> float | None:
        """Arrival time of the publication of ``pk`` (None if it did not come in time)."""
        key = f"{channel}/{pk}"
        event = self.waiting[key]
        event.wait(timeout)
        with self.lock:
            self.waiting.pop(key, None)
            return self.times.pop(key, None)

    # -- many events (rates) --------------------------------------------------------------------
    def wait_count(self, channel: str, n: int, timeout: float = 60.0,
                   idle: float | None = None) -> Stream:
        """Wait until ``channel`` received ``n`` publications, ``timeout`` passed, or (``idle``)
        nothing arrived for that long."""
        deadline = time.monotonic() + timeout
        stream = self.streams[channel]
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self.lock:
                count = stream.count
            if count >= n:
                break
            if count != seen:
                seen, quiet_since = count, time.monotonic()
            elif idle is not None and time.monotonic() - quiet_since > idle:
                break
            time.sleep(0.002)
        return stream

    def close(self) -> None:
        async def shutdown() -> None:
            await self.client.disconnect()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self._run(shutdown(), 5)
        except Exception:  # noqa: BLE001
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
