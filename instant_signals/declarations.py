"""One ``@broadcast`` declaration: which channels see a row, what they see of it, who reads them.

Everything about what a channel may see lives here. A declaration turns one state of a row into
a ``Seen`` (the channels the row is visible in, and the declaration's view of it), and a pair of
states (before, after a transaction) into the publications of each channel:

* visible before and after: ``updated`` with the new view and ``changed`` (previous values of
  the view's keys that differ);
* visible after only (created, or entered through routing or ``condition``): ``created``;
* visible before only: ``deleted``; with the last view when the row was deleted, with its pk
  only when the row still exists but left the channel.

So a channel only ever receives values of its own view of a state in which the row was visible
in it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import DatabaseError, connections, models, transaction

from . import formats, levels, tracking
from .channels import (ChannelTemplate, InvalidChannel, attname_of, identifies_one_row,
                       is_private, validate_channel)
from .envelope import CREATED, DELETED, EVENTS, UPDATED
from .formats.base import Format, Publication
from .options import Authorize, BroadcastOptions, Condition, QuerysetHook, Router, Serializer
from .readers import Readers
from .serialization import ALL_FIELDS, drf_serializer, field_view, json_safe, select_fields

__all__ = ["Declaration", "declare"]

logger = logging.getLogger("instant_signals")


class Seen(NamedTuple):
    """What one declaration sees of one state of a row (a tuple: built on every save)."""

    channels: tuple[str, ...]  # where the row is visible; () when nowhere
    fields: dict[str, Any] | None = None  # the declaration's view (JSON-safe), when visible
    owner: str | None = None  # the value of the authorize field, for revocation


@dataclass(slots=True)
class Change:
    """A row's state before and after, as one declaration sees it (None: no such row)."""

    declaration: Declaration
    pk: Any  # JSON-safe
    before: Seen | None
    after: Seen | None
    version: int

    @property
    def key(self) -> tuple[int, Any]:
        return (id(self.declaration), self.pk)

    @property
    def label(self) -> str:
        return self.declaration.label

    @property
    def before_view(self) -> dict[str, Any] | None:
        """The view the row's channels saw before (None: it was visible nowhere)."""
        return self.before.fields if self.before is not None else None


