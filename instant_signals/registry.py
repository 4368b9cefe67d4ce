"""The ``@broadcast`` registry: which models publish which events into which channels.

One ``registry`` object serves the decorator and the ``INSTANT_SIGNALS["MODELS"]`` setting.
Options are validated and frozen into a ``Declaration`` at registration; ``post_save`` and
``post_delete`` are connected with ``sender`` and a ``dispatch_uid`` and disconnected by
``unregister``; previous values come from the model's FieldTracker or from a snapshot taken in
``from_db`` (rows loaded) and after each save. A model may be declared more than once (e.g. full data on its owner's channel
and a redacted view on a public one).
"""

from __future__ import annotations

import copy
import logging
import re
import string
from contextlib import ContextDecorator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, Union

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models
from django.db.models.signals import post_delete, post_save
from django.utils.module_loading import import_string

from . import conf, delivery
from .delivery import CREATED, DELETED, UPDATED, Change
from .publishing import validate_channel
from .serialization import drf_serializer, field_values, resolve_fields, serialize_fields

logger = logging.getLogger("instant_signals")

EVENTS = frozenset({CREATED, UPDATED, DELETED})
SNAPSHOT_ATTR = "_instant_signals_snapshot"
ChannelsOption = Union[Sequence[str], Callable[[models.Model, str], Iterable[str]]]

_disabled: ContextVar[bool] = ContextVar("instant_signals_disabled", default=False)


class disable_broadcasts(ContextDecorator):
    """Publish no model events inside this block (or decorated function); thread and async safe."""

    def __enter__(self) -> disable_broadcasts:
        self._token = _disabled.set(True)
        return self

    def __exit__(self, *exc: object) -> None:
        _disabled.reset(self._token)


def broadcasting_enabled() -> bool:
    return not _disabled.get() and bool(conf.app_setting("ENABLED"))


class ChannelTemplate:
    """A channel name with ``{field}`` placeholders, e.g. ``"$task:{pk}"``."""

    def __init__(self, model: type[models.Model], template: str):
        self.template = template
        self.parts: list[tuple[str, str | None]] = []  # (literal, attname or None)
        self.placeholders: list[str] = []
        pattern = "^"
        for literal, name, spec, conversion in string.Formatter().parse(template):
            if spec or conversion:
                raise ImproperlyConfigured(f"channel {template!r}: use plain {{field}} placeholders")
            attname = None
            pattern += re.escape(literal)
            if name is not None:
                attname = _attname(model, name, f"channel {template!r}")
                self.placeholders.append(name)
                pattern += f"(?P<p{len(self.placeholders) - 1}>.+?)"
            self.parts.append((literal, attname))
        self.regex = re.compile(pattern + "$")
        if not self.placeholders:
            validate_channel(template)

    @property
    def attnames(self) -> list[str]:
        return [attname for _, attname in self.parts if attname]

    @property
    def namespace(self) -> str | None:
        """Centrifugo namespace of the channels (``task`` for ``$task:{pk}``)."""
        name = self.template.lstrip("$")
        return name.split(":", 1)[0] if ":" in name else None

    def fill(self, values: dict[str, Any]) -> str | None:
        if not self.placeholders:
            return self.template
        out = []
        for literal, attname in self.parts:
            out.append(literal)
            if attname is not None:
                value = values.get(attname)
                if value is None:
                    return None
                out.append(str(value))
        name = "".join(out)
        try:
            return validate_channel(name)
        except ValueError as exc:
            logger.warning("instant_signals: channel %r skipped: %s", name, exc)
            return None

    def match(self, name: str) -> dict[str, str] | None:
        if not self.placeholders:
            return None
        found = self.regex.match(name)
        if not found:
            return None
        return {self.placeholders[i]: found.group(f"p{i}") for i in range(len(self.placeholders))}


def _attname(model: type[models.Model], name: str, where: str) -> str:
    if name == "pk":
        return model._meta.pk.attname
    for field in model._meta.concrete_fields:
        if name in (field.name, field.attname):
            return field.attname
    raise ImproperlyConfigured(f"{where}: {model._meta.label} has no concrete field {name!r}")


