"""``manage.py instant_types``: TypeScript declarations of every declared model's events.

    python manage.py instant_types                              # to stdout
    python manage.py instant_types --output static/js/instant-events.d.ts

For each model declared with ``@broadcast`` (or ``INSTANT_SIGNALS["MODELS"]``) it writes the
fields of each view (``<Model>Fields``), the model's events as a union discriminated by
``event`` (``<Model>Event``), ``Models`` (label → events), ``ChannelEvent<"feed">`` (channel
name → events), ``Envelope<E>`` and ``RowOf<E>`` (a row of ``instant.collection()``). What a
view's events look like is its output format's (``Format.typescript``): ``Created``/``Updated``/
``Deleted`` for JSON events, ``Fragment`` for HTML fragments, ``RefreshSignal`` for refreshes.

Field types follow what the events carry (``serialization.json_safe``): integers and floats
are ``number``; decimals, UUIDs, dates, datetimes, times and durations ``string`` (ISO 8601);
booleans ``boolean``; JSON ``unknown``; binary data ``string`` (base64); a nullable field adds
``| null``; a foreign key appears under its attname (``owner_id``) with the type of the target's
key. Views made by a serializer are ``Record<string, unknown>``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import models

from instant_signals import formats
from instant_signals.declarations import Declaration
from instant_signals.formats.base import TypeNames
from instant_signals.registry import broadcast_registry

_TOP = """\
// TypeScript declarations of the model events of this project, written by
// `python manage.py instant_types` from its @broadcast declarations. Do not edit: run the
// command again after changing a declaration.
//
//   import type { BoardTaskEvent, Envelope, RowOf } from "./instant-events";
//   instant.on<BoardTaskEvent>("board.task", "*", (data) => {
//     if (data.event === "updated") console.log(data.fields.title, data.changed.title);
//   });
//   const tasks = instant.collection<BoardTaskEvent>("$user:{user}");   // rows: RowOf<...>[]

export type EventName = "created" | "updated" | "deleted";

"""

_BOTTOM = """\
/** A publication of a model event (`envelope.data` is the event). */
export interface Envelope<E extends { model: string; event: string } = AnyModelEvent> {
  channel: string;
  site?: string;
  event_class: E["event"];
  bucket: E["model"];
  data: E;
  /** One id per event, shared by the channels it was sent to. */
  id: string;
}

/** A row of `instant.collection()` holding events `E`. */
export type RowOf<E> =
  E extends { model: infer L; pk: infer P; event: "created" | "updated"; fields: infer F }
    ? { model: L; pk: P; fields: F }
    : never;
"""

# get_internal_type() -> TypeScript, for what json_safe() makes of the value.
NUMBER = {"AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField",
          "SmallIntegerField", "PositiveIntegerField", "PositiveBigIntegerField",
          "PositiveSmallIntegerField", "FloatField"}
STRING = {"CharField", "TextField", "SlugField", "EmailField", "URLField", "FilePathField",
          "GenericIPAddressField", "IPAddressField", "CommaSeparatedIntegerField",
          "DecimalField", "UUIDField", "DateField", "DateTimeField", "TimeField",
          "DurationField", "BinaryField", "FileField", "ImageField"}
BOOLEAN = {"BooleanField", "NullBooleanField"}
UNKNOWN = {"JSONField", "HStoreField"}

_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


def field_type(field: models.Field[Any, Any]) -> str:
    """The TypeScript type of ``field``'s value in an event."""
    target = getattr(field, "target_field", None)
    if field.is_relation and target is not None and (field.many_to_one or field.one_to_one):
        base = field_type(target).removesuffix(" | null")
    else:
        base = _base_type(field)
    if field.null and base != "unknown" and not base.endswith("| null"):
        return f"{base} | null"
    return base


def _base_type(field: models.Field[Any, Any]) -> str:
    inner = getattr(field, "base_field", None)  # postgres ArrayField
    if isinstance(inner, models.Field):
        item = field_type(inner)
        return f"({item})[]" if " " in item else f"{item}[]"
    kind = field.get_internal_type()
    if kind in NUMBER:
        return "number"
    if kind in BOOLEAN:
        return "boolean"
    if kind in UNKNOWN:
        return "unknown"
    if kind in STRING:
        return "string"
    for cls, name in ((models.IntegerField, "number"), (models.FloatField, "number"),
                      (models.BooleanField, "boolean"), (models.JSONField, "unknown"),
                      (models.CharField, "string"), (models.TextField, "string"),
                      (models.DecimalField, "string"), (models.DateField, "string"),
                      (models.TimeField, "string"), (models.DurationField, "string"),
                      (models.UUIDField, "string"), (models.FileField, "string")):
        if isinstance(field, cls):
            return name
    return "unknown"


def pascal(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", text)
                   if part)


def quoted(name: str) -> str:
    return name if _IDENTIFIER.match(name) else _string(name)


def _string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def channel_pattern(template: str) -> str:
    """``"$task:{pk}"`` → ``` `$task:${string}` ``` (a template literal type)."""
    if "{" not in template:
        return _string(template)
    literal = re.sub(r"\{[^{}]*\}", "\0", template)
    escaped = literal.replace("\\", "\\\\").replace("`", "\\`").replace("${", "\\${")
    return "`" + escaped.replace("\0", "${string}") + "`"