@dataclass(frozen=True)
class Declaration:
    """One frozen ``@broadcast`` declaration of a model (build it with ``declare()``)."""

    model: type[models.Model]
    label: str
    templates: tuple[ChannelTemplate, ...]
    router: Router | None
    attnames: tuple[str, ...]
    dropped_secrets: tuple[str, ...]
    serializer: Serializer | None
    events: frozenset[str]
    condition: Condition | None
    authorize: Authorize | None
    level: str | None
    skip_unchanged: bool
    presence: bool
    #: what its channels carry (``formats``): JSON events, HTML fragments, refresh signals...
    format: Format
    queryset: QuerysetHook | None = None
    source: str = "code"  # "code" or "settings"
    #: attnames whose previous values are needed; all concrete fields when a callable is used
    tracked: tuple[str, ...] = ()
    #: static channel names (no placeholder)
    static_names: frozenset[str] = field(default_factory=frozenset)
    #: the channels when none depends on the row (all static, no router): computed once
    static_channels: tuple[str, ...] | None = None
    #: ``readers=``: who reads each channel, by relation (``readers.py``)
    readers: Readers | None = None

    # -- states ---------------------------------------------------------------------------------
    @property
    def needs_instance(self) -> bool:
        """Whether a callable must see the row itself (then the old row is rebuilt for it)."""
        return self.router is not None or self.condition is not None or self.serializer is not None

    def seen(self, instance: models.Model, event: str,
             values: dict[str, Any] | None = None) -> Seen:
        """What this declaration sees of ``instance`` (``values``: its field values by attname)."""
        if values is None:
            values = instance.__dict__
        owner = self._owner(values)
        if self.condition is not None and not self.condition(instance, event):
            return Seen((), None, owner)
        channels = self.channels_of(instance, event, values)
        if not channels:
            return Seen((), None, owner)
        if self.serializer is not None:
            fields = self.serializer(instance)
        else:
            fields = field_view(values, self.attnames)
        return Seen(channels, fields, owner)

    def seen_before(self, instance: models.Model, previous: dict[str, Any], event: str) -> Seen:
        """What this declaration saw of the row as it was (``previous``: its tracked values)."""
        values = {**instance.__dict__, **previous}
        old = tracking.as_of(instance, previous) if self.needs_instance else instance
        return self.seen(old, event, values)

    def channels_of(self, instance: models.Model, event: str,
                    values: dict[str, Any]) -> tuple[str, ...]:
        if self.static_channels is not None:
            return self.static_channels
        if self.router is None:
            names: Iterable[str | None] = (t.fill(values) for t in self.templates)
        else:
            names = (_checked_name(n, self.label) for n in self.router(instance, event))
        return tuple(dict.fromkeys(n for n in names if n))

    def _owner(self, values: dict[str, Any]) -> str | None:
        if isinstance(self.authorize, str):
            value = values.get(self.authorize)
            return None if value is None else str(value)
        return None

    # -- publications -----------------------------------------------------------------------------
    def publications(self, before: Seen | None, after: Seen | None) -> list[Publication]:
        """The publications of each channel for a row going from ``before`` to ``after``."""
        was = before.channels if before is not None else ()
        now = after.channels if after is not None else ()
        out = []
        for channel in was:
            if channel not in now:
                if after is None:  # deleted: the last view this channel saw
                    out.append(Publication(channel, DELETED, before.fields))  # type: ignore[union-attr]
                else:  # left the channel: its pk only
                    out.append(Publication(channel, DELETED, None))
        for channel in now:
            if channel in was:
                changed = _changed(before.fields or {}, after.fields or {})  # type: ignore[union-attr]
                if changed or not self.skip_unchanged:
                    out.append(Publication(channel, UPDATED, after.fields, changed))  # type: ignore[union-attr]
            else:
                out.append(Publication(channel, CREATED, after.fields))  # type: ignore[union-attr]
        return [p for p in out if p.event in self.events]

    def revocations(self, before: Seen | None, after: Seen | None) -> list[tuple[str, str]]:
        """(user id, channel) pairs whose reader lost access: the owner of a row changed, and the
        row's own channels (``$task:{pk}``) now belong to someone else."""
        if (before is None or after is None or before.owner is None
                or before.owner == after.owner or not self._owned_by_row):
            return []
        return [(before.owner, c) for c in before.channels if c not in self.static_names]

    @property
    def _owned_by_row(self) -> bool:
        """String rule whose channels do not carry the owner (access follows the row's owner)."""
        return isinstance(self.authorize, str) and any(
            not t.is_static and self.authorize not in t.attnames for t in self.templates)

    # -- the initial load of a channel -------------------------------------------------------------
    def template_of(self, name: str) -> tuple[ChannelTemplate, dict[str, str]] | None:
        """The template that makes channel ``name``, with its placeholder values (strings).

        ``InvalidChannel`` when a template of its shape matches but a value cannot be one of its
        field (``note:abc`` for an integer pk): checked before any query."""
        invalid: InvalidChannel | None = None
        for template in self.templates:
            params = template.match(name)
            if params is None:
                continue
            try:
                template.typed(params)
            except InvalidChannel as exc:
                invalid = invalid or exc
                continue
            return template, params
        if invalid is not None:
            raise invalid
        return None

    def rows(self, request: Any, name: str,
             limit: int) -> tuple[list[tuple[Any, dict[str, Any] | None]], bool]:
        """(pk, view) of the rows visible in channel ``name`` now, as its events show them, and
        whether candidates past ``limit`` were left out.

        The ``queryset(request, **placeholders)`` hook (default: the placeholders as filters,
        ``model._default_manager.filter(owner_id=..)``) gives the candidates; ``condition`` and
        routing then decide, as for events, so a row is listed only where an event would go.
        ``InvalidChannel`` as for ``template_of``."""
        found = self.template_of(name)
        if found is None:
            return [], False
        template, params = found
        if self.queryset is not None:
            candidates = self.queryset(request, **params)
        else:
            candidates = self.model._default_manager.filter(**template.typed(params))
        out = []
        loaded = list(candidates[:limit + 1])
        for instance in loaded[:limit]:
            seen = self.seen(instance, UPDATED)
            if name in seen.channels:
                out.append((pk_of(instance), seen.fields))
        return out, len(loaded) > limit

    # -- readers ----------------------------------------------------------------------------------
    def may_read(self, user: Any, name: str) -> bool | None:
        """Whether ``user`` may read channel ``name``; None when it is not one of this
        declaration's channels (a callable router's names never are: a ``Channel`` row decides)."""
        invalid = False
        for template in self.templates:
            params = template.match(name)
            if params is None:
                continue
            if template.is_static:
                return self._static_rule(user, name)
            try:  # before any rule or query: "$task:abc" names no row of an integer pk
                typed = template.typed(params)
            except InvalidChannel:
                invalid = True
                continue
            if not template.private:
                return True
            if not getattr(user, "is_authenticated", False):
                return False
            return self._instance_rule(template, user, params, typed)
        return False if invalid else None

    def user_channels(self, user: Any) -> list[tuple[str, str]]:
        """(name, level) of this declaration's channels ``user`` may read that can be listed:
        static channels, and per-user ones (``$user:{owner_id}`` with ``authorize="owner"``)."""
        out = []
        for template in self.templates:
            if template.is_static:
                if self._static_rule(user, template.template):
                    out.append((template.template, self._static_level(template.template)))
            elif (isinstance(self.authorize, str) and set(template.attnames) == {self.authorize}
                  and getattr(user, "is_authenticated", False)):
                name = template.fill({self.authorize: user.pk})
                if name:
                    out.append((name, "owner"))
            elif self.readers is not None and getattr(user, "is_authenticated", False):
                path = self.readers.for_template(template)
                if path.listed:  # one channel per group the user belongs to; one query
                    out += [(name, "readers") for name in path.channels_of(user)]
        return out

    def _static_level(self, name: str) -> str:
        if not is_private(name):
            return levels.PUBLIC
        return self.level or "rule"

    def _static_rule(self, user: Any, name: str) -> bool:
        if not is_private(name):
            return True
        if self.level is not None:
            return self.level in levels.readable_levels(user)
        if callable(self.authorize):
            return _safely(self.authorize, user, label=self.label, channel=name)
        return False

    def _instance_rule(self, template: ChannelTemplate, user: Any, params: dict[str, str],
                       typed: dict[str, Any]) -> bool:
        """``params``: the placeholder values as written (what a callable rule gets); ``typed``:
        the same by attname, as values of their fields (already checked)."""
        if callable(self.authorize):
            return _safely(self.authorize, user, label=self.label, channel=template.template,
                           **params)
        if self.readers is not None:  # one membership lookup
            path = self.readers.for_template(template)
            try:
                with _savepoint(path.start._default_manager.db):
                    return path.may_read(user, typed)
            except (ValueError, TypeError, ArithmeticError, ValidationError, DatabaseError):
                return False
        if not isinstance(self.authorize, str):
            return False
        by_attname = dict(zip(template.attnames, params.values()))
        if self.authorize in by_attname:  # the owner is in the name: compare, no query
            return by_attname[self.authorize] == str(user.pk)
        # The placeholders identify one row (checked at registration): its owner decides.
        manager = self.model._default_manager
        try:
            with _savepoint(manager.db):
                owner = manager.filter(**typed).values_list(self.authorize, flat=True).first()
        except (ValueError, TypeError, ArithmeticError, ValidationError, DatabaseError):
            return False  # "$task:abc" for an integer pk; one too large for the database
        return owner is not None and str(owner) == str(user.pk)


