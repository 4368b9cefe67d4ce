"""A real centrifuge-python client run in a background thread, for synchronous Django tests."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from centrifuge import Client, PublicationContext, SubscriptionEventHandler
from centrifuge.handlers import ClientEventHandler


class _Recorder(SubscriptionEventHandler):
    def __init__(self, owner: "LiveClient", channel: str):
        self.owner = owner
        self.channel = channel

    async def on_publication(self, ctx: PublicationContext) -> None:
        with self.owner.lock:
            self.owner.received.append((self.channel, ctx.pub.data))

    async def on_unsubscribed(self, ctx: Any) -> None:
        with self.owner.lock:
            self.owner.unsubscribed[self.channel] = (ctx.code, ctx.reason)
            self.owner.unsubscribed_at[self.channel] = time.monotonic()


class _ClientEvents(ClientEventHandler):
    def __init__(self, owner: "LiveClient"):
        self.owner = owner

    async def on_disconnected(self, ctx: Any) -> None:
        self.owner.disconnects.append((ctx.code, ctx.reason))
        self.owner.disconnected_at.append(time.monotonic())

    async def on_connecting(self, ctx: Any) -> None:
        """Also a disconnect, when the server ends the connection with a code that asks the
        client to reconnect (3000-3499)."""
        if ctx.code >= 3000:
            self.owner.disconnects.append((ctx.code, ctx.reason))
            self.owner.disconnected_at.append(time.monotonic())

    async def on_error(self, ctx: Any) -> None:
        self.owner.errors.append(ctx.error)


class LiveClient:
    """Connects with ``token`` and subscribes to channels; publications land in ``received``."""

    def __init__(self, ws_url: str, token: str = ""):
        self.received: list[tuple[str, Any]] = []
        self.unsubscribed: dict[str, tuple[int, str]] = {}
        self.unsubscribed_at: dict[str, float] = {}  # time.monotonic() of each unsubscribe
        self.disconnects: list[tuple[int, str]] = []
        self.disconnected_at: list[float] = []
        self.errors: list[Any] = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = Client(ws_url, events=_ClientEvents(self), token=token, timeout=5.0,
                             max_reconnect_delay=1.0)
        self.subs: dict[str, Any] = {}

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connect(self, timeout: float = 5.0) -> None:
        async def go() -> None:
            await self.client.connect()
            await self.client.ready(timeout=timeout)

        self.run(go(), timeout + 2)

    def subscribe(self, channel: str, token: str = "", timeout: float = 5.0) -> None:
        """Subscribe and wait until subscribed; raises if Centrifugo refuses. A channel this
        client was unsubscribed from is subscribed again with a new subscription."""

        async def go() -> None:
            old = self.subs.pop(channel, None)
            if old is not None:
                self.client.remove_subscription(old)  # must be unsubscribed already
                with self.lock:
                    self.unsubscribed.pop(channel, None)
                    self.unsubscribed_at.pop(channel, None)
            sub = self.client.new_subscription(channel, events=_Recorder(self, channel), token=token)
            self.subs[channel] = sub
            await sub.subscribe()
            await sub.ready(timeout=timeout)

        self.run(go(), timeout + 2)

    def is_subscribed(self, channel: str) -> bool:
        """Subscribed (or subscribing) and not unsubscribed since."""
        with self.lock:
            return channel in self.subs and channel not in self.unsubscribed

    def wait_for(self, count: int, timeout: float = 10.0, channel: str | None = None) -> list[Any]:
        """The first ``count`` publications (of ``channel``), waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                got = [d for c, d in self.received if channel is None or c == channel]
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.01)

    def close(self) -> None:
        try:
            self.run(self.client.disconnect(), 5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
