"""``on_delete=SET_NULL``/``SET_DEFAULT``/``SET(...)``: rows Django updates without a signal.

Django's deletion ``Collector`` schedules those updates with ``add_field_update(field, value,
objs)`` (``objs`` a lazy queryset, or instances) and runs them in ``delete()`` as one ``UPDATE``
per (field, value). Django offers no hook there, so both methods are wrapped once: the first
notes the updates that concern a declaration, the second reads those rows in bulk (one
``SELECT`` per scheduled update, never one per row) inside the deletion's transaction, before
they change, and records them as ``updated`` once the deletion ran, so they go out after commit
with the rest of the transaction.
"""

from __future__ import annotations

from typing import Any, Callable

from django.db import models, transaction
from django.db.models.deletion import Collector

from .. import tracking
from ..envelope import UPDATED
from .signals import captures
from .switch import broadcasting_enabled

PENDING_ATTR = "_instant_signals_field_updates"
_installed: dict[str, Callable[..., Any]] = {}


def install() -> None:
    """Wrap ``Collector.add_field_update`` and ``Collector.delete`` (once per process)."""
    if _installed:
        return
    _installed["add_field_update"] = add = Collector.add_field_update
    _installed["delete"] = delete = Collector.delete

    def add_field_update(self: Collector, field: Any, value: Any, objs: Any) -> None:
        add(self, field, value, objs)
        model = _model_of(objs)
        if model is not None and any(c.for_save(model).declarations for c in captures):
            self.__dict__.setdefault(PENDING_ATTR, []).append((field, value, objs))

    def wrapped_delete(self: Collector) -> Any:
        pending = self.__dict__.pop(PENDING_ATTR, None)
        if not pending or not broadcasting_enabled():
            return delete(self)
        with transaction.atomic(using=self.using, savepoint=False):
            rows = [(field, value, _rows(objs)) for field, value, objs in pending]
            result = delete(self)
            _record(rows, self.using)
        return result

    Collector.add_field_update = add_field_update  # type: ignore[method-assign]
    Collector.delete = wrapped_delete  # type: ignore[method-assign]


def uninstall() -> None:
    """Undo ``install()`` (tests)."""
    if _installed:
        Collector.add_field_update = _installed.pop("add_field_update")  # type: ignore[method-assign]
        Collector.delete = _installed.pop("delete")  # type: ignore[method-assign]


def _model_of(objs: Any) -> type[models.Model] | None:
    if isinstance(objs, models.QuerySet):
        return objs.model
    for instance in objs:
        return type(instance)
    return None


def _rows(objs: Any) -> list[models.Model]:
    """The rows as they are before the update: a queryset is read once (a clone: Django still
    runs its one ``UPDATE`` on the original); instances in hand are taken as they are."""
    if isinstance(objs, models.QuerySet):
        return list(objs.all())
    return list(objs)


def _record(rows: list[tuple[Any, Any, list[models.Model]]], using: str) -> None:
    """Apply each scheduled update to the rows it touches (a row touched by several, e.g.
    ``SET_NULL`` on one key and ``SET_DEFAULT`` on another, is one row with all of them) and
    record them as ``updated``, compared with the rows as they were read."""
    merged: dict[tuple[type[models.Model], Any], tuple[models.Model, dict[str, Any]]] = {}
    for field, value, instances in rows:
        stored = value.pk if isinstance(value, models.Model) else value
        for instance in instances:
            key = (type(instance), instance.pk)
            if key not in merged:
                previous = tracking.previous(instance)
                if previous is None:
                    previous = {f.attname: instance.__dict__[f.attname]
                                for f in instance._meta.concrete_fields
                                if f.attname in instance.__dict__}
                merged[key] = (instance, previous)
            row = merged[key][0]
            row.__dict__[field.attname] = stored
            row._state.fields_cache.pop(field.name, None)
    updated = list(merged.values())
    for capture in list(captures):
        capture.record_all(updated, UPDATED, using)
