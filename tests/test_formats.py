"""Output formats have one home each (``instant_signals/formats/``): a format defined here, in the
test file, and registered with one line publishes through every delivery mode, is typed by
``instant_types``, gets its Centrifugo namespace options and is described by the admin -- no
other module changes.

``Lines`` publishes each row state as one ``key=value;...`` text line of the channel's view.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from instant_signals import BroadcastRegistry, envelope, formats
from instant_signals.admin.declared import describe
from instant_signals.centrifugo_config import generate_config, write_config
from instant_signals.checks import check_declarations
from instant_signals.delivery.outbox import Relay
from instant_signals.formats.base import Batch, Changed, Format, Message, Publication, TypeNames
from instant_signals.management.commands.instant_types import generate
from instant_signals.models import OutboxEntry
from instant_signals.registry import broadcast_registry
from instant_signals.testing import capture_broadcasts
from instant_signals.tokens import connection_token
from tests.testapp.models import Plain

PACKAGE = Path(__file__).resolve().parent.parent / "instant_signals"


class Lines(Format):
    """One text line per row state: ``id=1;name=Tom``; the pk only for a row that left."""

    name = "lines"
    carries = "text lines"
    namespace_options = {"history_size": 7}
    typescript_prelude = ("/** A row state as one text line. */\n"
                          "export interface Line<L extends string> { model: L; line: string; }\n")

    def messages(self, change: Changed, publications: Sequence[Publication],
                 batch: Batch) -> Iterator[Message]:
        for p in publications:
            view = p.fields if p.fields is not None else {"pk": change.pk}
            line = ";".join(f"{key}={value}" for key, value in sorted(view.items()))
            yield Message(p.channel, p.event, {"model": change.label, "event": p.event,
                                               "line": line}, envelope.new_event_id())

    def typescript(self, names: TypeNames) -> tuple[list[str], list[str]]:
        return [], [f"Line<{names.label_type}>"]


@pytest.fixture
def lines():
    formats.register(Lines())  # the one line that makes the format available
    yield
    broadcast_registry.unregister(Plain)
    formats.unregister("lines")


def declare_lines(channel: str = "plain_lines") -> None:
    broadcast_registry.register(Plain, channels=[channel], fields=["id", "name"], format="lines")


def lines_of(publications: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(p["data"]["event"], p["data"]["line"]) for p in publications]


@pytest.mark.django_db(transaction=True)
def test_a_registered_format_publishes_in_the_test_capture(lines):
    declare_lines()
    with capture_broadcasts() as published:
        row = Plain.objects.create(name="Tom", secret="hunter2")
        row.name = "Jerry"
        row.save()
        pk = row.pk
        row.delete()
    assert lines_of(published) == [("created", f"id={pk};name=Tom"),
                                   ("updated", f"id={pk};name=Jerry"),
                                   ("deleted", f"id={pk};name=Jerry")]
    first = published[0]  # the one envelope, whatever the format
    assert first["channel"] == "plain_lines" and first["bucket"] == "testapp.plain"
    assert first["event_class"] == "created" and len(first["id"]) == 32
    assert "hunter2" not in json.dumps(published)  # the view still decides what is seen


@pytest.mark.django_db(transaction=True)
def test_a_registered_format_reaches_a_subscriber_after_commit(lines, live_client):
    declare_lines()
    watcher = live_client(connection_token(None))
    watcher.subscribe("plain_lines")
    with transaction.atomic():
        row = Plain.objects.create(name="a")
        row.name = "b"
        row.save()  # one transaction: one created event with the last state
    Plain.objects.filter(pk=row.pk).delete()
    got = watcher.wait_for(2, channel="plain_lines")
    assert lines_of(got) == [("created", f"id={row.pk};name=b"),
                             ("deleted", f"id={row.pk};name=b")]


@pytest.mark.django_db(transaction=True)
def test_a_registered_format_goes_through_the_outbox_and_the_relay(lines, live_client,
                                                                   settings):
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "DELIVERY": "outbox"}
    declare_lines()
    watcher = live_client(connection_token(None))
    watcher.subscribe("plain_lines")
    with transaction.atomic():
        row = Plain.objects.create(name="durable")
    stored = OutboxEntry.objects.get()
    assert stored.payload["data"]["data"]["line"] == f"id={row.pk};name=durable"
    assert Relay().pending() == 1  # stored in the transaction, sent by the relay
    result = Relay(batch_size=10).run_once()
    assert (result.sent, result.ok) == (1, True)
    got = watcher.wait_for(1, channel="plain_lines")
    assert lines_of(got) == [("created", f"id={row.pk};name=durable")]
    assert got[0]["id"] == stored.payload["idempotency_key"]


@pytest.mark.django_db
def test_a_registered_format_is_typed_and_gets_its_namespace_options(lines, settings,
                                                                     tmp_path):
    registry = BroadcastRegistry()
    registry.register(Plain, channels=["lines:{pk}"], fields=["id", "name"], format="lines")
    registry.register(Plain, channels=["plain_json"], fields=["id", "name"])
    try:
        text = generate(registry.declarations())
        assert "export interface Line<L extends string>" in text
        assert 'Line<"testapp.plain">' in text and 'Created<"testapp.plain"' in text

        needs = registry.namespaces()
        assert needs["lines"] == {"public": True, "presence": False,
                                  "options": {"history_size": 7}}
        assert "options" not in needs[""]  # the JSON channel's namespace needs nothing more
        config = generate_config(namespaces=needs)
        [namespace] = config["channel"]["namespaces"]
        assert namespace["name"] == "lines" and namespace["history_size"] == 7
        assert config["channel"]["without_namespace"]["history_size"] != 7

        # manage.py check compares them with the config Centrifugo runs.
        settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS,
                                    "CENTRIFUGO_CONFIG": str(tmp_path / "config.json")}
        broadcast_registry.register(Plain, channels=["lines:{pk}"], fields=["id", "name"],
                                    format="lines")
        keys = {"api_key": settings.CENTRIFUGO_API_KEY, "hmac_key": settings.CENTRIFUGO_HMAC_KEY}
        write_config(tmp_path / "config.json",
                     generate_config(namespaces=broadcast_registry.namespaces(), **keys))
        assert [m.id for m in check_declarations() if m.id == "instant_signals.W018"] == []
        stale = broadcast_registry.namespaces()
        stale["lines"].pop("options")
        write_config(tmp_path / "config.json", generate_config(namespaces=stale, **keys))
        [warning] = [m for m in check_declarations() if m.id == "instant_signals.W018"]
        assert "'lines'" in warning.msg and "history_size=7" in warning.msg
    finally:
        registry.unregister(Plain)


def test_options_of_another_format_and_unknown_formats_are_refused(lines):
    with pytest.raises(ImproperlyConfigured, match=r"template is for HTML fragments "
                                                   r"\(template= or render=\), not text lines"):
        broadcast_registry.register(Plain, channels=["x"], fields=["id"], format="lines",
                                    template="a.html")
    with pytest.raises(ImproperlyConfigured, match="format must be one of 'json', 'fragments', "
                                                   "'refresh', 'lines', not 'csv'"):
        broadcast_registry.register(Plain, channels=["x"], fields=["id"], format="csv")
    broadcast_registry.register(Plain, channels=["plain_lines"], fields=["id"], format="lines")
    with pytest.raises(ImproperlyConfigured, match="already carries text lines of testapp.plain; "
                                                   "JSON events go on a channel of their own"):
        broadcast_registry.register(Plain, channels=["plain_lines"], fields=["id"])
    with pytest.raises(ValueError, match="'lines' is already registered"):
        formats.register(Lines())
    declaration = broadcast_registry.declarations(Plain)[0]
    assert not declaration.skip_unchanged  # the format's default
    assert describe(declaration).format == "text lines"  # the admin's declarations page


def test_no_module_outside_formats_asks_which_format_a_declaration_has():
    """What a format publishes is asked of the format: no module outside ``formats/`` imports
    a particular format's module, except ``html.py`` (the fragments' public side: middleware,
    ``render_row``), nor reads a declaration's old ``html`` attribute."""
    importers, html_reads = set(), []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        if relative.startswith(("formats/", "migrations/")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if any(node.module.endswith(f"formats.{name}")
                       for name in ("json", "fragments", "refresh")):
                    importers.add(relative)
            elif isinstance(node, ast.Attribute) and node.attr == "html":
                html_reads.append(f"{relative}:{node.lineno}")
    assert importers == {"html.py"}
    assert html_reads == []
