"""``RelayReport``: the periodic line of ``relay_outbox`` (rate and backlog).

One line per period, whatever happened, so a silent relay is a stopped one::

    delivered 1520 in 10.0 s (152.0/s), pending 340 (oldest 2.1 s), dead letters 3

``delivered``: rows sent since the previous line (and the rate over that time); ``pending``:
rows waiting in the whole table (every relay's, not only this one's), with the age of the
oldest; ``dead letters``: rows that will not be sent again (``OutboxEntry.objects.dead()``);
then ``waiting to retry: N partition(s)`` while this relay backs off after failures.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Callable

from django.utils import timezone

from .relay import Relay

logger = logging.getLogger("instant_signals")


class RelayReport:
    """Calls ``write(line)`` at most every ``every`` seconds, when ``tick()`` is called."""

    def __init__(self, relay: Relay, every: float, write: Callable[[str], object], *,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = timezone.now) -> None:
        if every <= 0:
            raise ValueError("every must be positive")
        self.relay = relay
        self.every = float(every)
        self.write = write
        self.clock = clock
        self.now = now
        self._since = clock()
        self._sent = relay.sent_total

    def tick(self) -> None:
        """Write the line if a period has passed since the last one."""
        if self.clock() - self._since >= self.every:
            self.report()

    def report(self) -> None:
        """Write the line now (and start the next period). Never raises: reporting must not
        stop the relay (a backlog that cannot be read is said so in the line)."""
        at = self.clock()
        elapsed = max(at - self._since, 1e-9)
        delivered = self.relay.sent_total - self._sent
        self._since, self._sent = at, self.relay.sent_total
        line = f"delivered {delivered} in {elapsed:.1f} s ({delivered / elapsed:.1f}/s)"
        try:
            backlog = self.relay.store.backlog()
        except Exception as exc:  # noqa: BLE001 - e.g. the database is down for a moment
            logger.warning("instant_signals: cannot read the outbox backlog: %s", exc)
            line += f", backlog unknown ({type(exc).__name__})"
        else:
            line += f", pending {backlog.pending}"
            if backlog.oldest is not None:
                line += f" (oldest {age(self.now() - backlog.oldest)})"
            line += f", dead letters {backlog.dead}"
        waiting = sum(1 for due in self.relay.not_before.values() if due > at)
        if waiting:
            line += f", waiting to retry: {waiting} partition{'s' if waiting != 1 else ''}"
        try:
            self.write(line)
        except Exception:  # noqa: BLE001 - a closed stdout must not end the relay
            logger.warning("instant_signals: cannot write the relay report", exc_info=True)


def age(delta: timedelta) -> str:
    """``4.2 s``, ``3.5 min``, ``2.0 h``, ``1.5 d`` (a negative age, from skewed clocks: 0 s)."""
    seconds = max(0.0, delta.total_seconds())
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"