@dataclass(frozen=True)
class Declaration:
    """One frozen ``@broadcast`` declaration of a model."""

    model: type[models.Model]
    label: str
    channels: tuple[ChannelTemplate, ...] | Callable[[models.Model, str], Iterable[str]]
    attnames: tuple[str, ...]
    events: frozenset[str]
    condition: Callable[[models.Model, str], bool] | None
    serializer: Callable[[models.Model], dict[str, Any]] | None
    authorize: Callable[..., bool] | str | None
    #: The channel names when none depends on the instance (no placeholder, no callable).
    static_channels: tuple[str, ...] | None = None

    @property
    def templates(self) -> tuple[ChannelTemplate, ...]:
        return self.channels if isinstance(self.channels, tuple) else ()

    @property
    def routing_attnames(self) -> tuple[str, ...]:
        return tuple(a for t in self.templates for a in t.attnames)

    def channels_for(self, instance: models.Model, event: str, values: dict[str, Any]) -> tuple[str, ...]:
        if self.static_channels is not None:
            return self.static_channels
        if callable(self.channels):
            names = [validate_channel(n) for n in self.channels(instance, event)]
        else:
            names = [t.fill(values) for t in self.channels]
        return tuple(dict.fromkeys(n for n in names if n))

    def render(self, fields: dict[str, Any]) -> dict[str, Any]:
        return fields if self.serializer is not None else serialize_fields(fields)

    def may_read(self, user: Any, name: str) -> bool | None:
        """Whether ``user`` may read per-instance channel ``name``; None if not one of ours."""
        for template in self.templates:
            params = template.match(name)
            if params is None:
                continue
            if self.authorize is None:
                return not name.startswith("$")
            if not getattr(user, "is_authenticated", False):
                return False
            try:
                if isinstance(self.authorize, str):
                    return self.model._default_manager.filter(
                        **params, **{self.authorize: user}
                    ).exists()
                return bool(self.authorize(user, **params))
            except (ValueError, TypeError, ValidationError, ArithmeticError):
                return False  # e.g. "$task:abc" for an integer pk
        return None


OPTIONS = ("channels", "fields", "exclude", "events", "condition", "serializer",
           "serializer_class", "authorize")


