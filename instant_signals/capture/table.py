"""The declarations the registry pushed down, and which of them a write of a class concerns.

A write through a model class concerns the declarations of:

* the class itself;
* for a save, every class it inherits from: the concrete model of a proxy (and the proxies in
  between), the parents of a multi-table child (Django saves their rows with the child's, and
  sends ``post_save`` for the child only);
* for a delete, the class and the proxies up to its concrete model: Django collects and deletes
  a child's parent rows itself, sending their own ``post_delete``;
* a historical model (``apps.get_model()`` in a migration) stands for the current model of the
  same label, with the declarations whose view is a field selection (a serializer or an HTML
  declaration needs the real class: skipped, logged once).

Proxies' own declarations concern writes through the proxy (and its own proxies) only.
"""

from __future__ import annotations

import logging
import weakref
from typing import NamedTuple

from django.apps import apps as global_apps
from django.db import models

from ..declarations import Declaration

logger = logging.getLogger("instant_signals")


class Applies(NamedTuple):
    """The declarations a write of one class concerns, and the attnames they read."""

    declarations: tuple[Declaration, ...]
    attnames: tuple[str, ...]  # tracked attnames (snapshots, expressions read back)
    historical: bool = False


NOTHING = Applies((), ())


def is_historical(model: type[models.Model]) -> bool:
    """Whether ``model`` is a migration's historical model (not in the project's app registry)."""
    return model._meta.apps is not global_apps


def proxy_chain(model: type[models.Model]) -> list[type[models.Model]]:
    """``model``, then each class it is a proxy of, up to its concrete model."""
    chain = [model]
    while model._meta.proxy and model._meta.proxy_for_model is not None:
        model = model._meta.proxy_for_model
        chain.append(model)
    return chain


class Table:
    """Declarations by model (``declare`` replaces a model's), resolved per writing class."""

    def __init__(self) -> None:
        self._declared: dict[type[models.Model], tuple[Declaration, ...]] = {}
        self._by_label: dict[str, type[models.Model]] = {}
        self._saves: dict[type[models.Model], Applies] = {}
        self._deletes: dict[type[models.Model], Applies] = {}
        self._old_saves: weakref.WeakKeyDictionary[type[models.Model], Applies] = \
            weakref.WeakKeyDictionary()
        self._old_deletes: weakref.WeakKeyDictionary[type[models.Model], Applies] = \
            weakref.WeakKeyDictionary()
        # declarations whose skip on historical models was logged; ids of declarations a
        # declare() replaces are dropped with them, so a new object at a reused id logs again
        self._logged: set[int] = set()

    def declare(self, model: type[models.Model], declarations: tuple[Declaration, ...]) -> None:
        self._logged.difference_update(id(d) for d in self._declared.get(model, ()))
        if declarations:
            self._declared[model] = declarations
            self._by_label[model._meta.label_lower] = model
        else:
            self._declared.pop(model, None)
            if self._by_label.get(model._meta.label_lower) is model:
                del self._by_label[model._meta.label_lower]
        for cache in (self._saves, self._deletes, self._old_saves, self._old_deletes):
            cache.clear()

    def declared(self) -> dict[type[models.Model], tuple[Declaration, ...]]:
        """Every declared model and its declarations (for capture modes that install things
        per table)."""
        return dict(self._declared)

    def for_save(self, sender: type[models.Model]) -> Applies:
        found = self._saves.get(sender)
        if found is None:
            found = self._resolve(sender, [sender, *sender._meta.get_parent_list()], True)
        return found

    def for_delete(self, sender: type[models.Model]) -> Applies:
        found = self._deletes.get(sender)
        if found is None:
            found = self._resolve(sender, proxy_chain(sender), False)
        return found

    def concerns(self, sender: type[models.Model]) -> bool:
        return bool(self.for_save(sender).declarations or self.for_delete(sender).declarations)

    def _resolve(self, sender: type[models.Model], lineage: list[type[models.Model]],
                 saves: bool) -> Applies:
        historical = is_historical(sender)
        cache = (self._old_saves if saves else self._old_deletes) if historical else \
            (self._saves if saves else self._deletes)
        cached = cache.get(sender)
        if cached is not None:
            return cached
        found: list[Declaration] = []
        for model in lineage:
            if historical:
                current = self._by_label.get(model._meta.label_lower)
                for d in self._declared.get(current, ()) if current is not None else ():
                    if d.serializer is None and d.format.historical_models:
                        found.append(d)
                    elif id(d) not in self._logged:
                        self._logged.add(id(d))
                        logger.warning(
                            "instant_signals: saves of %s through a migration's historical "
                            "model are not published by its declaration on %s: a serializer "
                            "or HTML declaration needs the model's own class", d.label,
                            ", ".join(t.template for t in d.templates) or "a router")
            else:
                found.extend(self._declared.get(model, ()))
        declarations = tuple(dict.fromkeys(found))
        if declarations:
            present = {f.attname for f in sender._meta.concrete_fields}
            attnames = tuple(a for a in dict.fromkeys(a for d in declarations for a in d.tracked)
                             if a in present)
            applies = Applies(declarations, attnames, historical)
        else:
            applies = NOTHING
        cache[sender] = applies
        return applies
