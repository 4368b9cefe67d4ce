"""The one list of ``@broadcast`` options: their types, defaults, and how settings give them.

``BroadcastOptions`` is that list. Everything else reads it: ``register()``/``@broadcast`` take
its fields as keyword arguments (type checkers see its constructor's signature), the
``INSTANT_SIGNALS["MODELS"]`` entries are parsed into it (``parse``: unknown names refused,
dotted paths imported), ``declarations.declare`` validates and freezes it into a ``Declaration``
(an output format reads its own options: ``formats``), and the option table of
``docs/reference/broadcast.md`` is checked against it (``markdown_table``). Adding an option is
one field here (and its validation in ``declare`` or in its format).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import (Any, Callable, Iterable, Literal, Mapping, ParamSpec, Protocol, Sequence,
                    TypeVar, Union, overload)

from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.utils.module_loading import import_string

from .envelope import EVENTS

__all__ = ["BroadcastOptions"]

P = ParamSpec("P")
M = TypeVar("M", bound=models.Model)

#: ``channels=callable``: ``(instance, event) -> names``.
Router = Callable[[models.Model, str], Iterable[str]]
#: ``condition(instance, event) -> bool``: whether the row is visible in that state.
Condition = Callable[[models.Model, str], bool]
#: ``serializer(instance) -> dict``: the view of a row.
Serializer = Callable[[models.Model], dict[str, Any]]
#: A field name (the user the row belongs to) or ``rule(user, **placeholders) -> bool``.
Authorize = Union[str, Callable[..., bool]]
#: ``queryset(request, **placeholders)``: the rows of one channel for the initial load.
QuerysetHook = Callable[..., "models.QuerySet[Any]"]
#: ``render(context) -> str``: the fragment of one row state (trusted HTML).
Renderer = Callable[[dict[str, Any]], str]
#: An element id pattern (``"{model_name}_{pk}"``) or ``target(context) -> str``.
Target = Union[str, Callable[[dict[str, Any]], str]]

#: How ``INSTANT_SIGNALS["MODELS"]`` gives an option that is a callable in code: ``"always"``
#: (a string is a dotted path), ``"with_dot"`` (a string with a dot is a dotted path, other
#: strings are values: channel lists, field names), or None (never imported).
Dotted = Literal["always", "with_dot", None]


@dataclass(frozen=True)
class Option:
    """What the options table says of one option (the metadata of a ``BroadcastOptions`` field)."""

    section: str
    dotted: Dotted = None
    default: str = ""  # the default as the docs state it, when it is not the field's own


def _option(default: Any = dataclasses.MISSING, *, section: str, dotted: Dotted = None,
            documented_default: str = "") -> Any:
    return dataclasses.field(default=default,
                             metadata={"option": Option(section, dotted, documented_default)})


@dataclass(frozen=True, kw_only=True)
class BroadcastOptions:
    """The options of one ``@broadcast`` declaration, as given (``declare`` validates them)."""

    channels: Sequence[str] | Router = _option(section="Routing", dotted="with_dot")
    fields: Sequence[str] | str | None = _option(None, section="What is published")
    exclude: Sequence[str] | None = _option(None, section="What is published")
    serializer: Serializer | None = _option(None, section="What is published", dotted="always")
    serializer_class: type | None = _option(None, section="What is published", dotted="always")
    events: Iterable[str] = _option(EVENTS, section="Events",
                                    documented_default="all three")
    condition: Condition | None = _option(None, section="Events", dotted="always")
    skip_unchanged: bool | None = _option(
        None, section="Events", documented_default="False; True with template/render/refresh")
    level: str | None = _option(None, section="Readers")
    authorize: Authorize | None = _option(None, section="Readers", dotted="with_dot")
    readers: str | None = _option(None, section="Readers")
    presence: bool = _option(False, section="Live lists and presence")
    queryset: QuerysetHook | None = _option(None, section="Live lists and presence",
                                            dotted="always")
    format: str | None = _option(None, section="Output format",
                                 documented_default="chosen by the options")
    template: str | None = _option(None, section="HTML over the wire")
    render: Renderer | None = _option(None, section="HTML over the wire", dotted="always")
    target: Target | None = _option(None, section="HTML over the wire",
                                    documented_default='"{model_name}_{pk}"')
    container: Target | None = _option(None, section="HTML over the wire",
                                       documented_default='"{model_name}_list"')
    insert: str | None = _option(None, section="HTML over the wire",
                                 documented_default='"append"')
    refresh: bool = _option(False, section="HTML over the wire")


FIELDS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(BroadcastOptions)
#: The option names, in the order of the docs.
NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
REQUIRED: tuple[str, ...] = tuple(f.name for f in FIELDS if f.default is dataclasses.MISSING)


def option_of(name: str) -> Option:
    """The metadata of option ``name``."""
    found: Option = next(f for f in FIELDS if f.name == name).metadata["option"]
    return found


def parse(given: Mapping[str, Any], *, from_settings: bool = False) -> BroadcastOptions:
    """Options from a mapping of names (keyword arguments, or one ``MODELS`` entry).

    Unknown and missing names raise ``ImproperlyConfigured`` that lists the valid ones; with
    ``from_settings``, dotted paths are imported first (``ImportError`` propagates)."""
    unknown = sorted(set(given) - set(NAMES))
    if unknown:
        raise ImproperlyConfigured(
            f"unknown option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(n) for n in unknown)}; the options are: {', '.join(NAMES)}")
    missing = [n for n in REQUIRED if n not in given]
    if missing:
        raise ImproperlyConfigured(f"{', '.join(missing)} is required; the options are: "
                                   f"{', '.join(NAMES)}")
    values = dict(given)
    if from_settings:
        for name, value in values.items():
            dotted = option_of(name).dotted
            if isinstance(value, str) and (dotted == "always" or
                                           dotted == "with_dot" and "." in value):
                values[name] = import_string(value)
    return BroadcastOptions(**values)


_READABLE = {"Router": "callable(instance, event) -> names",
             "Condition": "callable(instance, event) -> bool",
             "Serializer": "callable(instance) -> dict",
             "Authorize": "str or callable(user, **placeholders) -> bool",
             "QuerysetHook": "callable(request, **placeholders) -> QuerySet",
             "Renderer": "callable(context) -> str",
             "Target": "str or callable(context) -> str"}


def _type_text(field: dataclasses.Field[Any]) -> str:
    text = str(field.type).replace(" | None", "")
    return " or ".join(_READABLE.get(part, part) for part in text.split(" | "))


def markdown_table() -> str:
    """The table of ``docs/reference/broadcast.md`` (``tests/test_docs.py`` compares them)."""
    rows = ["| option | section | type | default | in settings |", "|---|---|---|---|---|"]
    for field in FIELDS:
        meta: Option = field.metadata["option"]
        if field.default is dataclasses.MISSING:
            default = "required"
        elif meta.default:
            default = meta.default
        elif field.default is None:
            default = "-"
        else:
            default = repr(field.default)
        settings = {"always": "dotted path", "with_dot": "dotted path if it has a dot",
                    None: "value"}[meta.dotted]
        rows.append(f"| `{field.name}` | {meta.section} | `{_type_text(field)}` | "
                    f"{default.replace('|', 'or')} | {settings} |")
    return "\n".join(rows) + "\n"


# -- the signature of register() ----------------------------------------------------------------
# ``register(Model, **options)`` and ``@register(**options)`` take the fields of
# ``BroadcastOptions`` as keyword arguments. ``takes_options`` gives the method that signature for
# type checkers (a ParamSpec bound to the dataclass's constructor), so the names and types are
# written once, above, and mypy/IDEs still check and complete them.

class Register(Protocol[P]):
    """``register`` as type checkers see it: the model (or nothing: a class decorator), then
    the options."""

    @overload
    def __call__(self, model: type[M], /, *args: P.args, **kwargs: P.kwargs) -> type[M]: ...

    @overload
    def __call__(self, model: None = None, /, *args: P.args,
                 **kwargs: P.kwargs) -> Callable[[type[M]], type[M]]: ...


class _RegisterMethod(Protocol[P]):
    def __get__(self, instance: object, owner: Any = None, /) -> Register[P]: ...


def takes_options(options: Callable[P, BroadcastOptions]
                  ) -> Callable[[Callable[..., Any]], _RegisterMethod[P]]:
    """Type ``method(self, model=None, /, **options)`` as taking ``options``' fields."""
    def typed(method: Callable[..., Any]) -> _RegisterMethod[P]:
        return method
    return typed
