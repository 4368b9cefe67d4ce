"""The ``@broadcast`` declarations as the admin's declarations page shows them: plain text.

Read from the registry (``broadcast_registry.declarations()``), never from the database: the
page shows what the running code declared, including ``INSTANT_SIGNALS["MODELS"]`` entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .. import levels
from ..declarations import Declaration

LEVEL_NAMES = {value: str(label) for value, label in levels.CHOICES}


@dataclass(frozen=True)
class ChannelLine:
    """One channel (or template) of a declaration and who may read it."""

    name: str
    readers: str


@dataclass(frozen=True)
class DeclarationRow:
    """One declaration, described."""

    model: str  # app_label.model_name
    channels: tuple[ChannelLine, ...]
    fields: str
    format: str
    events: str
    condition: str  # "" when none
    presence: bool
    source: str


def name_of(value: Any) -> str:
    """A callable's dotted name (``module.qualname``), or its repr."""
    qualname = getattr(value, "__qualname__", None)
    module = getattr(value, "__module__", None)
    if qualname is None:
        return repr(value)
    return f"{module}.{qualname}" if module else str(qualname)


def readers_of(declaration: Declaration, private: bool) -> str:
    """Who may read a channel of ``declaration`` (``private``: its name starts with "$")."""
    if not private:
        return "anyone (public: no token needed)"
    if declaration.level is not None:
        return f"level {declaration.level!r}: {LEVEL_NAMES.get(declaration.level, '?')}"
    authorize = declaration.authorize
    if isinstance(authorize, str):
        return f"the user in field {authorize!r} of the row"
    if callable(authorize):
        return f"rule {name_of(authorize)}(user, ...)"
    return "nobody (no rule)"


def format_of(declaration: Declaration) -> str:
    """What the declaration's channels carry (its output format says)."""
    return declaration.format.describe()


def fields_of(declaration: Declaration) -> str:
    """The declaration's view of a row: its fields, or the serializer that makes it."""
    if declaration.serializer is not None:
        return f"serializer {name_of(declaration.serializer)}"
    text = ", ".join(declaration.attnames)
    if declaration.dropped_secrets:
        text += f" (left out as secret-looking: {', '.join(declaration.dropped_secrets)})"
    return text


def channels_of(declaration: Declaration) -> tuple[ChannelLine, ...]:
    if declaration.router is not None:
        return (ChannelLine(f"routed by {name_of(declaration.router)}",
                            "a Channel row of the routed name (routed names are not declared)"),)
    return tuple(ChannelLine(t.template, readers_of(declaration, t.private))
                 for t in declaration.templates)


def describe(declaration: Declaration) -> DeclarationRow:
    return DeclarationRow(
        model=declaration.label,
        channels=channels_of(declaration),
        fields=fields_of(declaration),
        format=format_of(declaration),
        events=", ".join(sorted(declaration.events)),
        condition=name_of(declaration.condition) if declaration.condition else "",
        presence=declaration.presence,
        source="INSTANT_SIGNALS['MODELS']" if declaration.source == "settings"
        else "@broadcast",
    )


def describe_all(declarations: Iterable[Declaration]) -> list[DeclarationRow]:
    """Every declaration, by model label (a model's declarations in registration order)."""
    return sorted((describe(d) for d in declarations), key=lambda row: row.model)