class BroadcastRegistry:
    """Models whose changes are published; usable as ``@registry.register(...)`` or directly."""

    def __init__(self) -> None:
        self._declarations: dict[type[models.Model], tuple[Declaration, ...]] = {}
        self._tracked: dict[type[models.Model], tuple[str, ...]] = {}
        self._trackers: dict[type[models.Model], tuple[str, dict[str, str]] | None] = {}
        self._snapshots: dict[type[models.Model], tuple[tuple[str, ...], ...]] = {}

    # -- registration -----------------------------------------------------------------------
    def register(self, model: type[models.Model] | None = None, **options: Any) -> Any:
        """Register ``model`` with ``options``; without a model, return a class decorator."""
        if model is None:
            def decorator(cls: type[models.Model]) -> type[models.Model]:
                self.register(cls, **options)
                return cls

            return decorator
        declaration = self._declare(model, options)
        self._declarations[model] = self._declarations.get(model, ()) + (declaration,)
        self._connect(model)
        return model

    def unregister(self, model: type[models.Model]) -> None:
        """Forget every declaration of ``model`` and disconnect its signals."""
        if self._declarations.pop(model, None) is None:
            return
        label = model._meta.label_lower
        post_save.disconnect(sender=model, dispatch_uid=f"instant_signals.post_save.{label}")
        post_delete.disconnect(sender=model, dispatch_uid=f"instant_signals.post_delete.{label}")
        _unpatch_from_db(model)
        self._tracked.pop(model, None)
        self._trackers.pop(model, None)
        self._snapshots.pop(model, None)

    def is_registered(self, model: type[models.Model]) -> bool:
        return model in self._declarations

    def declarations(self, model: type[models.Model]) -> tuple[Declaration, ...]:
        return self._declarations.get(model, ())

    def models(self) -> list[type[models.Model]]:
        return list(self._declarations)

    def namespaces(self) -> set[str]:
        """Centrifugo namespaces the declared channels need (for installws and the tests)."""
        return {t.namespace for ds in self._declarations.values() for d in ds
                for t in d.templates if t.namespace}

    def authorize(self, user: Any, name: str) -> bool:
        """Whether a per-instance channel rule lets ``user`` read channel ``name``."""
        for declarations in self._declarations.values():
            for declaration in declarations:
                verdict = declaration.may_read(user, name)
                if verdict is not None:
                    return verdict
        return False

    def register_from_settings(self) -> None:
        """Register ``INSTANT_SIGNALS["MODELS"]``; a mistake fails at startup naming the key."""
        entries = conf.app_setting("MODELS") or {}
        if not isinstance(entries, dict):
            raise ImproperlyConfigured("INSTANT_SIGNALS['MODELS'] must be a dict")
        for label, value in entries.items():
            where = f"INSTANT_SIGNALS['MODELS'][{label!r}]"
            try:
                model = apps.get_model(label)
            except (LookupError, ValueError):
                raise ImproperlyConfigured(f"{where}: no installed model {label!r}") from None
            if self.is_registered(model):
                continue  # already registered (settings read twice, e.g. in tests)
            for options in value if isinstance(value, (list, tuple)) else [value]:
                if not isinstance(options, dict):
                    raise ImproperlyConfigured(f"{where}: options must be a dict")
                try:
                    self.register(model, **_import_callables(options))
                except (ImproperlyConfigured, ImportError, ValueError, TypeError) as exc:
                    raise ImproperlyConfigured(f"{where}: {exc}") from None

    # -- internals --------------------------------------------------------------------------
    def _declare(self, model: type[models.Model], options: dict[str, Any]) -> Declaration:
        label = model._meta.label_lower
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise ImproperlyConfigured(
                f"@broadcast on {label}: unknown option(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(OPTIONS)}")
        channels = options.get("channels")
        if callable(channels):
            routing: Any = channels
        elif isinstance(channels, (list, tuple)) and channels and all(
                isinstance(c, str) for c in channels):
            try:
                routing = tuple(ChannelTemplate(model, c) for c in channels)
            except ValueError as exc:
                raise ImproperlyConfigured(f"@broadcast on {label}: {exc}") from None
        else:
            raise ImproperlyConfigured(
                f"@broadcast on {label}: channels must be a non-empty list of names or a "
                f"callable (instance, event) -> names, not {channels!r}")
        events = frozenset(options.get("events", EVENTS))
        if not events or not events <= EVENTS:
            raise ImproperlyConfigured(
                f"@broadcast on {label}: events must be some of {sorted(EVENTS)}, not {sorted(events)}")
        serializer = options.get("serializer")
        if options.get("serializer_class") is not None:
            serializer = drf_serializer(options["serializer_class"])
        for name in ("condition", "serializer"):
            if options.get(name) is not None and not callable(options[name]):
                raise ImproperlyConfigured(f"@broadcast on {label}: {name} must be callable")
        authorize = options.get("authorize")
        if authorize is not None and not callable(authorize):
            if not isinstance(authorize, str):
                raise ImproperlyConfigured(
                    f"@broadcast on {label}: authorize must be a callable or a field name")
            _attname(model, authorize, f"@broadcast on {label}: authorize")
        try:
            attnames = resolve_fields(model, options.get("fields"), options.get("exclude"))
        except ImproperlyConfigured as exc:
            raise ImproperlyConfigured(f"@broadcast on {label}: {exc}") from None
        static = None
        if isinstance(routing, tuple) and not any(t.placeholders for t in routing):
            static = tuple(dict.fromkeys(t.template for t in routing))
        return Declaration(model, label, routing, attnames, events, options.get("condition"),
                           serializer, authorize, static)

    def _connect(self, model: type[models.Model]) -> None:
        declarations = self._declarations[model]
        needs_all = any(callable(d.channels) for d in declarations)
        tracked = [f.attname for f in model._meta.concrete_fields] if needs_all else []
        for d in declarations:
            tracked += [*d.attnames, *d.routing_attnames]
        self._tracked[model] = tuple(dict.fromkeys(tracked))
        self._trackers[model] = _field_tracker(model, self._tracked[model])
        self._snapshots[model] = _snapshot_spec(model, self._tracked[model])
        label = model._meta.label_lower
        post_save.connect(_on_save, sender=model, weak=False,
                          dispatch_uid=f"instant_signals.post_save.{label}")
        post_delete.connect(_on_delete, sender=model, weak=False,
                            dispatch_uid=f"instant_signals.post_delete.{label}")
        if self._trackers[model] is None:
            _patch_from_db(model)
        else:  # the model's FieldTracker already knows the previous values
            _unpatch_from_db(model)

    def previous_values(self, instance: models.Model) -> dict[str, Any] | None:
        """Values of the tracked fields as last loaded or saved (None if unknown)."""
        tracker = self._trackers.get(type(instance))
        if tracker is None:
            return instance.__dict__.get(SNAPSHOT_ATTR)
        attname, keys = tracker
        saved = getattr(instance, attname).saved_data
        return {a: saved[k] for a, k in keys.items() if k in saved}

    def snapshot(self, instance: models.Model) -> None:
        """Keep the tracked values as loaded or saved (not needed with a FieldTracker)."""
        if self._trackers.get(type(instance)) is not None:
            return
        spec = self._snapshots.get(type(instance))
        if spec is None:
            return
        tracked, deep, files = spec
        current = instance.__dict__
        values = {name: current[name] for name in tracked if name in current}
        for name in deep:  # JSONField and the like may be changed in place later
            if name in values:
                values[name] = copy.deepcopy(values[name])
        for name in files:  # a FieldFile refers to its instance: keep just the name
            value = values.get(name)
            if value is not None:
                values[name] = getattr(value, "name", value)
        current[SNAPSHOT_ATTR] = values

    def changes_for(self, instance: models.Model, event: str, using: str,
                    previous: dict[str, Any] | None = None) -> list[Change]:
        """The changes every declaration of the instance's model makes of this event."""
        out = []
        now = field_values(instance, self._tracked.get(type(instance), ()))
        if event == UPDATED and previous is None:
            previous = self.previous_values(instance)
        pk = instance.pk
        for d in self._declarations.get(type(instance), ()):
            if d.condition is not None and not d.condition(instance, event):
                continue
            channels = d.channels_for(instance, event, now)
            previous_channels: tuple[str, ...] = ()
            changed = None
            if event == UPDATED:
                previous_channels = channels
                changed = {}
                if previous is not None:
                    changed = {a: previous[a] for a in d.attnames
                               if a in previous and a in now and previous[a] != now[a]}
                    if d.static_channels is None:  # only routed channels can move
                        previous_channels = self._previous_channels(d, instance, previous, now)
            fields = d.serializer(instance) if d.serializer is not None else {
                a: now[a] for a in d.attnames if a in now}
            out.append(Change(d, pk, event, channels, previous_channels, fields, changed))
        return out

    @staticmethod
    def _previous_channels(d: Declaration, instance: models.Model, previous: dict[str, Any],
                           now: dict[str, Any]) -> tuple[str, ...]:
        if callable(d.channels):
            old = copy.copy(instance)
            old.__dict__.update(previous)
            return d.channels_for(old, UPDATED, previous)
        return d.channels_for(instance, UPDATED, {**now, **previous})