def _savepoint(alias: str) -> Any:
    """A savepoint when inside a transaction, so a refused query cannot break it."""
    if connections[alias].in_atomic_block:
        return transaction.atomic(using=alias)
    return _Nothing()


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _safely(rule: Callable[..., Any], user: Any, *, label: str, channel: str,
            **params: str) -> bool:
    """A callable authorize rule; one that raises denies (and is logged, rate-limited: any
    logged-in user can make a rule raise at will), never a 500."""
    try:
        return bool(rule(user, **params))
    except Exception as exc:  # noqa: BLE001 - a failing rule must deny, not break the request
        rule_failures.report(rule, exc, label=label, channel=channel)
        return False


RULE_FAILURE_LOG_INTERVAL = 60.0
"""Seconds between two log lines about one rule failing with one exception type."""
_clock = time.monotonic


class RuleFailures:
    """Logs a raising rule once per (rule, exception type): the first time with its traceback,
    then at most one line per ``RULE_FAILURE_LOG_INTERVAL`` that counts the failures left out."""

    MAX_KEYS = 1000  # rules x exception types is bounded by code; this bounds it anyway

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str, str], list[float]] = {}  # key -> [logged at, left out]

    def report(self, rule: Callable[..., Any], exc: Exception, *, label: str,
               channel: str) -> None:
        name = getattr(rule, "__qualname__", None) or repr(rule)
        cause = type(exc).__name__
        key = (label, name, cause)
        now = _clock()
        with self._lock:
            state = self._seen.get(key)
            if state is not None and now - state[0] < RULE_FAILURE_LOG_INTERVAL:
                state[1] += 1
                return
            if state is None and len(self._seen) >= self.MAX_KEYS:
                self._seen.clear()
            left_out = int(state[1]) if state is not None else 0
            self._seen[key] = [now, 0]
        if state is None:
            logger.warning("instant_signals: the authorize rule of %s (%s) raised %s for channel "
                           "%r; access denied (logged once per %.0f s per rule and cause)",
                           label, name, cause, channel, RULE_FAILURE_LOG_INTERVAL, exc_info=exc)
        else:
            logger.warning("instant_signals: the authorize rule of %s (%s) raised %s again for "
                           "channel %r; access denied (%d more times since the last line)",
                           label, name, cause, channel, left_out)

    def forget(self) -> None:
        """Start over (tests)."""
        with self._lock:
            self._seen.clear()


