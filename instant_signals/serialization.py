"""Model rows to JSON: which fields a declaration selects, and JSON-safe values."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import operator
import re
import uuid
from typing import Any, Callable, Iterable, Sequence

from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils.duration import duration_iso_string

ALL_FIELDS = "__all__"

# Secret-looking names, a second line of defence under fields="__all__" or exclude=[...]
# (an explicit fields=[...] list is always taken as written). A name is split into words
# ("otpSeed" -> otp, seed; "pwd_hash" -> pwd, hash); it is secret when a word is one of
# SECRET_WORDS (a trailing "s" ignored: "keys", "credentials"), or holds one of SECRET_STEMS.
SECRET_WORDS = frozenset({
    "password", "passwd", "pwd", "pass", "passphrase", "passcode", "token", "secret", "key",
    "apikey", "pin", "otp", "totp", "mfa", "salt", "hash", "hashed", "ssn",
    "credential", "private", "seed", "cvv", "cvc", "iban", "signature", "session", "cookie",
    "auth", "nonce", "recovery",
})
SECRET_STEMS = ("password", "passwd", "secret", "token", "credential", "passphrase", "apikey",
                "privatekey")
_WORD_RE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def is_secret(name: str) -> bool:
    """Whether a field name looks like it holds a secret (see ``SECRET_WORDS``)."""
    lowered = name.lower()
    if any(stem in lowered for stem in SECRET_STEMS):
        return True
    for word in _WORD_RE.findall(name):
        word = word.lower()
        if word in SECRET_WORDS or (word.endswith("s") and word[:-1] in SECRET_WORDS):
            return True
    return False


def select_fields(
    model: type[models.Model],
    fields: Sequence[str] | str | None,
    exclude: Sequence[str] | None,
    where: str,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(attnames to publish, secret-looking attnames left out) of ``fields``/``exclude``.

    ``fields`` is a list of names (taken as written), ``"__all__"``, or None with ``exclude``;
    under ``"__all__"`` and ``exclude`` secret-looking names are left out (and reported).
    """
    concrete = model._meta.concrete_fields
    by_name: dict[str, models.Field[Any, Any]] = {f.name: f for f in concrete}
    by_name.update({f.attname: f for f in concrete})
    by_name["pk"] = model._meta.pk

    def lookup(name: Any) -> models.Field[Any, Any]:
        if not isinstance(name, str) or name not in by_name:
            raise ImproperlyConfigured(
                f"{where}: {model._meta.label} has no concrete field {name!r} "
                f"(choose from {', '.join(sorted(f.name for f in concrete))})")
        return by_name[name]

    if isinstance(fields, str) and fields != ALL_FIELDS:
        raise ImproperlyConfigured(
            f'{where}: fields must be a list of names or "__all__", not the string {fields!r}')
    if exclude is not None and isinstance(exclude, str):
        raise ImproperlyConfigured(f"{where}: exclude must be a list of names, not a string")
    if fields is not None and fields != ALL_FIELDS and exclude:
        raise ImproperlyConfigured(f"{where}: give fields or exclude, not both")
    if fields is not None and fields != ALL_FIELDS:
        chosen = [lookup(name).attname for name in fields]
        return tuple(dict.fromkeys(chosen)), ()
    excluded = {lookup(name).attname for name in (exclude or ())}
    kept: list[str] = []
    dropped: list[str] = []
    for field in concrete:
        if field.attname in excluded:
            continue
        (dropped if is_secret(field.name) or is_secret(field.attname) else kept).append(
            field.attname)
    return tuple(kept), tuple(dropped)


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
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
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


_PLAIN = frozenset({str, int, bool, type(None)})


def field_view(values: dict[str, Any], attnames: Iterable[str]) -> dict[str, Any]:
    """The JSON-safe values of ``attnames`` (deferred fields, absent from ``values``, left out).

    On every save: plain values are taken as they are, the usual types converted through the
    type table, anything else by ``json_safe``."""
    out: dict[str, Any] = {}
    for name in attnames:
        if name in values:
            value = values[name]
            kind = type(value)
            if kind in _PLAIN:
                out[name] = value
            else:
                convert = _CONVERTERS.get(kind)
                out[name] = convert(value) if convert is not None else json_safe(value)
    return out


def drf_serializer(serializer_class: type) -> Callable[[models.Model], dict[str, Any]]:
    """Wrap a DRF serializer class as ``instance -> JSON-safe dict``."""

    def serialize(instance: models.Model) -> dict[str, Any]:
        data = serializer_class(instance).data
        view: dict[str, Any] = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
        return view

    serialize.__qualname__ = f"drf_serializer({serializer_class.__name__})"
    return serialize
