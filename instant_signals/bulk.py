"""Broadcasting what Django sends no signals for: ``update()``, ``bulk_create()``, ``bulk_update()``.

Use ``BroadcastQuerySet`` (or ``BroadcastManager``) on a registered model and these three calls
publish their events like ``save()`` does, batched the same way after the transaction commits.
"""

from __future__ import annotations

from typing import Any, Iterable

from django.db import models, transaction

from . import delivery
from .delivery import CREATED, UPDATED
from .registry import broadcasting_enabled, registry


def broadcast_instances(instances: Iterable[models.Model], event: str = UPDATED,
                        using: str | None = None) -> None:
    """Publish ``event`` for each instance as a save would (e.g. after a raw SQL change)."""
    for instance in instances:
        alias = using or instance._state.db or "default"
        for change in registry.changes_for(instance, event, alias):
            delivery.record(change, alias)
        registry.snapshot(instance)


class BroadcastQuerySet(models.QuerySet):
    """A QuerySet whose bulk writes publish events for registered models."""

    def update(self, **kwargs: Any) -> int:
        if not (registry.is_registered(self.model) and broadcasting_enabled()):
            return super().update(**kwargs)
        with transaction.atomic(using=self.db, savepoint=False):
            before = list(self._chain())  # the rows and their values before the update
            count = super().update(**kwargs)
            after = {obj.pk: obj for obj in self.model._base_manager.using(self.db).filter(
                pk__in=[obj.pk for obj in before])}
            for old in before:
                new = after.get(old.pk)
                if new is None:
                    continue
                previous = registry.previous_values(old)
                for change in registry.changes_for(new, UPDATED, self.db, previous=previous):
                    delivery.record(change, self.db)
        return count

    update.alters_data = True  # type: ignore[attr-defined]

    def bulk_create(self, objs: Iterable[models.Model], *args: Any, **kwargs: Any) -> list:
        created = super().bulk_create(objs, *args, **kwargs)
        if registry.is_registered(self.model) and broadcasting_enabled():
            broadcast_instances((o for o in created if o.pk is not None), CREATED, self.db)
        return created

    def bulk_update(self, objs: Iterable[models.Model], fields: Any, *args: Any, **kwargs: Any) -> int:
        objs = list(objs)
        count = super().bulk_update(objs, fields, *args, **kwargs)
        if registry.is_registered(self.model) and broadcasting_enabled():
            broadcast_instances(objs, UPDATED, self.db)
        return count


BroadcastManager = models.Manager.from_queryset(BroadcastQuerySet)
