"""Previous values of rows: the one mechanism that knows what a row looked like before a save.

A snapshot of the tracked fields is taken when a row is loaded (``Model.from_db``), reloaded
(``refresh_from_db``, only the fields it reloads) and saved (the receivers call ``snapshot``
after each save). ``from_db`` rather than ``post_init``: instances built in Python pay nothing and
loading a queryset sends no extra signal per row.

A snapshot taken after a save inside a transaction remembers the savepoint segment of that save
and the snapshot before it: when that savepoint (or the transaction) is rolled back, ``previous``
answers with the older one, which is what the database holds again.

Why not django-model-utils' ``FieldTracker``: attached to the benchmark model it cost 84 µs per
save and 49 µs per loaded row on its own (it wraps every field descriptor and deep-copies every
value in ``__init__``), against a budget of 50 µs per save for all of our hooks. This snapshot
costs a few µs. Models that have a FieldTracker of their own keep it; the two do not interact.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

from django.db import connections, models

from .transactions import Segment, current_segment

SNAPSHOT_ATTR = "_instant_signals_saved"


class Snapshot:
    """Tracked values of a row, the segment of the save that made them (None: loaded, or saved
    outside a transaction) and the snapshot to fall back to if that segment rolls back."""

    __slots__ = ("values", "segment", "older")

    def __init__(self, values: dict[str, Any], segment: Segment | None,
                 older: Snapshot | None):
        self.values = values
        self.segment = segment
        self.older = older


def _fallback(snap: Snapshot | None) -> Snapshot | None:
    """The newest snapshot in the chain that was not rolled back."""
    while snap is not None and snap.segment is not None and not snap.segment.alive():
        snap = snap.older
    return snap

# Fields whose Python values are immutable: a snapshot can share them instead of copying.
_IMMUTABLE_FIELD_TYPES = frozenset({
    "AutoField", "BigAutoField", "SmallAutoField", "BigIntegerField", "BooleanField",
    "CharField", "DateField", "DateTimeField", "DecimalField", "DurationField", "EmailField",
    "FloatField", "ForeignKey", "OneToOneField", "GenericIPAddressField", "IntegerField",
    "PositiveBigIntegerField", "PositiveIntegerField", "PositiveSmallIntegerField", "SlugField",
    "SmallIntegerField", "TextField", "TimeField", "URLField", "UUIDField", "IPAddressField",
})


class Tracker:
    """Snapshots of one model's tracked fields; several owners (registries) may share it."""

    def __init__(self, model: type[models.Model]):
        self.model = model
        self.wanted: dict[object, tuple[str, ...]] = {}  # owner -> attnames
        self.attnames: tuple[str, ...] = ()
        self.deep: tuple[str, ...] = ()
        self.files: tuple[str, ...] = ()
        self.originals: dict[str, Any] = {}

    def want(self, owner: object, attnames: Iterable[str]) -> None:
        self.wanted[owner] = tuple(attnames)
        self._recompute()

    def forget(self, owner: object) -> bool:
        """Drop ``owner``'s fields; True when nobody needs this tracker any more."""
        self.wanted.pop(owner, None)
        self._recompute()
        return not self.wanted

    def _recompute(self) -> None:
        names = tuple(dict.fromkeys(a for attnames in self.wanted.values() for a in attnames))
        by_attname = {f.attname: f for f in self.model._meta.concrete_fields}
        deep, files = [], []
        for name in names:
            kind = by_attname[name].get_internal_type()
            if kind in ("FileField", "ImageField"):
                files.append(name)
            elif kind not in _IMMUTABLE_FIELD_TYPES:
                deep.append(name)
        self.attnames, self.deep, self.files = names, tuple(deep), tuple(files)

    def take(self, instance: models.Model, segment: Segment | None = None,
             stored: dict[str, Any] | None = None) -> None:
        """Remember the tracked values as they are now (just loaded, or saved in ``segment``);
        ``stored``: values the database holds for fields the instance holds an expression for."""
        current = instance.__dict__
        values = {name: current[name] for name in self.attnames if name in current}
        if stored:
            values.update((k, v) for k, v in stored.items() if k in values)
        for name in self.deep:  # JSONField and the like may be changed in place later
            if name in values:
                values[name] = copy.deepcopy(values[name])
        for name in self.files:  # a FieldFile refers to its instance: keep just the name
            value = values.get(name)
            if value is not None:
                values[name] = getattr(value, "name", value)
        older = None
        if segment is not None:
            older = _fallback(current.get(SNAPSHOT_ATTR))
            if older is not None and older.segment is segment:
                older = older.older  # same segment: it rolls back with this one
            if older is not None and (older.segment is None or older.segment.committed):
                older.older = None  # final: nothing beyond it can be needed
        current[SNAPSHOT_ATTR] = Snapshot(values, segment, older)

    # -- patching the model ------------------------------------------------------------------
    def install(self) -> None:
        model = self.model
        if self.originals:
            return
        self.originals = {name: model.__dict__.get(name) for name in ("from_db", "refresh_from_db")}
        load = model.from_db.__func__  # type: ignore[attr-defined]
        reload = model.refresh_from_db
        tracker = self

        def from_db(cls: type[models.Model], db: str | None, field_names: Any,
                    values: Any) -> models.Model:
            instance: models.Model = load(cls, db, field_names, values)
            if cls is tracker.model:
                tracker.take(instance)
            return instance

        def refresh_from_db(self: models.Model, using: str | None = None, fields: Any = None,
                            *args: Any, **kwargs: Any) -> None:
            reload(self, using, fields, *args, **kwargs)
            before = previous(self)
            tracker.take(self)
            if fields is not None and before is not None:  # only these fields were reloaded
                reloaded = {_attname(type(self), f) for f in fields if "__" not in f}
                after = self.__dict__[SNAPSHOT_ATTR]
                after.values = {**before, **{k: v for k, v in after.values.items()
                                             if k in reloaded}}

        model.from_db = classmethod(from_db)  # type: ignore[method-assign,assignment]
        model.refresh_from_db = refresh_from_db  # type: ignore[method-assign]

    def uninstall(self) -> None:
        for name, original in self.originals.items():
            if original is None:
                delattr(self.model, name)  # it was inherited
            else:
                setattr(self.model, name, original)
        self.originals = {}


