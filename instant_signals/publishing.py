"""``publish()``: custom events in django-instant's envelope, checked before any network call.

``apublish()`` is the same call for async code. Its checks and encoding run at once, in the
caller; the HTTP request runs in a worker thread, so the event loop is never blocked by it.
Calls made from one event loop while its request is in flight wait together and then go out as
one Centrifugo ``/batch`` request (commands in call order, ``parallel`` off; at most
``BATCH_SIZE`` per request): a burst of concurrent calls costs a few requests instead of one
each, and each caller still gets its own answer from its own reply — the publication's result,
or the ``CentrifugoError`` Centrifugo gave for it (or for the whole request).
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections import deque
from typing import Any, NamedTuple

from . import client, conf, envelope, reporting
from .channels import validate_channel
from .exceptions import UNKNOWN_CHANNEL, CentrifugoError

logger = logging.getLogger("instant_signals")

# A coalesced /batch stops growing past this many bytes (a single larger command goes alone).
MAX_BATCH_BYTES = 1024 * 1024


def _prepare(channel: str, message: Any, data: Any, event_class: str | None, bucket: str,
             site: str | None) -> tuple[dict[str, Any], str]:
    """The envelope and the encoded ``publish`` command; ``ValueError`` for bad input."""
    validate_channel(channel)
    if message is None and data is None:
        raise ValueError("publish() needs a message or data")
    payload = envelope.custom_event(channel, message, data=data, event_class=event_class,
                                    bucket=bucket, site=site)
    return payload, envelope.publish_command(channel, envelope.encode(payload))


def _failed(channel: str, exc: CentrifugoError, fail_silently: bool) -> None:
    if exc.code == UNKNOWN_CHANNEL:
        reporting.advise_unknown_channel([channel])
    if not fail_silently:
        raise exc
    logger.warning("instant_signals: publish to %r failed: %s", channel, exc)


def publish(
    channel: str,
    message: Any = None,
    *,
    data: Any = None,
    event_class: str | None = None,
    bucket: str = "",
    site: str | None = None,
    fail_silently: bool = False,
) -> dict[str, Any] | None:
    """Publish a custom event into ``channel`` now (not on commit).

    Raises ``ValueError`` for a bad channel, no message and no data, or a payload that is not
    JSON or too large, before any network call. Raises ``CentrifugoError`` when Centrifugo fails,
    unless ``fail_silently`` (then it is logged and None is returned). Returns Centrifugo's result
    (``{"offset": ..., "epoch": ...}`` on channels with history).
    """
    payload, command = _prepare(channel, message, data, event_class, bucket, site)
    captured = reporting.capturing()
    if captured is not None:
        captured.append(payload)
        return {}
    try:
        reporting.stats.add("requests")
        reply = client.post("publish", command)
        if "error" in reply:
            raise CentrifugoError.from_reply(reply["error"])
    except CentrifugoError as exc:
        _failed(channel, exc, fail_silently)
        return None
    reporting.stats.add("published")
    result = reply.get("result", {})
    return result if isinstance(result, dict) else {}


async def apublish(
    channel: str,
    message: Any = None,
    *,
    data: Any = None,
    event_class: str | None = None,
    bucket: str = "",
    site: str | None = None,
    fail_silently: bool = False,
) -> dict[str, Any] | None:
    """``publish()`` for async code, with the same arguments, checks, errors and result.

    The HTTP request runs in a worker thread, never blocking the event loop; concurrent calls
    from one loop share ``/batch`` requests (see the module's docstring), in call order.
    """
    payload, command = _prepare(channel, message, data, event_class, bucket, site)
    captured = reporting.capturing()
    if captured is not None:
        captured.append(payload)
        return {}
    try:
        result = await _sender().submit(command)
    except CentrifugoError as exc:
        _failed(channel, exc, fail_silently)
        return None
    reporting.stats.add("published")
    return result


# -- coalescing the calls of one event loop ----------------------------------------------------

class _Call(NamedTuple):
    command: str  # the publish command's parameters, encoded
    future: asyncio.Future[dict[str, Any]]


class _Sender:
    """The calls of one event loop waiting for a request, and the task that sends them."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: deque[_Call] = deque()
        self.task: asyncio.Task[None] | None = None

    def submit(self, command: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self.queue.append(_Call(command, future))
        if self.task is None:
            self.task = self.loop.create_task(self._run())
        return future

    async def _run(self) -> None:
        calls: list[_Call] = []
        try:
            while self.queue:
                calls = self._take()
                if not calls:
                    continue
                outcomes: list[dict[str, Any] | BaseException]
                try:
                    outcomes = list(await self.loop.run_in_executor(
                        None, _send, [call.command for call in calls]))
                except CentrifugoError as exc:  # the whole request failed: everyone's error
                    outcomes = [_copy(exc) for _ in calls]
                except Exception as exc:  # noqa: BLE001 - e.g. no API key: reaches every caller
                    outcomes = [exc] * len(calls)
                for call, outcome in zip(calls, outcomes):
                    if call.future.done():  # the caller was cancelled meanwhile
                        continue
                    if isinstance(outcome, BaseException):
                        call.future.set_exception(outcome)
                    else:
                        call.future.set_result(outcome)
                calls = []
        except BaseException:  # cancelled (the loop is closing): nobody may wait forever
            for call in [*calls, *self.queue]:
                if not call.future.done():
                    call.future.cancel()
            self.queue.clear()
            raise
        finally:
            self.task = None

    def _take(self) -> list[_Call]:
        """The oldest waiting calls, at most BATCH_SIZE and about MAX_BATCH_BYTES of them."""
        limit = int(conf.app_setting("BATCH_SIZE"))
        taken: list[_Call] = []
        size = 0
        while self.queue and len(taken) < limit:
            call = self.queue[0]
            if taken and size + len(call.command) > MAX_BATCH_BYTES:
                break
            self.queue.popleft()
            if not call.future.done():  # skip callers cancelled before their turn
                taken.append(call)
                size += len(call.command)
        return taken


def _send(commands: list[str]) -> list[dict[str, Any] | CentrifugoError]:
    """In a worker thread: one ``/publish`` (a lone call) or one ``/batch``; per command, its
    result or its error. Raises ``CentrifugoError`` when the request as a whole failed."""
    reporting.stats.add("requests")
    if len(commands) == 1:
        reply = client.post("publish", commands[0])
        if "error" in reply:
            return [CentrifugoError.from_reply(reply["error"])]
        result = reply.get("result", {})
        return [result if isinstance(result, dict) else {}]
    outcomes: list[dict[str, Any] | CentrifugoError] = []
    for reply in client.batch(['{"publish":' + command + "}" for command in commands]):
        error = client.reply_error(reply)
        if error is not None:
            outcomes.append(error)
        else:
            result = reply.get("publish", {})
            outcomes.append(result if isinstance(result, dict) else {})
    return outcomes


def _copy(exc: CentrifugoError) -> CentrifugoError:
    """One exception object per caller (raising one object in many tasks tangles tracebacks)."""
    return CentrifugoError(exc.message, code=exc.code, retryable=exc.retryable)


_senders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sender] = \
    weakref.WeakKeyDictionary()


def _sender() -> _Sender:
    loop = asyncio.get_running_loop()
    sender = _senders.get(loop)
    if sender is None:
        sender = _senders[loop] = _Sender(loop)
    return sender


os.register_at_fork(after_in_child=_senders.clear)
