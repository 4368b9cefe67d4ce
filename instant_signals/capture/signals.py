"""Signal mode, the default capture: Django's signals (and its deletion collector) → Changes.

What it sees: ``post_save`` (``save()``, ``create()``, ``get_or_create()``, the admin,
``loaddata``'s raw saves, saves of proxies, multi-table children and migrations' historical
models) and ``post_delete`` (``delete()``, ``QuerySet.delete()``, cascades), plus the rows the
deletion collector updates for ``on_delete=SET_NULL``/``SET_DEFAULT``/``SET(...)``
(``collector.py``). What Django sends no signal for is announced by ``bulk.py``'s queryset; raw
SQL and other processes are invisible here (database capture is the mode that sees them).

In database mode (``INSTANT_SIGNALS["CAPTURE"] = "database"``) the triggers capture the
declarations of concrete models (``database.captured``): these receivers then publish only the
others (a proxy's or a multi-table child's own declarations), so nothing is published twice.

A failure never breaks the caller's save, except in durable mode, where a change must not commit
without its event; a migration's save never fails because of a broadcast.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Sequence

from django.db import connections, models, transaction
from django.db.models.signals import class_prepared, post_delete, post_migrate, post_save

from .. import conf, delivery, tracking
from ..declarations import Declaration
from ..envelope import CREATED, DELETED, UPDATED
from . import database
from .changes import changes_of
from .switch import broadcasting_enabled
from .table import Applies, Table, is_historical

logger = logging.getLogger("instant_signals")

# Types of values that are never expressions: skipped without an attribute lookup.
_PLAIN = frozenset({int, str, bool, float, type(None)})

#: Every live capture (class_prepared and the deletion collector consult them).
captures: weakref.WeakSet[SignalCapture] = weakref.WeakSet()


class SignalCapture:
    """The signal receivers of one registry, reading the declarations it pushed into ``table``.

    ``declare(model, declarations)`` connects ``post_save``/``post_delete`` for the model and
    for every class whose writes concern it (proxies, multi-table children, historical models),
    now and as they are defined (``class_prepared``), and keeps their rows' snapshots."""

    def __init__(self, uid: str):
        self.uid = uid
        self.table = Table()
        self._connected: set[type[models.Model]] = set()
        self._historical: list[type[models.Model]] = []  # disconnected after migrate
        # database mode: id(applies) -> (applies, what the triggers do not capture of it)
        self._signal_part: dict[int, tuple[Applies, Applies]] = {}
        captures.add(self)

    # -- connection ---------------------------------------------------------------------------
    def declare(self, model: type[models.Model], declarations: tuple[Declaration, ...]) -> None:
        """Publish writes of ``model`` (and its proxies and children) for ``declarations``;
        ``()`` stops."""
        self.table.declare(model, declarations)
        self._signal_part.clear()
        for sender in [model, *_subclasses(model), *self._connected]:
            self.sync(sender)

    def sync(self, sender: type[models.Model]) -> None:
        """Connect or disconnect ``sender`` to agree with the table."""
        saves = self.table.for_save(sender)
        wanted = bool(saves.declarations or self.table.for_delete(sender).declarations)
        historical = is_historical(sender)
        uid = self._dispatch_uid(sender)
        if wanted:
            post_save.connect(self.post_save, sender=sender, weak=False,
                              dispatch_uid=f"{uid}.post_save")
            post_delete.connect(self.post_delete, sender=sender, weak=False,
                                dispatch_uid=f"{uid}.post_delete")
            if historical:
                self._historical.append(sender)
            else:
                self._connected.add(sender)
                tracking.track(sender, self, saves.attnames)
        elif sender in self._connected or historical:
            post_save.disconnect(sender=sender, dispatch_uid=f"{uid}.post_save")
            post_delete.disconnect(sender=sender, dispatch_uid=f"{uid}.post_delete")
            self._connected.discard(sender)
            tracking.untrack(sender, self)

    def forget_historical(self) -> None:
        for sender in self._historical:
            uid = self._dispatch_uid(sender)
            post_save.disconnect(sender=sender, dispatch_uid=f"{uid}.post_save")
            post_delete.disconnect(sender=sender, dispatch_uid=f"{uid}.post_delete")
        self._historical = []

    def _dispatch_uid(self, model: type[models.Model]) -> str:
        return f"instant_signals.registry{self.uid}.{model._meta.label_lower}"

    # -- what the receivers publish -----------------------------------------------------------
    def for_save(self, sender: type[models.Model]) -> Applies:
        """The declarations a save of ``sender`` publishes here (database mode: those the
        triggers do not capture)."""
        return self._without_captured(self.table.for_save(sender))

    def for_delete(self, sender: type[models.Model]) -> Applies:
        return self._without_captured(self.table.for_delete(sender))

    def concerns(self, sender: type[models.Model]) -> bool:
        """Whether a write of ``sender`` publishes anything through these hooks."""
        return bool(self.for_save(sender).declarations or self.for_delete(sender).declarations)

    def _without_captured(self, applies: Applies) -> Applies:
        if not applies.declarations or not database.enabled():
            return applies
        found = self._signal_part.get(id(applies))
        if found is None or found[0] is not applies:
            kept = tuple(d for d in applies.declarations if not database.captured(d.model))
            if not kept:
                part = Applies((), (), applies.historical)
            else:
                tracked = {a for d in kept for a in d.tracked}
                part = Applies(kept, tuple(a for a in applies.attnames if a in tracked),
                               applies.historical)
            found = self._signal_part[id(applies)] = (applies, part)
        return found[1]

    # -- receivers ----------------------------------------------------------------------------
    def post_save(self, sender: type[models.Model], instance: models.Model, created: bool,
                  raw: bool = False, using: str = "default", **kwargs: Any) -> None:
        applies = self.for_save(sender)
        if not applies.declarations or raw and conf.app_setting("SKIP_RAW_SAVES"):
            return
        stored = _stored_values(instance, applies.attnames, using)
        if broadcasting_enabled():
            row = instance if stored is None else tracking.as_of(instance, stored)
            self._record(applies, [(row, None)], CREATED if created else UPDATED, using)
        tracking.snapshot(instance, using, stored)

    def post_delete(self, sender: type[models.Model], instance: models.Model,
                    using: str = "default", **kwargs: Any) -> None:
        if broadcasting_enabled():
            applies = self.for_delete(sender)
            if applies.declarations:
                self._record(applies, [(instance, None)], DELETED, using)

    # -- recording ----------------------------------------------------------------------------
    def record_all(self, rows: Sequence[tuple[models.Model, dict[str, Any] | None]],
                   event: str, using: str) -> None:
        """Record ``event`` of each (instance, previous values or None) together: outside a
        transaction they go out in one request. Rows of classes no declaration concerns are
        skipped."""
        if not rows:
            return
        by_class: dict[type[models.Model], list[tuple[models.Model, dict[str, Any] | None]]] = {}
        for row in rows:
            by_class.setdefault(type(row[0]), []).append(row)
        for model, group in by_class.items():
            applies = (self.for_delete if event == DELETED else self.for_save)(model)
            if applies.declarations:
                self._record(applies, group, event, using)

    def _record(self, applies: Applies,
                rows: Sequence[tuple[models.Model, dict[str, Any] | None]], event: str,
                using: str) -> None:
        try:
            changes = [c for instance, previous in rows
                       for c in changes_of(applies.declarations, instance, event, previous)]
            if not changes:
                return
            if applies.historical and connections[using].in_atomic_block:
                with transaction.atomic(using=using):  # a failure must not break the migration
                    delivery.get_backend().record_many(changes, using)
            else:
                delivery.get_backend().record_many(changes, using)
        except Exception:
            if delivery.is_durable() and not applies.historical:
                raise  # the change must roll back with its lost event
            labels = sorted({type(instance)._meta.label for instance, _ in rows})
            logger.exception("instant_signals: could not broadcast %s %s", ", ".join(labels),
                             event)