# Fields whose Python values are immutable: a snapshot can share them instead of copying.
_IMMUTABLE_FIELD_TYPES = frozenset({
    "AutoField", "BigAutoField", "SmallAutoField", "BigIntegerField", "BooleanField",
    "CharField", "DateField", "DateTimeField", "DecimalField", "DurationField", "EmailField",
    "FloatField", "ForeignKey", "OneToOneField", "GenericIPAddressField", "IntegerField",
    "PositiveBigIntegerField", "PositiveIntegerField", "PositiveSmallIntegerField", "SlugField",
    "SmallIntegerField", "TextField", "TimeField", "URLField", "UUIDField", "NullBooleanField",
})


def _snapshot_spec(model: type[models.Model], tracked: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """(tracked attnames, those to deep-copy, file fields) for the snapshot of ``model``."""
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    deep, files = [], []
    for name in tracked:
        kind = by_attname[name].get_internal_type()
        if kind in ("FileField", "ImageField"):
            files.append(name)
        elif kind not in _IMMUTABLE_FIELD_TYPES:
            deep.append(name)
    return tuple(tracked), tuple(deep), tuple(files)


def _field_tracker(model: type[models.Model], tracked: Sequence[str]) -> tuple[str, dict[str, str]] | None:
    """A django-model-utils FieldTracker on ``model`` that tracks every field we need."""
    from model_utils import FieldTracker

    for klass in model.__mro__:
        for value in vars(klass).values():
            if isinstance(value, FieldTracker) and getattr(value, "fields", None) is not None:
                names = set(value.fields)
                keys = {}
                for attname in tracked:
                    field = next(f for f in model._meta.concrete_fields if f.attname == attname)
                    key = attname if attname in names else field.name if field.name in names else None
                    if key is None:
                        break
                    keys[attname] = key
                else:
                    return value.attname, keys
    return None


def _import_callables(options: dict[str, Any]) -> dict[str, Any]:
    """Settings give callables as dotted paths ("myapp.rules.can_read_task")."""
    options = dict(options)
    for name in ("condition", "serializer", "serializer_class"):
        if isinstance(options.get(name), str):
            options[name] = import_string(options[name])
    if isinstance(options.get("channels"), str) and "." in options["channels"]:
        options["channels"] = import_string(options["channels"])
    if isinstance(options.get("authorize"), str) and "." in options["authorize"]:
        options["authorize"] = import_string(options["authorize"])
    return options


registry = BroadcastRegistry()


def broadcast(**options: Any) -> Callable[[type[models.Model]], type[models.Model]]:
    """Class decorator: publish this model's created/updated/deleted events.

    ``@broadcast(channels=["public", "$task:{pk}"], fields=["id", "title"], authorize="owner")``
    """
    return registry.register(**options)


_originals: dict[type[models.Model], dict[str, Any]] = {}


def _patch_from_db(model: type[models.Model]) -> None:
    """Snapshot rows as they are loaded (``from_db``, and ``refresh_from_db`` for the fields it
    reloads). Not ``post_init``: instances built in Python pay nothing, and loading a queryset
    sends no extra signal per row."""
    if model in _originals:
        return
    _originals[model] = {name: model.__dict__.get(name) for name in ("from_db", "refresh_from_db")}
    load = model.from_db.__func__  # type: ignore[attr-defined]
    reload = model.refresh_from_db

    def from_db(cls: type[models.Model], db: str, field_names: Any, values: Any) -> models.Model:
        instance = load(cls, db, field_names, values)
        registry.snapshot(instance)
        return instance

    def refresh_from_db(self: models.Model, using: str | None = None, fields: Any = None,
                        *args: Any, **kwargs: Any) -> None:
        reload(self, using, fields, *args, **kwargs)
        before = self.__dict__.get(SNAPSHOT_ATTR)
        registry.snapshot(self)
        if fields is not None and before is not None:  # only these fields were reloaded
            reloaded = {_attname(type(self), f, "refresh_from_db") for f in fields if "__" not in f}
            after = self.__dict__[SNAPSHOT_ATTR]
            self.__dict__[SNAPSHOT_ATTR] = {
                **before, **{k: v for k, v in after.items() if k in reloaded}}

    model.from_db = classmethod(from_db)  # type: ignore[method-assign,assignment]
    model.refresh_from_db = refresh_from_db  # type: ignore[method-assign]


def _unpatch_from_db(model: type[models.Model]) -> None:
    for name, original in _originals.pop(model, {}).items():
        if original is None:
            delattr(model, name)  # it was inherited
        else:
            setattr(model, name, original)


def _on_save(sender: type[models.Model], instance: models.Model, created: bool, raw: bool,
             using: str, **kwargs: Any) -> None:
    if raw or not broadcasting_enabled():
        return
    _record(sender, instance, CREATED if created else UPDATED, using)
    registry.snapshot(instance)


def _on_delete(sender: type[models.Model], instance: models.Model, using: str,
               **kwargs: Any) -> None:
    if not broadcasting_enabled():
        return
    _record(sender, instance, DELETED, using)


def _record(sender: type[models.Model], instance: models.Model, event: str, using: str) -> None:
    """Record the instance's changes; a failure never breaks the caller's save, except in
    durable mode, where a lost outbox row must roll the change back with it."""
    try:
        for change in registry.changes_for(instance, event, using):
            delivery.record(change, using)
    except Exception:  # noqa: BLE001
        if conf.app_setting("DELIVERY") == "outbox":
            raise
        logger.exception("instant_signals: could not broadcast %s", sender._meta.label)
