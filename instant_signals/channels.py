"""Channel names: validation, Centrifugo namespaces, and templates such as ``"$task:{pk}"``."""

from __future__ import annotations

import logging
import re
import string
from typing import Any, Iterable

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import connections, models, router

__all__ = ["ChannelTemplate", "validate_channel"]

logger = logging.getLogger("instant_signals")

PRIVATE_PREFIX = "$"
"""Centrifugo refuses a channel starting with this prefix to anyone without a subscription
token."""
MAX_CHANNEL_LENGTH = 255
# Printable ASCII without spaces: what Centrifugo accepts and a browser can subscribe to.
_CHANNEL_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


def validate_channel(channel: Any) -> str:
    """Return ``channel`` if Centrifugo can use it as a channel name, else raise ``ValueError``."""
    if not isinstance(channel, str):
        raise ValueError(f"channel must be a string, not {type(channel).__name__}")
    if not channel:
        raise ValueError("channel must not be empty")
    if len(channel) > MAX_CHANNEL_LENGTH:
        raise ValueError(f"channel name is {len(channel)} characters long; the limit is 255")
    if not _CHANNEL_RE.match(channel):
        raise ValueError(
            f"channel {channel[:50]!r} may only hold printable ASCII characters without spaces")
    return channel


class InvalidChannel(ValueError):
    """A channel name of a declared shape whose placeholder value cannot be a value of its field
    (``note:abc`` for an integer pk): no row has it, and no query is made to find out."""


def is_private(name: str) -> bool:
    """Whether Centrifugo itself refuses ``name`` without a subscription token."""
    return name.startswith(PRIVATE_PREFIX)


def namespace_of(name: str) -> str | None:
    """Centrifugo namespace of a channel: ``task`` for ``$task:42``, None for ``public``."""
    bare = name[len(PRIVATE_PREFIX):] if is_private(name) else name
    return bare.split(":", 1)[0] if ":" in bare else None


