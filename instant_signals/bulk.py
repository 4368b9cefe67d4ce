"""Broadcasting what Django sends no signals for: ``update()``, ``bulk_create()``, ``bulk_update()``.

Use ``BroadcastQuerySet`` (or ``BroadcastManager``) on a registered model and these three calls
publish their events like ``save()`` does, batched the same way (one ``/batch`` request outside
a transaction too). ``broadcast_instances()`` announces rows changed some other way (raw SQL).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Iterable, TypeVar

from django.db import models, transaction

from . import tracking
from .envelope import CREATED, UPDATED
from .capture.switch import broadcasting_enabled
from .registry import BroadcastRegistry, broadcast_registry

__all__ = ["BroadcastManager", "BroadcastQuerySet", "broadcast_instances"]

M = TypeVar("M", bound=models.Model)

# Django's bulk_update() runs update() on this queryset class: that update is part of the bulk
# write and must not publish on its own.
_inside_bulk_update: ContextVar[bool] = ContextVar("instant_signals_bulk_update", default=False)


def broadcast_instances(instances: Iterable[models.Model], event: str = UPDATED,
                        using: str | None = None,
                        registry: BroadcastRegistry = broadcast_registry) -> None:
    """Publish ``event`` for each instance as a save would (e.g. after a raw SQL change): the
    previous state is the instance's snapshot (as loaded); all in one request."""
    by_alias: dict[str, list[tuple[models.Model, None]]] = {}
    for instance in instances:
        by_alias.setdefault(using or instance._state.db or "default", []).append((instance, None))
    for alias, rows in by_alias.items():
        registry.capture.record_all(rows, event, alias)
        for instance, _ in rows:
            tracking.snapshot(instance, alias)


class BroadcastQuerySet(models.QuerySet[M]):
    """A QuerySet whose bulk writes publish events for registered models."""

    registry: BroadcastRegistry = broadcast_registry

    def _broadcasts(self) -> bool:
        return self.registry.capture.concerns(self.model) and broadcasting_enabled()

    def update(self, **kwargs: Any) -> int:
        """``QuerySet.update()`` that publishes ``updated`` for each row (two more queries: the
        rows before and after, in one transaction)."""
        if _inside_bulk_update.get() or not self._broadcasts():
            return super().update(**kwargs)
        with transaction.atomic(using=self.db, savepoint=False):
            before = list(self._chain())  # type: ignore[attr-defined]  # rows before the update
            count = super().update(**kwargs)
            after = self.model._base_manager.using(self.db).in_bulk([o.pk for o in before])
            rows = [(after[old.pk], tracking.previous(old)) for old in before if old.pk in after]
            self.registry.capture.record_all(rows, UPDATED, self.db)
        return count

    update.alters_data = True  # type: ignore[attr-defined]

    def bulk_create(self, objs: Iterable[M], *args: Any, **kwargs: Any) -> list[M]:
        """``QuerySet.bulk_create()`` that publishes ``created`` for each row that got a pk."""
        created = super().bulk_create(objs, *args, **kwargs)
        if self._broadcasts():
            broadcast_instances([o for o in created if o.pk is not None], CREATED, self.db,
                                registry=self.registry)
        return created

    def bulk_update(self, objs: Iterable[M], fields: Iterable[str],
                    batch_size: int | None = None) -> int:
        """``QuerySet.bulk_update()`` that publishes ``updated`` for each object, compared with
        its snapshot (as loaded)."""
        objs = list(objs)
        token = _inside_bulk_update.set(True)
        try:
            count = super().bulk_update(objs, fields, batch_size=batch_size)
        finally:
            _inside_bulk_update.reset(token)
        if self._broadcasts():
            broadcast_instances(objs, UPDATED, self.db, registry=self.registry)
        return count


class BroadcastManager(models.Manager.from_queryset(BroadcastQuerySet)):  # type: ignore[misc]
    """``objects = BroadcastManager()``: the manager of ``BroadcastQuerySet``."""
