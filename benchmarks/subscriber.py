"""A centrifuge-python client subscribed to one channel in a background thread (scenario 3).

The publication handler stamps ``time.perf_counter()`` on arrival, keyed by the event's pk, so
the harness measures commit-to-receipt on one clock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from centrifuge import Client, PublicationContext, SubscriptionEventHandler


class _Handler(SubscriptionEventHandler):
    def __init__(self, owner: "Subscriber"):
        self.owner = owner

    async def on_publication(self, ctx: PublicationContext) -> None:
        arrived = time.perf_counter()
        data = ctx.pub.data
        inner = data.get("data") if isinstance(data, dict) else None
        key = str(inner.get("pk")) if isinstance(inner, dict) else None
        self.owner.arrived(key, arrived)


class Subscriber:
    def __init__(self, ws_url: str, channel: str, token: str = ""):
        self.token = token
        self.channel = channel
        self.ws_url = ws_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.lock = threading.Lock()
        self.waiting: dict[str, threading.Event] = {}
        self.times: dict[str, float] = {}
        self.received = 0

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()

        async def go() -> None:
            self.client = Client(self.ws_url, token=self.token, timeout=5.0)
            await self.client.connect()
            await self.client.ready(timeout=5.0)
            sub = self.client.new_subscription(self.channel, events=_Handler(self))
            await sub.subscribe()
            await sub.ready(timeout=5.0)

        self._run(go())

    def arrived(self, key: str | None, when: float) -> None:
        with self.lock:
            self.received += 1
            if key is None:
                return
            self.times[key] = when
            event = self.waiting.get(key)
        if event is not None:
            event.set()

    def expect(self, key: str) -> None:
        with self.lock:
            self.waiting[key] = threading.Event()

    def wait(self, key: str, timeout: float = 5.0) -> float | None:
        """Arrival time of the publication of ``key`` (None if it did not come in time)."""
        event = self.waiting[key]
        event.wait(timeout)
        with self.lock:
            self.waiting.pop(key, None)
            return self.times.pop(key, None)

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
