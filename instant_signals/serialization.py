"""Model instances to the spec's JSON: selected fields, JSON-safe values, secrets left out."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import operator
import uuid
from typing import Any, Callable, Iterable

from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils.duration import duration_iso_string

# A field whose name contains one of these words is never broadcast unless listed explicitly.
# Substrings on purpose: "api_keys", "accessToken", "passwords" are secrets too; a false
# positive ("monkey") only means the field must be listed to be sent.
SECRET_WORDS = ("password", "passwd", "token", "secret", "key")


def is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no NaN or Infinity


def _same(value: Any) -> Any:
    return value


_iso = operator.methodcaller("isoformat")

# Exact types first (one dict lookup for nearly every value), then the isinstance chain.
_CONVERTERS: dict[type, Callable[[Any], Any]] = {
    str: _same, int: _same, bool: _same, type(None): _same, float: _finite,
    datetime.datetime: _iso, datetime.date: _iso, datetime.time: _iso,
    decimal.Decimal: str, uuid.UUID: str,
}


def json_safe(value: Any) -> Any:
    """One field value as JSON: dates ISO 8601, decimals and UUIDs as strings."""
    convert = _CONVERTERS.get(type(value))
    if convert is not None:
        return convert(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.timedelta):
        return duration_iso_string(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if hasattr(value, "name") and isinstance(getattr(value, "name", None), (str, type(None))):
        return value.name  # FieldFile
    return str(value)


def resolve_fields(
    model: type[models.Model],
    fields: Iterable[str] | None,
    exclude: Iterable[str] | None,
) -> tuple[str, ...]:
    """The attnames to broadcast (``owner`` → ``owner_id``), validated against the model."""
    concrete = model._meta.concrete_fields
    by_name = {f.name: f for f in concrete}
    by_name.update({f.attname: f for f in concrete})
    by_name["pk"] = model._meta.pk

    def lookup(name: str) -> models.Field:
        if name not in by_name:
            raise ImproperlyConfigured(
                f"{model._meta.label} has no concrete field {name!r} "
                f"(choose from {', '.join(sorted(f.name for f in concrete))})"
            )
        return by_name[name]

    if fields is not None:
        if isinstance(fields, str):
            raise ImproperlyConfigured(f"fields of {model._meta.label} must be a list, not a string")
        chosen = [lookup(name).attname for name in fields]
    else:
        chosen = [f.attname for f in concrete if not is_secret(f.name) and not is_secret(f.attname)]
    excluded = {lookup(name).attname for name in (exclude or ())}
    return tuple(dict.fromkeys(name for name in chosen if name not in excluded))


def field_values(instance: models.Model, attnames: Iterable[str]) -> dict[str, Any]:
    """Raw attribute values (not JSON-safe yet); deferred fields are left out, never loaded."""
    values = instance.__dict__
    return {name: values[name] for name in attnames if name in values}


def serialize_fields(raw: dict[str, Any]) -> dict[str, Any]:
    return {name: json_safe(value) for name, value in raw.items()}


def drf_serializer(serializer_class: type) -> Callable[[models.Model], dict[str, Any]]:
    """Wrap a DRF serializer class as ``instance -> JSON-safe dict``."""

    def serialize(instance: models.Model) -> dict[str, Any]:
        data = serializer_class(instance).data
        return json.loads(json.dumps(data, cls=DjangoJSONEncoder))

    return serialize
