"""The ``@broadcast`` registry: which models publish which events into which channels.

One ``BroadcastRegistry`` object serves the decorator and the ``INSTANT_SIGNALS["MODELS"]``
setting (for models you don't own). Options are validated and frozen into a ``Declaration``
when a model is registered; the registry pushes each model's declarations down into its own
capture (``capture.signals.SignalCapture``: the signal receivers, connected with a
``dispatch_uid`` made from the registry's identity, and the snapshots ``updated`` events need),
which never calls back up.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator, TypeVar

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from . import conf, options
from .capture import collector
from .capture.changes import changes_of
from .capture.memberships import MembershipWatch
from .capture.signals import SignalCapture
from .channels import ChannelTemplate
from .declarations import Change, Declaration, declare
from .envelope import DELETED
from .options import BroadcastOptions, takes_options

M = TypeVar("M", bound=models.Model)
_ids = itertools.count(1)


class BroadcastRegistry:
    """Models whose changes are published: ``register(Model, channels=..., fields=...)``, or
    ``@registry.register(channels=..., fields=...)`` on the class."""

    def __init__(self) -> None:
        self._declarations: dict[type[models.Model], tuple[Declaration, ...]] = {}
        self.uid = next(_ids)
        self.capture = SignalCapture(str(self.uid))
        #: the revocation receivers of ``readers=`` declarations
        self.memberships = MembershipWatch(str(self.uid))
        collector.install()

    # -- registration -----------------------------------------------------------------------
    @takes_options(BroadcastOptions)
    def register(self, model: type[M] | None = None, /, **given: Any) -> Any:
        """Register ``model`` with the options of ``options.BroadcastOptions``; without a model,
        return a class decorator. A model may be registered several times (several
        declarations)."""
        if model is None:
            def decorator(cls: type[M]) -> type[M]:
                self.register(cls, **given)
                return cls

            return decorator
        self.add(_declare(model, given))
        return model

    def add(self, declaration: Declaration) -> None:
        """Add a built declaration (refused when it conflicts with one already registered)."""
        model = declaration.model
        self._refuse_conflicts(declaration)
        self._declarations[model] = self._declarations.get(model, ()) + (declaration,)
        self.capture.declare(model, self._declarations[model])
        self.memberships.declare(model, self._declarations[model])

    def unregister(self, model: type[models.Model]) -> None:
        """Forget every declaration of ``model`` and disconnect its receivers."""
        if self._declarations.pop(model, None) is None:
            return
        self.capture.declare(model, ())
        self.memberships.declare(model, ())

    def is_registered(self, model: type[models.Model]) -> bool:
        """Whether ``model`` has at least one declaration in this registry."""
        return model in self._declarations

    def declarations(self, model: type[models.Model] | None = None) -> tuple[Declaration, ...]:
        """The declarations of ``model``, or of every model."""
        if model is not None:
            return self._declarations.get(model, ())
        return tuple(d for ds in self._declarations.values() for d in ds)

    def get_models(self) -> list[type[models.Model]]:
        """The models registered here, in registration order."""
        return list(self._declarations)

    def check_readers(self) -> None:
        """Resolve the ``readers=`` paths declared while the models were loading (at startup)
        and connect their revocation receivers; ``ImproperlyConfigured`` names a bad path."""
        self.memberships.sync()

    def register_from_settings(self) -> None:
        """Register ``INSTANT_SIGNALS["MODELS"]`` (again: earlier settings declarations are
        replaced); a mistake fails at startup naming the key."""
        entries = conf.app_setting("MODELS") or {}
        if not isinstance(entries, dict):
            raise ImproperlyConfigured("INSTANT_SIGNALS['MODELS'] must be a dict")
        for model, declarations in list(self._declarations.items()):
            kept = tuple(d for d in declarations if d.source != "settings")
            if len(kept) != len(declarations):
                self.unregister(model)
                for declaration in kept:
                    self.add(declaration)
        for label, value in entries.items():
            where = f"INSTANT_SIGNALS['MODELS'][{label!r}]"
            try:
                model = apps.get_model(label)
            except (LookupError, ValueError):
                raise ImproperlyConfigured(f"{where}: no installed model {label!r}") from None
            for entry in value if isinstance(value, (list, tuple)) else [value]:
                if not isinstance(entry, dict):
                    raise ImproperlyConfigured(f"{where}: options must be a dict")
                try:
                    self.add(_declare(model, entry, source="settings"))
                except (ImproperlyConfigured, ImportError, ValueError, TypeError) as exc:
                    raise ImproperlyConfigured(f"{where}: {exc}") from None

    # -- what a change publishes --------------------------------------------------------------
    def changes(self, instance: models.Model, event: str,
                previous: dict[str, Any] | None = None) -> list[Change]:
        """What the declarations that a write of the instance's class concerns make of
        ``event`` (its own, its concrete model's, its parents'). ``previous``: the row's values
        before (default: its snapshot). Internal: the capture modes call it."""
        table = self.capture.table
        applies = table.for_delete if event == DELETED else table.for_save
        return changes_of(applies(type(instance)).declarations, instance, event, previous)

    # -- readers ------------------------------------------------------------------------------
    def may_read(self, user: Any, name: str) -> bool | None:
        """Whether a declaration lets ``user`` read channel ``name``; None if none declares it."""
        for declaration in self.declarations():
            verdict = declaration.may_read(user, name)
            if verdict is not None:
                return verdict
        return None

    def user_channels(self, user: Any) -> list[tuple[str, str]]:
        """(name, level) of the declared channels ``user`` may read that can be listed."""
        found: dict[str, str] = {}
        for declaration in self.declarations():
            for name, level in declaration.user_channels(user):
                found.setdefault(name, level)
        return sorted(found.items())

    def namespaces(self) -> dict[str, dict[str, Any]]:
        """Centrifugo namespaces the declared channels need, with ``public`` (a channel in it is
        readable without a token), ``presence``, and ``options`` when the output format of a
        channel in it needs Centrifugo namespace options (``Format.namespace_options``).
        Channels without a namespace are under ""."""
        out: dict[str, dict[str, Any]] = {}
        for declaration in self.declarations():
            extra = declaration.format.namespace_options
            for template in declaration.templates:
                needs = out.setdefault(template.namespace or "",
                                       {"public": False, "presence": False})
                needs["public"] |= not template.private
                needs["presence"] |= declaration.presence
                if extra:
                    needs.setdefault("options", {}).update(extra)
        return out

    def templates(self) -> Iterator[tuple[Declaration, ChannelTemplate]]:
        """Every channel template (static names included) with its declaration."""
        for declaration in self.declarations():
            for template in declaration.templates:
                yield declaration, template

    # -- internals ----------------------------------------------------------------------------
    def _refuse_conflicts(self, new: Declaration) -> None:
        where = f"@broadcast on {new.label}"
        for old, template in self.templates():
            for mine in new.templates:
                if template.is_static and mine.is_static:
                    if template.template == mine.template and mine.private and \
                            _rule(old) != _rule(new):
                        raise ImproperlyConfigured(
                            f"{where}: {mine.template!r} is already declared by {old.label} "
                            f"with other readers ({_rule(old)}); give both the same level= "
                            f"or authorize=")
                elif _shape(template) == _shape(mine) and (old.model is not new.model or
                                                            _rule(old) != _rule(new)):
                    raise ImproperlyConfigured(
                        f"{where}: {mine.template!r} is already declared by {old.label} "
                        f"({template.template!r}"
                        + (", other readers" if old.model is new.model else "") +
                        "); a per-instance channel belongs to one model and one rule")
                if _shape(template) == _shape(mine) and old.format.name != new.format.name:
                    raise ImproperlyConfigured(
                        f"{where}: {mine.template!r} already carries {old.format.carries} of "
                        f"{old.label}; {new.format.carries} go on a channel of their own (its "
                        f"clients would get envelopes they cannot read)")


def _shape(template: ChannelTemplate) -> str:
    """``$task:{pk}`` and ``$task:{slug}`` have one shape: they could name the same channel."""
    return "".join(literal + ("{}" if attname else "") for literal, attname in template.parts)


def _rule(declaration: Declaration) -> str:
    authorize = declaration.authorize
    name = authorize if isinstance(authorize, str) or authorize is None else \
        getattr(authorize, "__qualname__", repr(authorize))
    if declaration.readers is not None:
        return f"readers={declaration.readers.path!r}"
    return f"level={declaration.level!r}, authorize={name!r}"


def _declare(model: type[models.Model], given: dict[str, Any],
             source: str = "code") -> Declaration:
    """Parse ``given`` (dotted paths imported when it comes from settings) and declare."""
    try:
        parsed = options.parse(given, from_settings=source == "settings")
    except ImproperlyConfigured as exc:
        raise ImproperlyConfigured(f"@broadcast on {model._meta.label_lower}: {exc}") from None
    return declare(model, parsed, source=source)


broadcast_registry = BroadcastRegistry()
"""The registry ``@broadcast`` and ``INSTANT_SIGNALS["MODELS"]`` fill."""
broadcast = broadcast_registry.register
"""``@broadcast(channels=[...], fields=[...], ...)`` on a model class: ``broadcast_registry.register``
used as a decorator (options: ``options.BroadcastOptions``). Returns the class unchanged."""