class _View:
    """One distinct view of a model in one output format, with its declarations: formats whose
    types depend on the fields (JSON events) get one per view, the others one per model."""

    def __init__(self, declaration: Declaration):
        self.model = declaration.model
        self.format = declaration.format
        self.attnames = declaration.attnames if declaration.serializer is None else None
        self.declarations: list[Declaration] = []

    def shows(self, declaration: Declaration) -> bool:
        if self.format.name != declaration.format.name:
            return False
        if not self.format.types_per_view:  # every event of the model looks the same
            return True
        if self.attnames is None or declaration.serializer is not None:
            return bool(self.declarations) and self.declarations[0] is declaration
        return self.model is declaration.model and self.attnames == declaration.attnames

    @property
    def channels(self) -> list[str]:
        return [t.template for d in self.declarations for t in d.templates] or ["(a router)"]

    @property
    def events(self) -> frozenset[str]:
        return frozenset(event for d in self.declarations for event in d.events)

    def fields_type(self) -> str:
        if self.attnames is None:
            return "Record<string, unknown>"
        by_attname = {f.attname: f for f in self.model._meta.concrete_fields}
        lines = [f"  {quoted(a)}: {field_type(by_attname[a])};" for a in self.attnames]
        return "{\n" + "\n".join(lines) + "\n}" if lines else "{}"


def header() -> str:
    """The fixed part: the event name, each registered format's own declarations, the envelope."""
    preludes = [f.typescript_prelude for f in formats.FORMATS.values() if f.typescript_prelude]
    return _TOP + "\n".join(preludes) + "\n" + _BOTTOM


def generate(declarations: tuple[Declaration, ...] | None = None) -> str:
    """The whole ``.d.ts`` text for ``declarations`` (default: every registered one)."""
    if declarations is None:
        declarations = broadcast_registry.declarations()
    by_model: dict[str, list[_View]] = {}
    for declaration in declarations:
        views = by_model.setdefault(declaration.label, [])
        view = next((v for v in views if v.shows(declaration)), None)
        if view is None:
            view = _View(declaration)
            views.append(view)
        view.declarations.append(declaration)

    out = [header()]
    models_map: list[tuple[str, str]] = []
    channel_events: dict[str, list[str]] = {}
    for label in sorted(by_model):
        views = by_model[label]
        model_name = pascal(label)
        pk_field = views[0].model._meta.pk
        pk_type = field_type(pk_field).removesuffix(" | null")
        view_events = []
        for index, view in enumerate(views):
            suffix = "" if len(views) == 1 else (pascal(view.channels[0]) or str(index + 1))
            fields_name, events_name = f"{model_name}{suffix}Fields", f"{model_name}{suffix}Event"
            shown = ", ".join(_string(c) for c in view.channels)
            declared, kinds = view.format.typescript(TypeNames(
                label=label, label_type=_string(label), pk_type=pk_type,
                fields_name=fields_name, fields_type=view.fields_type(), events=view.events,
                shown=shown))
            out.extend(declared)
            out.append(f"/** The events of {label} in {shown}, discriminated by `event`. */")
            out.append(f"export type {events_name} =\n  | " + "\n  | ".join(kinds) + ";\n")
            view_events.append(events_name)
            for declaration in view.declarations:
                for template in declaration.templates:
                    found = channel_events.setdefault(channel_pattern(template.template), [])
                    if events_name not in found:
                        found.append(events_name)
        if len(views) > 1:
            out.append(f"/** The events of {label}, every view. */")
            out.append(f"export type {model_name}Event = " + " | ".join(view_events) + ";\n")
        models_map.append((label, f"{model_name}Event"))

    out.append("/** Every declared model: its label → its events. */")
    out.append("export interface Models {\n" + "".join(
        f"  {_string(label)}: {name};\n" for label, name in models_map) + "}\n")
    out.append("export type AnyModelEvent = Models[keyof Models];\n")
    # Static names first, then templates with the longest literal part first (the first match
    # of a conditional type wins).
    ordered = sorted(channel_events, key=lambda p: (p.startswith("`"), -len(p), p))
    out.append("/** The events a channel carries, by channel name (other names: any event). */")
    lines = [f"  C extends {pattern} ? {' | '.join(channel_events[pattern])} :"
             for pattern in ordered]
    out.append("export type ChannelEvent<C extends string> =\n" + "\n".join(lines)
               + "\n  AnyModelEvent;\n")
    return "\n".join(out)


class Command(BaseCommand):
    help = ("Write TypeScript declarations (.d.ts) of the events of every model declared with "
            "@broadcast: fields per view, a union discriminated by `event`, the envelope.")
    requires_system_checks: list[str] = []  # needs no Centrifugo keys (e.g. in a frontend build)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", "-o", type=Path,
                            help="File to write (default: standard output).")

    def handle(self, *args: Any, **options: Any) -> None:
        text = generate()
        output: Path | None = options.get("output")
        if output is None:
            self.stdout.write(text, ending="")
            return
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        count = len({d.label for d in broadcast_registry.declarations()})
        self.stderr.write(f"Wrote the events of {count} model(s) to {output}")
