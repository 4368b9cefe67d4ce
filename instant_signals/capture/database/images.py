"""A row image (the JSON a trigger wrote) back into the model instance Django would load.

Values are converted field by field, the way the ORM converts what it reads, so declarations,
conditions, routers and serializers see the instance they see in signal mode:

* SQLite: ``json_object()`` keeps SQLite's own storage values (integers, text, reals), so the
  database backend's and the field's converters apply as to a query's results; hex text back
  into bytes for ``BinaryField``, 17-digit text back into a float for ``FloatField``.
* PostgreSQL: ``to_jsonb()`` writes each column's JSON form (ISO dates and times, numbers,
  nested JSON for ``jsonb``, ``\\x..`` hex for ``bytea``): ``field.to_python()`` reads it,
  numbers kept exact for ``DecimalField`` (the image is parsed with decimals).

A value that cannot be read, a column missing from the image (dropped outside Django) or a
``BLOB`` in a column that is not binary is ``Unmappable``, with the reason: the relay makes the
change a dead letter.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Callable

from django.core.exceptions import ValidationError
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.base import DEFERRED

Converter = Callable[[Any], Any]


class Unmappable(Exception):
    """A row image that cannot become an instance of its model (the message says why)."""


class Image:
    """The JSON of a row image, parsed once, with numbers exact when a field needs them."""

    __slots__ = ("text", "_plain", "_exact")

    def __init__(self, value: Any):
        self.text = value if isinstance(value, str) else None
        self._plain: dict[str, Any] | None = None if isinstance(value, str) else value
        self._exact: dict[str, Any] | None = None

    def plain(self) -> dict[str, Any]:
        if self._plain is None:
            self._plain = _loads(self.text, None)
        return self._plain

    def exact(self) -> dict[str, Any]:
        """Numbers with a fraction as ``Decimal`` (what ``DecimalField`` stores)."""
        if self._exact is None:
            self._exact = _loads(self.text, Decimal) if self.text is not None else self.plain()
        return self._exact


def _loads(text: str | None, parse_float: Any) -> dict[str, Any]:
    try:
        value = json.loads(text or "null", parse_float=parse_float)
    except ValueError as exc:
        raise Unmappable(f"the row image is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Unmappable("the row image is not a JSON object")
    return value


class Mapper:
    """Turns images of one model's table into instances, on one database connection."""

    def __init__(self, model: type[models.Model], conn: BaseDatabaseWrapper,
                 needed: tuple[str, ...]):
        self.model = model
        self.using = conn.alias
        self.fields = list(model._meta.concrete_fields)
        self.attnames = [f.attname for f in self.fields]
        self.needed = set(needed) | {model._meta.pk.attname}
        self.sqlite = conn.vendor == "sqlite"
        self.converters = [self._converter(f, conn) for f in self.fields]
        self.exact = any(f.get_internal_type() == "DecimalField" for f in self.fields)

    def values(self, image: Image) -> dict[str, Any]:
        """The image's values by attname (Python values, as the ORM loads them); a field the
        declarations do not read and the image lacks is left out."""
        plain = image.plain()
        exact = image.exact() if self.exact and not self.sqlite else plain
        out: dict[str, Any] = {}
        for field, convert in zip(self.fields, self.converters):
            source = exact if field.get_internal_type() == "DecimalField" else plain
            if field.column not in source:
                if field.attname in self.needed:
                    raise Unmappable(f"column {field.column!r} of {self.model._meta.db_table} "
                                     f"is missing from the row image (dropped or renamed "
                                     f"outside Django?)")
                continue
            raw = source[field.column]
            try:
                out[field.attname] = None if raw is None else convert(raw)
            except Unmappable:
                raise
            except (ValueError, TypeError, ArithmeticError, ValidationError) as exc:
                raise Unmappable(f"column {field.column!r} of {self.model._meta.db_table}: "
                                 f"cannot read {raw!r} as a {field.get_internal_type()}: "
                                 f"{_message(exc)}") from None
        return out

    def instance(self, values: dict[str, Any]) -> models.Model:
        """The instance Django would load with ``values`` (missing fields deferred)."""
        row = [values.get(a, DEFERRED) for a in self.attnames]
        instance: models.Model = self.model.from_db(self.using, self.attnames, row)
        return instance

    # -- converters -----------------------------------------------------------------------------
    def _converter(self, field: models.Field[Any, Any],
                   conn: BaseDatabaseWrapper) -> Converter:
        kind = field.get_internal_type()
        column = str(field.column)
        if kind == "BinaryField":
            return _hex_reader(column, sqlite=self.sqlite)
        if self.sqlite:
            expression = field.get_col(self.model._meta.db_table)
            chain = [*conn.ops.get_db_converters(expression),
                     *expression.get_db_converters(conn)]
            as_float = kind == "FloatField"

            def sqlite_value(value: Any) -> Any:
                if isinstance(value, list):
                    raise Unmappable(f"column {column!r} holds a BLOB, which its field "
                                     f"({kind}) cannot read")
                if as_float and isinstance(value, str):
                    value = float(value)
                for converter in chain:
                    value = converter(value, expression, conn)
                return value

            return sqlite_value
        if kind == "JSONField":
            return _json_reader(field, conn)
        return field.to_python


def _hex_reader(column: str, *, sqlite: bool) -> Converter:
    def read(value: Any) -> Any:
        if not isinstance(value, str):
            raise Unmappable(f"column {column!r}: binary data expected as hex text, got "
                             f"{type(value).__name__}")
        return bytes.fromhex(value if sqlite else value.removeprefix("\\x"))

    return read


def _json_reader(field: Any, conn: BaseDatabaseWrapper) -> Converter:
    """``jsonb`` arrives decoded; a field with its own decoder reads it from its text."""
    if getattr(field, "decoder", None) is None:
        return lambda value: value

    def read(value: Any) -> Any:
        return field.from_db_value(json.dumps(value), None, conn)

    return read


def _message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(str(m) for m in exc.messages)
    return str(exc)
