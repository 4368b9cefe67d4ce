"""What waits to be delivered: the backlog of each durable source, per partition.

``SOURCES`` is the one list of tables whose rows wait for a relay. The admin's delivery page
(and anything else that reports a backlog) walks it; adding a source (a database change log,
say) is one ``BacklogSource`` appended there. Measuring is a single grouped query per source.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from django.db import models
from django.db.models import Count, Min, Q
from django.utils.translation import gettext_lazy as _

from .models import ChangeEntry, OutboxEntry

__all__ = ["SOURCES", "Backlog", "BacklogSource", "ChangeBacklog", "OutboxBacklog",
           "PartitionBacklog"]


@dataclass(frozen=True)
class PartitionBacklog:
    """One partition of a source: rows waiting, the oldest one's time, rows failing, dead."""

    partition: int
    pending: int
    oldest: datetime | None  # created_at of the oldest pending row
    failing: int = 0  # pending rows whose last attempt failed: the partition is backing off
    dead: int = 0  # dead letters (never sent again)
    last_error: str | None = None  # the reason of the oldest failing pending row


@dataclass(frozen=True)
class Backlog:
    """A source's backlog: totals and its partitions (those with any row), in partition order."""

    source: BacklogSource
    partitions: tuple[PartitionBacklog, ...]

    @property
    def pending(self) -> int:
        return sum(p.pending for p in self.partitions)

    @property
    def dead(self) -> int:
        return sum(p.dead for p in self.partitions)

    @property
    def failing(self) -> int:
        return sum(p.failing for p in self.partitions)

    @property
    def oldest(self) -> datetime | None:
        return min((p.oldest for p in self.partitions if p.oldest is not None), default=None)


class BacklogSource(Protocol):
    """A table whose rows wait for delivery."""

    #: shown as the section's title
    label: Any
    #: the rows' model: its ``view`` permission shows the source, its admin lists the rows
    model: type[models.Model]

    def measure(self, using: str | None = None) -> Backlog:
        """The backlog now (``using``: a database alias; None: the model's router decides)."""
        ...


class OutboxBacklog:
    """The outbox table of durable delivery (``OutboxEntry``)."""

    label = _("Outbox (durable delivery)")
    model: type[models.Model] = OutboxEntry

    def measure(self, using: str | None = None) -> Backlog:
        rows = OutboxEntry.objects.all() if using is None else OutboxEntry.objects.using(using)
        pending, failing, dead = (Q(dead_at__isnull=True), Q(dead_at__isnull=True,
                                                              error__isnull=False),
                                  Q(dead_at__isnull=False))
        groups = (rows.order_by().values("partition")
                  .annotate(pending=Count("id", filter=pending),
                            oldest=Min("created_at", filter=pending),
                            failing=Count("id", filter=failing),
                            dead=Count("id", filter=dead))
                  .order_by("partition"))
        partitions = []
        for group in groups:
            last_error = None
            if group["failing"]:
                last_error = rows.filter(failing, partition=group["partition"]).order_by(
                    "id").values_list("error", flat=True).first()
            partitions.append(PartitionBacklog(
                partition=group["partition"], pending=group["pending"], oldest=group["oldest"],
                failing=group["failing"], dead=group["dead"], last_error=last_error))
        return Backlog(self, tuple(partitions))


class ChangeBacklog:
    """The change table of database capture (``ChangeEntry``): one partition, 0 (the relay
    converts it in id order)."""

    label = _("Captured changes (database capture)")
    model: type[models.Model] = ChangeEntry

    def measure(self, using: str | None = None) -> Backlog:
        rows = ChangeEntry.objects.all() if using is None else ChangeEntry.objects.using(using)
        found = rows.order_by().aggregate(
            pending=Count("id", filter=Q(dead_at__isnull=True)),
            oldest=Min("created_at", filter=Q(dead_at__isnull=True)),
            dead=Count("id", filter=Q(dead_at__isnull=False)))
        if not found["pending"] and not found["dead"]:
            return Backlog(self, ())
        last_error = rows.filter(dead_at__isnull=False).order_by("-id").values_list(
            "error", flat=True).first()
        return Backlog(self, (PartitionBacklog(
            partition=0, pending=found["pending"], oldest=found["oldest"], dead=found["dead"],
            last_error=last_error),))


SOURCES: list[BacklogSource] = [OutboxBacklog(), ChangeBacklog()]
"""Every source of delivery backlog, in the order the delivery page shows them."""