def field_of(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    """The concrete field ``name`` (a name or attname; ``pk``), followed through foreign keys to
    the field whose values it holds (``owner`` → the user model's pk)."""
    attname = attname_of(model, name, model._meta.label)
    field: Any = next(f for f in model._meta.concrete_fields if f.attname == attname)
    while getattr(field, "target_field", None) is not None and field.is_relation:
        field = field.target_field
    return field  # type: ignore[no-any-return]


def typed_value(model: type[models.Model], name: str, text: str) -> Any:
    """``text`` as a value of field ``name``; ``InvalidChannel`` when it cannot be one, or is
    not written as ``fill()`` writes it (``+2``, ``02`` or ``1_000`` for 2, 2 and 1000, an
    upper-case UUID): such a name never receives an event."""
    field = field_of(model, name)
    kind = _kind_of(field)
    try:
        value = field.to_python(text)
        field.get_prep_value(value)
        _check_range(model, field, value)
    except (ValidationError, ValueError, TypeError, ArithmeticError, OverflowError):
        raise InvalidChannel(f"{{{name}}} must be {kind}; {text[:40]!r} is not") from None
    if str(value) != text:
        raise InvalidChannel(f"{{{name}}} must be {kind} written as {str(value)[:40]!r}, "
                             f"not {text[:40]!r}")
    return value


def _kind_of(field: Any) -> str:
    if isinstance(field, (models.IntegerField, models.AutoField)):
        return "an integer"
    if isinstance(field, models.UUIDField):
        return "a UUID (hyphenated, lower case)"
    if isinstance(field, models.DateTimeField):
        return "a date and time"
    if isinstance(field, models.DateField):
        return "a date (YYYY-MM-DD)"
    if isinstance(field, models.DecimalField):
        return "a decimal number"
    if isinstance(field, (models.FloatField, models.BooleanField)):
        return f"a {field.get_internal_type().replace('Field', '').lower()}"
    return f"a value of {type(field).__name__}"


def _check_range(model: type[models.Model], field: Any, value: Any) -> None:
    """Integers outside what the database column holds (SQLite raises OverflowError)."""
    if not isinstance(field, (models.IntegerField, models.AutoField)) or value is None:
        return
    alias = router.db_for_read(model) or "default"
    try:
        low, high = connections[alias].ops.integer_field_range(field.get_internal_type())
    except KeyError:  # a custom integer field: the database decides
        return
    # No database stores more than 64 bits; SQLite on Django < 5.0 reports no range at all.
    low = -(2 ** 63) if low is None else low
    high = 2 ** 63 - 1 if high is None else high
    if value < low or value > high:
        raise ValueError("out of range")


def attname_of(model: type[models.Model], name: str, where: str) -> str:
    """The attname of concrete field ``name`` (``owner`` → ``owner_id``; ``pk`` → the pk's)."""
    if name == "pk":
        return model._meta.pk.attname
    for field in model._meta.concrete_fields:
        if name in (field.name, field.attname):
            return field.attname
    raise ImproperlyConfigured(f"{where}: {model._meta.label} has no concrete field {name!r}")


def identifies_one_row(model: type[models.Model], attnames: Iterable[str]) -> bool:
    """Whether values of ``attnames`` single out at most one row (pk, unique, unique together)."""
    given = set(attnames)
    meta = model._meta
    by_name = {f.name: f.attname for f in meta.concrete_fields}
    if meta.pk.attname in given:
        return True
    if any(f.unique and f.attname in given for f in meta.concrete_fields):
        return True
    groups: list[Iterable[str]] = list(meta.unique_together)
    groups += [c.fields for c in meta.constraints
               if isinstance(c, models.UniqueConstraint) and c.fields and c.condition is None]
    return any({by_name.get(name, name) for name in group} <= given for group in groups)


class ChannelTemplate:
    """A channel name with ``{field}`` placeholders filled from a row, e.g. ``"$task:{pk}"``.

    A filled value may not contain a character of the literal text between two placeholders, so
    every channel name splits back into one set of values (``match``).
    """

    def __init__(self, model: type[models.Model], template: str):
        self.model = model
        self.template = template
        self.parts: list[tuple[str, str | None]] = []  # (literal, attname or None)
        self.placeholders: list[str] = []  # as written: "pk", "owner_id", "owner"
        pattern = "^"
        for literal, name, spec, conversion in string.Formatter().parse(template):
            if spec or conversion:
                raise ImproperlyConfigured(f"channel {template!r}: use plain {{field}} placeholders")
            pattern += re.escape(literal)
            attname = None
            if name is not None:
                if not name:
                    raise ImproperlyConfigured(f"channel {template!r}: empty placeholder {{}}")
                attname = attname_of(model, name, f"channel {template!r}")
                self.placeholders.append(name)
                pattern += f"(?P<p{len(self.placeholders) - 1}>.+?)"
            self.parts.append((literal, attname))
        self.regex = re.compile(pattern + "$")
        inner = [lit for lit, _ in self.parts[1:]] if len(self.placeholders) > 1 else []
        self.forbidden = frozenset("".join(inner))
        if not self.placeholders:
            validate_channel(template)
        else:  # the literal parts must make a valid name with any value
            validate_channel(template.replace("{", "").replace("}", ""))

    @property
    def attnames(self) -> tuple[str, ...]:
        return tuple(attname for _, attname in self.parts if attname)

    @property
    def is_static(self) -> bool:
        return not self.placeholders

    @property
    def private(self) -> bool:
        return is_private(self.template)

    @property
    def namespace(self) -> str | None:
        return namespace_of(self.template.replace("{", "").replace("}", ""))

    def fill(self, values: dict[str, Any]) -> str | None:
        """The channel for these attname values; None when a value is missing or unusable."""
        if not self.placeholders:
            return self.template
        out = []
        for literal, attname in self.parts:
            out.append(literal)
            if attname is not None:
                value = values.get(attname)
                if value is None or value == "":
                    return None
                text = str(value)
                if self.forbidden.intersection(text):
                    logger.warning("instant_signals: channel %r skipped: value %r holds a "
                                   "separator of the template", self.template, text[:50])
                    return None
                out.append(text)
        name = "".join(out)
        try:
            return validate_channel(name)
        except ValueError as exc:
            logger.warning("instant_signals: channel %r skipped: %s", name[:80], exc)
            return None

    def match(self, name: str) -> dict[str, str] | None:
        """The placeholder values (strings) of channel ``name``, or None if it is not one of ours."""
        if not self.placeholders:
            return {} if name == self.template else None
        found = self.regex.match(name)
        if not found:
            return None
        values = {self.placeholders[i]: found.group(f"p{i}") for i in range(len(self.placeholders))}
        if any(self.forbidden.intersection(v) for v in values.values()):
            return None  # fill() never makes such a name
        return values

    def typed(self, values: dict[str, str]) -> dict[str, Any]:
        """``match()``'s values by attname, as values of their fields; ``InvalidChannel`` (with a
        message naming the placeholder and what it must be) when one cannot be."""
        return {attname: typed_value(self.model, placeholder, values[placeholder])
                for placeholder, attname in zip(self.placeholders, self.attnames)}

    def __repr__(self) -> str:
        return f"ChannelTemplate({self.template!r})"
