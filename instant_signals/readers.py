"""Readers declared by relation: ``readers="project__members"`` on a ``$`` channel template.

The path is a Django lookup path from the declared model to the user model, through foreign
keys, one-to-ones, many-to-manys and their reverse relations (``project__members``,
``team__memberships__user``). It is resolved from the channel's placeholder, so who may read a
channel is one query whatever the channel holds:

* the placeholder is the path's first foreign key (``"$project:{project_id}"`` with
  ``readers="project__members"``): the readers of ``$project:7`` are project 7's members,
  ``Project.objects.filter(pk=7, members=user).exists()``, even before the project has a task;
* or the placeholders identify one row of the model (``"$task:{pk}"`` with
  ``readers="project__members"``): ``Task.objects.filter(pk=7, project__members=user)``.

A user whose ``is_active`` is False reads nothing through a path. Adding rows or links only ever
adds readers; taking access away is what ``capture/memberships.py`` watches: this module says,
for each model along the path, which of its rows and fields a reader's access depends on
(``Watch``) and computes the (channel, user) pairs such a row grants (``ReaderPath.pairs``).

Paths are resolved lazily: ``@broadcast`` runs while the models are being imported, before
Django can follow reverse relations, so a path is checked as soon as the app registry is ready
(at startup for decorators, at once for declarations made later) and a path that does not lead
to the user model fails then with ``ImproperlyConfigured``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

from django.apps import apps
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models
from django.db.models import Q

from .channels import ChannelTemplate, identifies_one_row

__all__ = ["Readers", "ReaderPath", "Watch"]

HopKind = Literal["fk", "reverse_fk", "m2m"]


@dataclass(frozen=True)
class Hop:
    """One step of a path, from ``source`` (M[i-1]) to ``target`` (M[i])."""

    name: str
    source: type[models.Model]
    target: type[models.Model]
    kind: HopKind
    #: fk: the attname on ``source``; reverse_fk: the attname of the FK on ``target``
    attname: str = ""
    #: reverse_fk: the field of ``source`` the FK holds values of
    source_field: str = "pk"
    through: type[models.Model] | None = None  # m2m: the through model
    through_source: str = ""  # m2m: attname of the through FK to ``source``
    through_source_field: str = "pk"  # m2m: the field of ``source`` it holds values of
    through_target: str = ""  # m2m: attname of the through FK to ``target``
    #: m2m: whether the ManyToManyField is defined on ``source`` (else on ``target``)
    forward: bool = True


@dataclass(frozen=True)
class Watch:
    """What a reader's access depends on in one model: saves of ``model`` that change one of
    ``attnames`` (no attnames: deletes only), and the rows of ``path``'s start that the changed
    row reaches: ``anchor`` (a lookup from the start) = the value of ``value_attname``."""

    path: ReaderPath
    model: type[models.Model]
    attnames: tuple[str, ...]
    anchor: str
    value_attname: str
    on_delete: bool = True


class ReaderPath:
    """A path resolved for one channel template: where the lookup starts, and the hops."""

    def __init__(self, template: ChannelTemplate, start: type[models.Model],
                 keys: tuple[tuple[str, str], ...], hops: tuple[Hop, ...], listed: bool):
        self.template = template
        self.start = start
        #: (template attname, field of ``start`` it names)
        self.keys = keys
        self.hops = hops
        #: whether get_token/ lists the user's channels of this template (one per group)
        self.listed = listed
        self.user_model: type[models.Model] = start if not hops else hops[-1].target
        rest = "__".join(h.name for h in hops)
        self.user_lookup = f"{rest}__pk" if rest else "pk"
        has_active = any(f.name == "is_active" for f in self.user_model._meta.concrete_fields)
        self.active_lookup = (f"{rest}__is_active" if rest else "is_active") if has_active else ""

    # -- lookups --------------------------------------------------------------------------------
    def _manager(self, using: str | None) -> Any:
        manager = self.start._default_manager
        return manager.using(using) if using else manager

    def _active(self) -> dict[str, Any]:
        return {self.active_lookup: True} if self.active_lookup else {}

    def may_read(self, user: Any, typed: dict[str, Any]) -> bool:
        """One query: whether ``user`` is a reader of the channel with these placeholder values
        (by attname, as values of their fields)."""
        if getattr(user, "is_active", True) is False:
            return False
        where = {field: typed[attname] for attname, field in self.keys}
        return bool(self._manager(None).filter(
            **where, **{self.user_lookup: user.pk}, **self._active()).exists())

    def channels_of(self, user: Any) -> list[str]:
        """The channels of this template ``user`` reads (one query)."""
        if getattr(user, "is_active", True) is False:
            return []
        rows = self._manager(None).filter(**{self.user_lookup: user.pk}, **self._active())
        names = (self._name(values) for values in
                 rows.values_list(*(f for _, f in self.keys)).distinct())
        return sorted({n for n in names if n})

    def anchor_lookup(self, position: int, field: str) -> str:
        """The lookup from the start to ``field`` of the model at ``position`` (0: the start)."""
        prefix = "__".join(h.name for h in self.hops[:position])
        return f"{prefix}__{field}" if prefix else field

    def pairs(self, using: str | None, anchor: str, values: Iterable[Any]) -> set[tuple[str, str]]:
        """(channel, user id) of every reader of the channels whose start rows match
        ``anchor`` in ``values``: one query."""
        values = [v for v in values if v is not None]
        if not values:
            return set()
        rows = self._manager(using).filter(**{f"{anchor}__in": values, **self._active()})
        return self._pairs(rows)

    def still(self, using: str | None, pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of ``pairs`` (channel, user id) that are still readers: one query."""
        keys: dict[str, dict[str, Any]] = {}
        for channel, _ in pairs:
            if channel not in keys:
                found = self._typed(channel)
                if found is not None:
                    keys[channel] = found
        if not keys:
            return set()
        match = Q()
        for where in keys.values():
            match |= Q(**where)
        users = sorted({user for _, user in pairs})
        rows = self._manager(using).filter(
            match, **{f"{self.user_lookup}__in": users, **self._active()})
        return self._pairs(rows) & pairs

    def _pairs(self, rows: Any) -> set[tuple[str, str]]:
        fields = [f for _, f in self.keys]
        out = set()
        for *values, user in rows.values_list(*fields, self.user_lookup).distinct():
            name = self._name(values) if user is not None else None
            if name:
                out.add((name, str(user)))
        return out

    def _name(self, values: Iterable[Any]) -> str | None:
        return self.template.fill({attname: v for (attname, _), v in zip(self.keys, values)})

    def _typed(self, channel: str) -> dict[str, Any] | None:
        params = self.template.match(channel)
        if params is None:
            return None
        typed = self.template.typed(params)
        return {field: typed[attname] for attname, field in self.keys}

    # -- what revocation watches ------------------------------------------------------------------
    def watches(self) -> list[Watch]:
        """Every model whose writes can take a reader's access away, and how to find the
        channels concerned: deletes of any row along the path, saves that move a foreign key
        the path crosses, through rows of its many-to-manys, and users deactivated."""
        out: list[Watch] = []
        models_on_path = [self.start, *(h.target for h in self.hops)]
        for position, model in enumerate(models_on_path):
            out.append(Watch(self, model, (), self.anchor_lookup(position, "pk"),
                             model._meta.pk.attname))
        for position, hop in enumerate(self.hops):
            if hop.kind == "fk":
                out.append(Watch(self, hop.source, (hop.attname,),
                                 self.anchor_lookup(position, "pk"),
                                 hop.source._meta.pk.attname, on_delete=False))
            elif hop.kind == "reverse_fk":
                out.append(Watch(self, hop.target, (hop.attname,),
                                 self.anchor_lookup(position, hop.source_field), hop.attname))
            elif hop.through is not None:
                out.append(Watch(self, hop.through, (hop.through_source, hop.through_target),
                                 self.anchor_lookup(position, hop.through_source_field),
                                 hop.through_source))
        if self.active_lookup:
            out.append(Watch(self, self.user_model, ("is_active",),
                             self.anchor_lookup(len(self.hops), "pk"),
                             self.user_model._meta.pk.attname, on_delete=False))
        return out

    def __repr__(self) -> str:
        return f"ReaderPath({self.template.template!r} -> {self.start._meta.label})"