_trackers: dict[type[models.Model], Tracker] = {}


def track(model: type[models.Model], owner: object, attnames: Iterable[str]) -> Tracker:
    """Keep snapshots of ``attnames`` of ``model``'s rows for ``owner`` (a registry)."""
    tracker = _trackers.get(model)
    if tracker is None:
        tracker = _trackers[model] = Tracker(model)
        tracker.install()
    tracker.want(owner, attnames)
    return tracker


def untrack(model: type[models.Model], owner: object) -> None:
    tracker = _trackers.get(model)
    if tracker is not None and tracker.forget(owner):
        tracker.uninstall()
        del _trackers[model]


def snapshot(instance: models.Model, using: str | None = None,
             stored: dict[str, Any] | None = None) -> None:
    """Take a new snapshot of ``instance`` after a save (or a bulk write) on database ``using``;
    ``stored``: the values the database stored for fields assigned an expression."""
    tracker = _trackers.get(type(instance))
    if tracker is not None:
        segment = current_segment(connections[using]) if using is not None else None
        tracker.take(instance, segment, stored)


def previous(instance: models.Model) -> dict[str, Any] | None:
    """The tracked values as the database holds them, as far as this process knows: last loaded
    or saved, skipping saves that were rolled back. None when the row was never loaded here."""
    snap = _fallback(instance.__dict__.get(SNAPSHOT_ATTR))
    return snap.values if snap is not None else None


def as_of(instance: models.Model, values: dict[str, Any]) -> models.Model:
    """A copy of ``instance`` holding ``values`` (previous values), for callables that need the
    row as it was. Cached related objects whose key changed are dropped from the copy."""
    old: models.Model = copy.copy(instance)  # Django copies _state and its fields cache
    old.__dict__.update(values)
    cache = old._state.fields_cache
    if cache:
        for field in instance._meta.concrete_fields:
            if field.is_relation and field.name in cache and \
                    values.get(field.attname, old.__dict__.get(field.attname)) != \
                    instance.__dict__.get(field.attname):
                del cache[field.name]
    return old


def _attname(model: type[models.Model], name: str) -> str:
    if name == "pk":
        return model._meta.pk.attname
    try:
        return model._meta.get_field(name).attname  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - refresh_from_db validated the name already
        return name
