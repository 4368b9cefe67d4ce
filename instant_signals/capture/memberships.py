"""Taking a channel away from readers who left: the revocation of ``readers=`` declarations.

For every model a ``readers=`` path crosses (``readers.Watch``), receivers note the (channel,
user) pairs a row grants *before* a write can take them away: ``pre_delete`` of any row on the
path, ``pre_save`` of a row whose foreign key along the path moves (one query for the stored
values, skipped for new rows and for ``update_fields`` that do not name them), ``pre_remove``/
``pre_clear`` of its many-to-manys from either side, a user's ``is_active`` turning False. Adding
never takes access away, so ``post_add`` and new rows cost nothing.

After the transaction commits, those pairs are looked up again (one query per path) and the
users who are no longer readers are unsubscribed from the channel with Centrifugo's server API
``unsubscribe``, in one ``/batch``. The hook runs before every other hook of the transaction, so
these unsubscribes reach Centrifugo before the transaction's own publications. A rolled-back
transaction unsubscribes no one; pairs noted in a rolled-back savepoint are looked up again like
the others (a reader they name still reads, so is kept). New members need nothing: ``subscribe/``
looks membership up when asked.

Failures never reach the caller's write: a lookup or Centrifugo error is logged (the user keeps
the subscription until its token expires).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from typing import Any, Iterable

from django.apps import apps
from django.db import connections, models, transaction
from django.db.models.signals import (m2m_changed, post_delete, post_save, pre_delete,
                                      pre_save)
from django.dispatch import Signal

from ..declarations import Declaration
from ..delivery.commands import Command
from ..delivery.on_commit import send
from ..readers import Hop, ReaderPath, Watch
from ..transactions import FirstHook

logger = logging.getLogger("instant_signals")

Pairs = set[tuple[str, str]]  # (channel, user id)

_SIGNALS: dict[str, Signal] = {"pre_save": pre_save, "post_save": post_save,
                               "pre_delete": pre_delete, "post_delete": post_delete,
                               "m2m_changed": m2m_changed}


class MembershipWatch:
    """The revocation receivers of one registry (the registry pushes its declarations in, as
    into its capture)."""

    def __init__(self, uid: str):
        self.uid = uid
        self._declarations: dict[type[models.Model], tuple[Declaration, ...]] = {}
        self._saves: dict[type[models.Model], list[Watch]] = {}
        self._deletes: dict[type[models.Model], list[Watch]] = {}
        self._m2m: dict[type[models.Model], list[tuple[ReaderPath, int, Hop]]] = {}
        self._connected: list[tuple[str, type[models.Model]]] = []
        self._stash = threading.local()
        self.pending_sync = False

    # -- connection ---------------------------------------------------------------------------
    def declare(self, model: type[models.Model], declarations: Iterable[Declaration]) -> None:
        """Watch the paths of ``model``'s ``readers=`` declarations (``()``: stop)."""
        found = tuple(d for d in declarations if d.readers is not None)
        if not found and model not in self._declarations:
            return
        if found:
            self._declarations[model] = found
        else:
            self._declarations.pop(model, None)
        self.sync()

    def sync(self) -> None:
        """Connect the receivers the declarations need (once the app registry is ready: until
        then paths cannot be resolved). Raises ``ImproperlyConfigured`` for a bad path."""
        if not apps.models_ready:
            self.pending_sync = True
            return
        self.pending_sync = False
        saves: dict[type[models.Model], list[Watch]] = defaultdict(list)
        deletes: dict[type[models.Model], list[Watch]] = defaultdict(list)
        m2m: dict[type[models.Model], list[tuple[ReaderPath, int, Hop]]] = defaultdict(list)
        for declarations in self._declarations.values():
            for declaration in declarations:
                assert declaration.readers is not None
                for path in declaration.readers.resolve().values():
                    for watch in path.watches():
                        if watch.attnames:
                            saves[watch.model].append(watch)
                        if watch.on_delete:
                            deletes[watch.model].append(watch)
                    for position, hop in enumerate(path.hops):
                        if hop.through is not None:
                            m2m[hop.through].append((path, position, hop))
        for name, sender in self._connected:
            _SIGNALS[name].disconnect(sender=sender, dispatch_uid=self._uid(name))
        self._saves, self._deletes, self._m2m = dict(saves), dict(deletes), dict(m2m)
        wanted = ([("pre_save", s) for s in saves] + [("post_save", s) for s in saves]
                  + [("pre_delete", s) for s in deletes] + [("post_delete", s) for s in deletes]
                  + [("m2m_changed", s) for s in m2m])
        for name, sender in wanted:
            _SIGNALS[name].connect(getattr(self, name), sender=sender, weak=False,
                                   dispatch_uid=self._uid(name))
        self._connected = wanted

    def _uid(self, name: str) -> str:
        return f"instant_signals.memberships.{self.uid}.{name}"

    # -- receivers ----------------------------------------------------------------------------
    def pre_save(self, sender: type[models.Model], instance: models.Model, raw: bool = False,
                 using: str | None = None, update_fields: Any = None, **kwargs: Any) -> None:
        if instance._state.adding or instance.pk is None:
            return  # a new row only adds readers
        watches = self._saves.get(sender, [])
        if update_fields is not None:
            named = set(update_fields)
            watches = [w for w in watches if named & _names_of(sender, w.attnames)]
        if not watches:
            return
        alias = using or "default"
        wanted = sorted({a for w in watches for a in (*w.attnames, w.value_attname)})
        try:
            with _savepoint(alias):
                old = sender._base_manager.using(alias).filter(pk=instance.pk).values(
                    *wanted).first()
                if old is None:
                    return
                noted = [(w.path, w.path.pairs(alias, w.anchor, [old[w.value_attname]]))
                         for w in watches
                         if any(old[a] != getattr(instance, a, None) for a in w.attnames)]
        except Exception:  # noqa: BLE001 - never break the caller's save
            _log_lookup_failure(sender)
            return
        self._note(("save", id(instance)), noted)

    def post_save(self, sender: type[models.Model], instance: models.Model,
                  using: str | None = None, **kwargs: Any) -> None:
        self._after(("save", id(instance)), using or "default")

    def pre_delete(self, sender: type[models.Model], instance: models.Model,
                   using: str | None = None, **kwargs: Any) -> None:
        alias = using or "default"
        try:
            with _savepoint(alias):
                noted = [(w.path, w.path.pairs(alias, w.anchor,
                                               [getattr(instance, w.value_attname, None)]))
                         for w in self._deletes.get(sender, [])]
        except Exception:  # noqa: BLE001 - never break the caller's delete
            _log_lookup_failure(sender)
            return
        self._note(("delete", id(instance)), noted)

    def post_delete(self, sender: type[models.Model], instance: models.Model,
                    using: str | None = None, **kwargs: Any) -> None:
        self._after(("delete", id(instance)), using or "default")

    def m2m_changed(self, sender: type[models.Model], instance: models.Model, action: str,
                    reverse: bool, model: type[models.Model], pk_set: set[Any] | None,
                    using: str | None = None, **kwargs: Any) -> None:
        if action not in ("pre_remove", "post_remove", "pre_clear", "post_clear"):
            return  # adding only adds readers
        key = ("m2m", id(instance), action.split("_", 1)[1])
        alias = using or "default"
        if action.startswith("post_"):
            self._after(key, alias)
            return
        noted = []
        try:
            with _savepoint(alias):
                for path, position, hop in self._m2m.get(sender, []):
                    on_source = hop.forward != reverse  # is ``instance`` a row of hop.source?
                    if on_source:
                        anchor, values = path.anchor_lookup(position, "pk"), [instance.pk]
                    elif pk_set is not None:  # source rows by the values the through FK holds
                        anchor = path.anchor_lookup(position, hop.through_source_field)
                        values = list(pk_set)
                    else:  # cleared from the target side: every channel it reached
                        anchor, values = path.anchor_lookup(position + 1, "pk"), [instance.pk]
                    noted.append((path, path.pairs(alias, anchor, values)))
        except Exception:  # noqa: BLE001 - never break the caller's remove()/clear()
            _log_lookup_failure(sender)
            return
        self._note(key, noted)

    # -- after commit -------------------------------------------------------------------------
    def _note(self, key: tuple[Any, ...], noted: list[tuple[ReaderPath, Pairs]]) -> None:
        noted = [(path, pairs) for path, pairs in noted if pairs]
        if noted:
            stash = self._stash.__dict__.setdefault("pending", {})
            stash[key] = noted

    def _after(self, key: tuple[Any, ...], alias: str) -> None:
        """The write happened: look the noted pairs up again after commit."""
        stash = self._stash.__dict__.get("pending")
        noted = stash.pop(key, None) if stash else None
        if not noted:
            return
        conn = connections[alias]
        if not conn.in_atomic_block:
            _revoke(alias, noted)
            return
        batch: _Batch | None = getattr(conn, _ATTR, None)
        if batch is None or not batch.hook.pending(conn):
            batch = _Batch(conn, alias)
            setattr(conn, _ATTR, batch)
        batch.add(noted)