class Readers:
    """``readers=`` of one declaration: the path as written, resolved per template on first use
    (see the module docstring for when)."""

    def __init__(self, model: type[models.Model], path: str,
                 templates: tuple[ChannelTemplate, ...], where: str):
        self.model = model
        self.path = path
        self.templates = templates
        self.where = where
        self._resolved: dict[str, ReaderPath] | None = None
        self._lock = threading.Lock()
        _check_syntax(path, where)
        if apps.models_ready:
            self.resolve()

    def resolve(self) -> dict[str, ReaderPath]:
        """The path of each template (by template text); ``ImproperlyConfigured`` when the path
        does not lead to the user model or does not start at the channel's placeholder."""
        if self._resolved is not None:
            return self._resolved
        with self._lock:
            if self._resolved is None:
                self._resolved = {t.template: _resolve(self.model, self.path, t, self.where)
                                  for t in self.templates}
        return self._resolved

    def for_template(self, template: ChannelTemplate) -> ReaderPath:
        return self.resolve()[template.template]

    def watches(self) -> list[Watch]:
        return [w for path in self.resolve().values() for w in path.watches()]

    def __repr__(self) -> str:
        return f"Readers({self.path!r})"


# -- resolution ---------------------------------------------------------------------------------

def _check_syntax(path: Any, where: str) -> None:
    if not isinstance(path, str) or not path or any(not part for part in path.split("__")):
        raise ImproperlyConfigured(
            f"{where}: readers must be a relation path to the user model, such as "
            f'"project__members", not {path!r}')


