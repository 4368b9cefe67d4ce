"""Output formats: what a declaration's channels carry, one module each, registered here.

``FORMATS`` is the one list (name -> format); ``register()`` adds one (one line, e.g. in your
app's ``ready()`` or a test), ``choose()`` picks and configures the format of a declaration for
``declarations.declare``. Everything else asks the declaration's format (``Declaration.format``):
``delivery.commands`` for what a change publishes, ``manage.py instant_types`` for the
TypeScript types, the registry for the namespace options its channels need and for which
declarations may share a channel. See ``formats.base.Format`` for the protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..options import FIELDS
from .base import Format
from .fragments import FRAGMENTS
from .json import JSON
from .refresh import REFRESH

if TYPE_CHECKING:
    from django.db import models

    from ..options import BroadcastOptions

__all__ = ["DEFAULT", "FORMATS", "Format", "choose", "register", "unregister"]

#: The registered formats by name, in registration order.
FORMATS: dict[str, Format] = {}
#: The format of a declaration whose options choose none.
DEFAULT = JSON.name


def register(output: Format) -> Format:
    """Make ``output`` available as ``@broadcast(format=output.name)`` (and chosen by its own
    options, see ``Format.claims``); returns it. A second format of the same name is refused."""
    known = FORMATS.get(output.name)
    if known is not None and known is not output:
        raise ValueError(f"an output format named {output.name!r} is already registered")
    FORMATS[output.name] = output
    return output


def unregister(name: str) -> None:
    """Forget format ``name`` (declarations already made with it keep it)."""
    if name == DEFAULT:
        raise ValueError(f"{DEFAULT!r} is the default format; it cannot be unregistered")
    FORMATS.pop(name, None)


def choose(model: type[models.Model], options: BroadcastOptions,
           view_keys: tuple[str, ...] | None) -> Format:
    """The format of a declaration, configured: ``format=`` when given, else the one its options
    ask for (``template=``: fragments), else JSON events. ``ValueError`` says what to write:
    two formats asked for, or an option of one format given to another."""
    if options.format is not None:
        chosen = FORMATS.get(options.format) if isinstance(options.format, str) else None
        if chosen is None:
            raise ValueError(f"format must be one of {', '.join(map(repr, FORMATS))}, "
                             f"not {options.format!r}")
    else:
        claimed = [f for f in FORMATS.values() if f.claims(options)]
        if len(claimed) > 1:
            raise ValueError(
                ", ".join(f"{f.chosen_by} publishes {f.carries}" for f in claimed)
                + ": one per declaration (declare the model twice, on two channels, for both)")
        chosen = claimed[0] if claimed else FORMATS[DEFAULT]
    for other in FORMATS.values():
        given = [name for name in other.options
                 if name not in chosen.options and _given(options, name)]
        if given and other is not chosen:
            how = other.chosen_by or f"format={other.name!r}"
            raise ValueError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for "
                             f"{other.carries} ({how}), not {chosen.carries}")
    return chosen.configure(model, options, view_keys)


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in FIELDS}


def _given(options: BroadcastOptions, name: str) -> bool:
    value = getattr(options, name)
    return value is not None and value != _DEFAULTS.get(name)


register(JSON)
register(FRAGMENTS)
register(REFRESH)