rule_failures = RuleFailures()


def _checked_name(name: Any, label: str) -> str | None:
    try:
        return validate_channel(name)
    except ValueError as exc:
        logger.warning("instant_signals: %s: channel %r skipped: %s", label, name, exc)
        return None


def _changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {k: before[k] for k, v in after.items() if k in before and before[k] != v}


# -- building a declaration -------------------------------------------------------------------

def declare(model: type[models.Model], options: BroadcastOptions, *,
            source: str = "code") -> Declaration:
    """Validate ``options`` and freeze them; every mistake is an ``ImproperlyConfigured`` that
    says what to write instead."""
    channels, fields, exclude = options.channels, options.fields, options.exclude
    serializer, serializer_class = options.serializer, options.serializer_class
    events, condition, authorize = options.events, options.condition, options.authorize
    level, skip_unchanged, queryset = options.level, options.skip_unchanged, options.queryset
    label = model._meta.label_lower
    where = f"@broadcast on {label}"

    def fail(message: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(f"{where}: {message}")

    # Routing
    router: Router | None = None
    templates: tuple[ChannelTemplate, ...] = ()
    if callable(channels):
        router = channels
    elif (isinstance(channels, (list, tuple)) and channels
          and all(isinstance(c, str) for c in channels)):
        try:
            templates = tuple(ChannelTemplate(model, c) for c in dict.fromkeys(channels))
        except (ValueError, ImproperlyConfigured) as exc:
            raise fail(str(exc)) from None
    else:
        raise fail(f"channels must be a non-empty list of names or a callable "
                   f"(instance, event) -> names, not {channels!r}")

    # What is published
    views = [name for name, given in (("fields", fields), ("exclude", exclude),
                                      ("serializer", serializer),
                                      ("serializer_class", serializer_class))
             if given is not None]
    if not views:
        raise fail('say which fields to publish: fields=["id", "title", ...], '
                   'exclude=[...], fields="__all__" (secret-looking names are still left '
                   'out), or serializer=... / serializer_class=...')
    if serializer is not None and serializer_class is not None:
        raise fail("give serializer or serializer_class, not both")
    if (serializer is not None or serializer_class is not None) and (fields or exclude):
        raise fail("a serializer chooses the fields itself: drop fields/exclude")
    if serializer_class is not None:
        if not isinstance(serializer_class, type):
            raise fail("serializer_class must be a (DRF) serializer class")
        serializer = drf_serializer(serializer_class)
    if serializer is not None and not callable(serializer):
        raise fail("serializer must be callable (instance -> dict)")
    attnames: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    if serializer is None:
        attnames, dropped = select_fields(model, fields, exclude, where)

    # Events and condition
    try:
        chosen_events = frozenset(events)
    except TypeError:
        raise fail(f"events must be some of {sorted(EVENTS)}") from None
    if not chosen_events or not chosen_events <= EVENTS or isinstance(events, str):
        raise fail(f"events must be some of {sorted(EVENTS)}, not {events!r}")
    if condition is not None and not callable(condition):
        raise fail("condition must be callable (instance, event) -> bool")
    if queryset is not None and not callable(queryset):
        raise fail("queryset must be callable (request, **placeholders) -> QuerySet")
    try:  # the format reads its own options (template=, refresh=, ...)
        output = formats.choose(model, options, None if serializer is not None else attnames)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if skip_unchanged is None:  # the format's default: fragments skip (the same HTML again)
        skip_unchanged = output.skip_unchanged

    # Readers
    if level is not None and level not in levels.DECLARABLE:
        raise fail(f"level must be one of {', '.join(levels.DECLARABLE)}, not {level!r} "
                   f"(group channels need a Channel row)")
    authorize_attname = _check_authorize(model, authorize, templates, router, fail)
    readers = _check_readers(model, options.readers, level, authorize, templates, router,
                             where, fail)
    for channel_template in templates:
        if readers is not None:
            continue  # checked by _check_readers
        if channel_template.is_static:
            if channel_template.private and level is None and not callable(authorize):
                raise fail(f'say who may read {channel_template.template!r}: level="staff" (or '
                           f'"users", "superuser"), or authorize=callable(user) -> bool')
        elif not channel_template.private and authorize is not None:
            raise fail(f"{channel_template.template!r} has an authorize rule but does not start with "
                       f'"$", so Centrifugo would let anyone subscribe without a token: name it '
                       f'"${channel_template.template}"')
        elif channel_template.private and authorize is None:
            raise fail(f"{channel_template.template!r} is private: say who may read it with "
                       f'authorize="<field pointing at the user>" or authorize=callable(user, '
                       f"**placeholders)")

    _check_presence(bool(options.presence), templates, router, fail)

    static = frozenset(t.template for t in templates if t.is_static)
    concrete = tuple(f.attname for f in model._meta.concrete_fields)
    if router is not None or condition is not None or serializer is not None:
        tracked = concrete
    else:
        tracked = tuple(dict.fromkeys(
            [*attnames, *(a for t in templates for a in t.attnames)]
            + ([authorize_attname] if authorize_attname else [])))
    return Declaration(
        model=model, label=label, templates=templates, router=router, attnames=attnames,
        dropped_secrets=dropped, serializer=serializer, events=chosen_events,
        condition=condition, authorize=authorize_attname or authorize, level=level,
        skip_unchanged=bool(skip_unchanged), presence=bool(options.presence), queryset=queryset,
        format=output, source=source, tracked=tracked, static_names=static, readers=readers,
        static_channels=(tuple(t.template for t in templates)
                         if router is None and all(t.is_static for t in templates) else None))


def _check_authorize(model: type[models.Model], authorize: Any,
                     templates: tuple[ChannelTemplate, ...], router: Router | None,
                     fail: Callable[[str], ImproperlyConfigured]) -> str | None:
    """Validate ``authorize``; the attname when it is a field name."""
    if authorize is None or callable(authorize):
        return None
    if not isinstance(authorize, str):
        raise fail("authorize must be a field name (the user the row belongs to) or a callable")
    if router is not None:
        raise fail("authorize as a field name needs channel templates such as "
                   '"$task:{pk}"; with a callable router, readers come from Channel rows')
    attname = attname_of(model, authorize, "@broadcast authorize")
    for template in templates:
        if template.is_static or not template.private or attname in template.attnames:
            continue  # (a public template with a rule is refused with its own message)
        if not identifies_one_row(model, template.attnames):
            raise fail(
                f"{template.template!r} with authorize={authorize!r}: "
                f"{', '.join(template.placeholders)} does not identify one row, so owning one "
                f"matching row would grant every matching row's events. Put the owner in the "
                f"channel name (e.g. \"$...:{{{authorize}}}:...\") or route by a unique field.")
    return attname


def _check_readers(model: type[models.Model], readers: Any, level: str | None, authorize: Any,
                   templates: tuple[ChannelTemplate, ...], router: Router | None, where: str,
                   fail: Callable[[str], ImproperlyConfigured]) -> Readers | None:
    """``readers=`` replaces ``authorize``/``level`` on ``$`` templates (``readers.py``)."""
    if readers is None:
        return None
    if level is not None or authorize is not None:
        raise fail(f"readers={readers!r} says who reads the channels; drop "
                   f"{'level' if level is not None else 'authorize'}= (give one of readers=, "
                   f"authorize=, level=)")
    if router is not None:
        raise fail("readers= needs channel templates such as \"$project:{project_id}\"; with a "
                   "callable router, readers come from Channel rows")
    for template in templates:
        if template.is_static or not template.private:
            raise fail(f"readers= applies to private channel templates (\"$project:"
                       f"{{project_id}}\"); {template.template!r} is "
                       f"{'a static name' if template.is_static else 'not private (no $)'}: "
                       f"declare it in an @broadcast of its own")
    return Readers(model, readers, templates, where)


def _check_presence(presence: bool, templates: tuple[ChannelTemplate, ...],
                    router: Router | None, fail: Callable[[str], ImproperlyConfigured]) -> None:
    """Centrifugo enables presence per namespace: ``presence=True`` must name channels that are
    each in a namespace, or it would be on for every channel without one."""
    if not presence:
        return
    if router is not None:
        raise fail("presence=True needs channel names or templates (\"room:{pk}\"): with a "
                   "callable router installws cannot tell which namespace to enable it on")
    for template in templates:
        if template.namespace is None:
            bare = template.template.lstrip("$")
            raise fail(
                f"presence=True on {template.template!r}, a channel without a namespace: "
                f"Centrifugo turns presence on per namespace, so it would be on for every "
                f"channel without one. Put the channel in a namespace of its own, e.g. "
                f'"room:{bare}" (or "$room:{bare}"), or declare presence in a separate '
                f"@broadcast for the namespaced channels only")


def pk_of(instance: models.Model) -> Any:
    return json_safe(instance.pk)