def _user_model() -> type[models.Model]:
    return apps.get_model(settings.AUTH_USER_MODEL)


def _walk(model: type[models.Model], names: list[str],
          fail: Callable[[str], ImproperlyConfigured], written: str,
          skipped: int = 0) -> tuple[Hop, ...]:
    """The hops of ``names`` from ``model`` (``skipped``: names of ``written`` before them)."""
    hops = []
    current = model
    whole = written.split("__")
    for index, name in enumerate(names):
        so_far = "__".join(whole[:skipped + index + 1])
        try:
            field: Any = current._meta.get_field(name)
        except FieldDoesNotExist:
            relations = sorted(f.name for f in current._meta.get_fields() if f.is_relation)
            raise fail(f"readers={written!r}: {current._meta.label} has no relation {name!r} "
                       f"(its relations: {', '.join(relations) or 'none'})") from None
        if not field.is_relation:
            raise fail(f"readers={written!r}: {so_far!r} is the field {current._meta.label}."
                       f"{name}, not a relation: the path must lead through relations to the "
                       f"user model ({settings.AUTH_USER_MODEL})")
        hop = _hop(current, name, field)
        if hop is None:
            raise fail(f"readers={written!r}: {so_far!r} ({type(field).__name__}) cannot be "
                       f"followed: name foreign keys, one-to-ones and many-to-manys (or their "
                       f"reverse relations)")
        hops.append(hop)
        current = hop.target
    return tuple(hops)


def _hop(source: type[models.Model], name: str, field: Any) -> Hop | None:
    """The hop through ``field`` (a field of ``source`` or a reverse relation to it); None for
    what cannot be followed (generic relations)."""
    if isinstance(field, (models.ManyToManyField, models.ManyToManyRel)):
        forward = isinstance(field, models.ManyToManyField)
        # the stubs type neither side's m2m attributes
        m2m: Any = field if isinstance(field, models.ManyToManyField) else field.field
        through: Any = m2m.remote_field.through
        source_fk = m2m.m2m_field_name() if forward else m2m.m2m_reverse_field_name()
        target_fk = m2m.m2m_reverse_field_name() if forward else m2m.m2m_field_name()
        fk_to_source: Any = through._meta.get_field(source_fk)
        return Hop(name, source, field.related_model, "m2m", through=through,
                   through_source=fk_to_source.attname,
                   through_source_field=fk_to_source.target_field.name,
                   through_target=through._meta.get_field(target_fk).attname,
                   forward=forward)
    if isinstance(field, models.ForeignKey):  # and OneToOneField
        return Hop(name, source, field.related_model, "fk", attname=field.attname)
    if isinstance(field, models.ManyToOneRel):  # and OneToOneRel: the FK is on the target
        fk = field.field
        return Hop(name, source, field.related_model, "reverse_fk", attname=fk.attname,
                   source_field=fk.target_field.name)
    return None


def _resolve(model: type[models.Model], path: str, template: ChannelTemplate,
             where: str) -> ReaderPath:
    def fail(message: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(f"{where}: {message}")

    names = path.split("__")
    user_model = _user_model()
    attnames = template.attnames
    first: Any = None
    try:
        first = model._meta.get_field(names[0])
    except FieldDoesNotExist:
        pass
    if isinstance(first, models.ForeignKey) and first.attname in attnames:
        if set(attnames) != {first.attname}:
            raise fail(f"{template.template!r} with readers={path!r}: the channel may only carry "
                       f"{{{first.attname}}} (its readers are who {names[0]!r} leads to; "
                       f"another placeholder would make channels revocation cannot name)")
        start = first.related_model
        hops = _walk(start, names[1:], fail, path, skipped=1)
        keys: tuple[tuple[str, str], ...] = ((first.attname, first.target_field.attname),)
        listed = True
    else:
        if not identifies_one_row(model, attnames):
            raise fail(
                f"{template.template!r} with readers={path!r}: the placeholders "
                f"{', '.join(template.placeholders)} neither name the path's first foreign key "
                f"(\"{{{names[0]}_id}}\") nor identify one row, so readers of one row would read "
                f"every matching row. Route by the relation (e.g. \"$...:{{{names[0]}_id}}\") or "
                f"by a unique field")
        start = model
        hops = _walk(model, names, fail, path)
        keys = tuple((a, a) for a in attnames)
        listed = False
    end = hops[-1].target if hops else start
    if end is not user_model:
        raise fail(f"readers={path!r} leads to {end._meta.label}, not to the user model "
                   f"({settings.AUTH_USER_MODEL}); end the path with the relation to the "
                   f"users, e.g. \"{path}__<field pointing at the user>\"")
    return ReaderPath(template, start, keys, hops, listed)