def _stored_values(instance: models.Model, attnames: Sequence[str],
                   using: str) -> dict[str, Any] | None:
    """The values the database stored for the fields that were assigned an expression
    (``F("count") + 1``, ``Func``, ``Case``...), read back in one query; None when none was (no
    query)."""
    current = instance.__dict__
    assigned = None
    for name in attnames:
        value = current.get(name)
        if type(value) in _PLAIN or not hasattr(value, "resolve_expression"):
            continue
        if assigned is None:
            assigned = []
        assigned.append(name)
    if assigned is None:
        return None
    model = type(instance)
    row = model._base_manager.db_manager(using).filter(pk=instance.pk).values_list(
        *assigned).first()
    if row is None:  # deleted meanwhile: nothing better than leaving the fields out
        return {}
    return dict(zip(assigned, row))


def _subclasses(model: type[models.Model]) -> list[type[models.Model]]:
    """Model classes defined so far that inherit from ``model`` (proxies, children)."""
    out = []
    pending = list(model.__subclasses__())
    while pending:
        cls = pending.pop()
        if hasattr(cls, "_meta") and not cls._meta.abstract:
            out.append(cls)
        pending.extend(cls.__subclasses__())
    return out


def _adopt(sender: type[models.Model], **kwargs: Any) -> None:
    """A model class was just defined: connect it where a declaration concerns it."""
    for capture in list(captures):
        if capture.table.concerns(sender):
            capture.sync(sender)


def _after_migrate(**kwargs: Any) -> None:
    for capture in list(captures):
        capture.forget_historical()


class_prepared.connect(_adopt, weak=False, dispatch_uid="instant_signals.capture.adopt")
post_migrate.connect(_after_migrate, weak=False, dispatch_uid="instant_signals.capture.migrated")