_ATTR = "_instant_signals_revocations"


class _Batch:
    """The pairs noted in one transaction, looked up again when it commits."""

    def __init__(self, conn: Any, alias: str):
        self.alias = alias
        self.noted: dict[int, tuple[ReaderPath, Pairs]] = {}
        self.hook = FirstHook(conn, self.run)

    def add(self, noted: list[tuple[ReaderPath, Pairs]]) -> None:
        for path, pairs in noted:
            self.noted.setdefault(id(path), (path, set()))[1].update(pairs)

    def run(self) -> None:
        _revoke(self.alias, list(self.noted.values()))


def _revoke(alias: str, noted: list[tuple[ReaderPath, Pairs]]) -> None:
    """Unsubscribe the noted users who are readers no more. Never raises."""
    lost: set[tuple[str, str]] = set()
    try:
        for path, pairs in noted:
            lost |= pairs - path.still(alias, pairs)
    except Exception:  # noqa: BLE001 - the write is committed; say who may keep access
        logger.exception("instant_signals: could not look readers up again after a membership "
                         "change; %d subscriptions were not ended",
                         sum(len(p) for _, p in noted))
        return
    if lost:
        send(Command("unsubscribe", params, _dumps(params))
             for params in ({"channel": c, "user": u} for c, u in sorted(lost)))


def _dumps(params: dict[str, str]) -> str:
    return json.dumps(params, separators=(",", ":"))


def _names_of(model: type[models.Model], attnames: Iterable[str]) -> set[str]:
    """The names ``update_fields`` may use for these attnames (``project`` and ``project_id``)."""
    out = set()
    for field in model._meta.concrete_fields:
        if field.attname in attnames:
            out |= {field.name, field.attname}
    return out


def _savepoint(alias: str) -> Any:
    """A savepoint when inside a transaction, so a failed lookup cannot break it."""
    if connections[alias].in_atomic_block:
        return transaction.atomic(using=alias)
    return _Nothing()


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _log_lookup_failure(sender: type[models.Model]) -> None:
    logger.exception("instant_signals: could not look up the readers a write of %s may take "
                     "away; their subscriptions stay until their tokens expire",
                     sender._meta.label)
