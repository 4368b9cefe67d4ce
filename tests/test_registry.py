"""The registry: declaring, validating and freezing options, settings, signals, the kill switch."""

import asyncio
import dataclasses

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from instant_signals import BroadcastRegistry, broadcast, broadcast_registry, disable_broadcasts
from instant_signals.testing import capture_broadcasts
from tests.testapp.models import Note, Plain, Task

pytestmark = pytest.mark.django_db


@pytest.fixture
def plain_registered():
    broadcast_registry.register(Plain, channels=["plain"])
    yield
    broadcast_registry.unregister(Plain)


def test_decorator_returns_the_class_unchanged():
    class_before = Plain
    decorated = broadcast(channels=["plain"])(Plain)
    try:
        assert decorated is class_before
        assert broadcast_registry.is_registered(Plain)
    finally:
        broadcast_registry.unregister(Plain)
    assert not broadcast_registry.is_registered(Plain)


def test_register_unregister_connects_and_disconnects_signals():
    assert not post_save.has_listeners(Plain)
    broadcast_registry.register(Plain, channels=["plain"])
    assert post_save.has_listeners(Plain) and post_delete.has_listeners(Plain)
    broadcast_registry.register(Plain, channels=["plain2"])  # second declaration, same receivers
    assert len(broadcast_registry.declarations(Plain)) == 2
    assert len([r for r in post_save.receivers if "plain" in str(r[0])]) == 1
    assert "from_db" in Plain.__dict__  # rows are snapshotted as they are loaded
    broadcast_registry.unregister(Plain)
    assert not post_save.has_listeners(Plain) and not post_delete.has_listeners(Plain)
    assert "from_db" not in Plain.__dict__ and "refresh_from_db" not in Plain.__dict__
    with capture_broadcasts() as published:
        Plain.objects.create(name="x")
    assert published == []


def test_options_are_frozen(plain_registered):
    declaration = broadcast_registry.declarations(Plain)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        declaration.attnames = ("id",)
    assert declaration.attnames == ("id", "name", "code")


@pytest.mark.parametrize("options, message", [
    ({}, "channels must be"),
    ({"channels": "plain"}, "channels must be"),
    ({"channels": []}, "channels must be"),
    ({"channels": ["has space"]}, "ASCII"),
    ({"channels": ["$p:{nope}"]}, "no concrete field 'nope'"),
    ({"channels": ["$p:{name!r}"]}, "plain {field}"),
    ({"channels": ["p"], "fields": ["nope"]}, "no concrete field 'nope'"),
    ({"channels": ["p"], "fields": "name"}, "must be a list"),
    ({"channels": ["p"], "exclude": ["nope"]}, "no concrete field"),
    ({"channels": ["p"], "events": ["saved"]}, "events must be"),
    ({"channels": ["p"], "condition": "not callable"}, "condition must be callable"),
    ({"channels": ["p"], "authorize": 3}, "authorize must be"),
    ({"channels": ["p"], "authorize": "nope"}, "no concrete field"),
    ({"channels": ["p"], "colour": "red"}, "unknown option"),
])
def test_bad_options_fail_at_registration(options, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        BroadcastRegistry().register(Plain, **options)


@pytest.mark.parametrize("models_setting, message", [
    ({"nope.Model": {"channels": ["x"]}}, r"\['nope.Model'\]: no installed model"),
    ({"testapp.plain": {"channels": ["x"], "fields": ["nope"]}}, r"\['testapp.plain'\].*nope"),
    ({"testapp.plain": "channels"}, "options must be a dict"),
    ({"testapp.plain": {"channels": ["x"], "condition": "no.such.function"}}, r"testapp.plain"),
])
def test_bad_settings_fail_at_startup_naming_the_setting(settings, models_setting, message):
    settings.INSTANT_SIGNALS = {"MODELS": models_setting}
    with pytest.raises(ImproperlyConfigured, match=r"INSTANT_SIGNALS\['MODELS'\]" + ".*" + message):
        BroadcastRegistry().register_from_settings()


def test_settings_with_dotted_paths_and_several_declarations(settings):
    settings.INSTANT_SIGNALS = {"MODELS": {"testapp.Plain": [
        {"channels": ["plain"], "fields": ["name"]},
        {"channels": ["$plain:{pk}"], "authorize": "tests.testapp.models.owner_may_read",
         "condition": "tests.test_registry.only_named"},
    ]}}
    reg = BroadcastRegistry()
    reg.register_from_settings()
    first, second = reg.declarations(Plain)
    assert first.attnames == ("name",)
    assert second.condition is only_named
    assert reg.namespaces() == {"plain"}
    reg.unregister(Plain)


def only_named(instance, event):
    return bool(instance.name)


def test_events_switched_off_per_model(plain_registered):
    broadcast_registry.unregister(Plain)
    broadcast_registry.register(Plain, channels=["plain"], events=["deleted"])
    with capture_broadcasts() as created:  # each block commits (runs its on_commit hooks)
        obj = Plain.objects.create(name="x")
    with capture_broadcasts() as updated:
        obj.name = "y"
        obj.save()
    with capture_broadcasts() as deleted:
        obj.delete()
    assert (created, updated) == ([], [])
    assert [p["event_class"] for p in deleted] == ["deleted"]


def test_condition_vetoes_events():
    broadcast_registry.register(Plain, channels=["plain"], condition=only_named)
    try:
        with capture_broadcasts() as published:
            Plain.objects.create(name="")
            Plain.objects.create(name="shown")
    finally:
        broadcast_registry.unregister(Plain)
    assert [p["data"]["fields"]["name"] for p in published] == ["shown"]


def test_callable_routing_and_its_moves():
    def route(instance, event):
        return ["big"] if instance.code > 10 else ["small"]

    broadcast_registry.register(Plain, channels=route)
    try:
        obj = Plain.objects.create(name="x", code=1)
        obj = Plain.objects.get(pk=obj.pk)
        with capture_broadcasts() as published:
            obj.code = 20
            obj.save()
    finally:
        broadcast_registry.unregister(Plain)
    assert [(p["channel"], p["event_class"]) for p in published] == [
        ("small", "deleted"), ("big", "created")]


def test_raw_saves_from_fixtures_are_skipped(plain_registered):
    from django.core import serializers

    data = '[{"model": "testapp.plain", "pk": 50, "fields": {"name": "fixture", "code": 0}}]'
    with capture_broadcasts() as published:
        for obj in serializers.deserialize("json", data):
            obj.save()
    assert Plain.objects.filter(pk=50).exists()
    assert published == []


def test_kill_switch_context_manager_decorator_and_setting(plain_registered, settings):
    @disable_broadcasts()
    def quiet():
        Plain.objects.create(name="decorated")

    with capture_broadcasts() as published:
        with disable_broadcasts():
            Plain.objects.create(name="in block")
        quiet()
        Plain.objects.create(name="after")
        settings.INSTANT_SIGNALS = {"ENABLED": False}
        Plain.objects.create(name="switched off")
    assert [p["data"]["fields"]["name"] for p in published] == ["after"]


def test_kill_switch_is_per_async_task(plain_registered):
    async def main():
        seen = {}

        async def off():
            with disable_broadcasts():
                await asyncio.sleep(0.01)
                seen["off"] = _enabled()

        async def on():
            await asyncio.sleep(0.005)
            seen["on"] = _enabled()

        await asyncio.gather(off(), on())
        return seen

    from instant_signals.registry import broadcasting_enabled as _enabled

    assert asyncio.run(main()) == {"off": False, "on": True}


def test_a_failing_condition_never_breaks_the_save(caplog):
    def broken(instance, event):
        raise KeyError("bug in user code")

    broadcast_registry.register(Plain, channels=["plain"], condition=broken)
    try:
        with capture_broadcasts() as published:
            obj = Plain.objects.create(name="still saved")
    finally:
        broadcast_registry.unregister(Plain)
    assert Plain.objects.filter(pk=obj.pk).exists()
    assert published == []
    assert "could not broadcast testapp.Plain" in caplog.text


def test_multiple_declarations_full_and_redacted(django_user_model):
    ann = django_user_model.objects.create_user("ann")
    with capture_broadcasts() as published:
        Task.objects.create(title="t", owner=ann, notes="private notes")
    by_channel = {p["channel"]: p["data"]["fields"] for p in published}
    assert set(by_channel["tasks"]) == {"id", "title", "done"}
    assert set(by_channel[f"$user:{ann.pk}"]) == {"id", "title", "done", "owner_id"}
    assert all("notes" not in fields for fields in by_channel.values())


def test_savepoints_and_coalescing_in_capture(plain_registered):
    with capture_broadcasts() as published:
        with transaction.atomic():
            a = Plain.objects.create(name="a")
            a.name = "a2"
            a.save()
            try:
                with transaction.atomic():
                    a.name = "rolled back"
                    a.save()
                    Plain.objects.create(name="b")
                    raise RuntimeError
            except RuntimeError:
                pass
    assert [(p["event_class"], p["data"]["fields"]["name"]) for p in published] == [("created", "a2")]


def test_item_namespace_and_rules(django_user_model):
    assert {"task", "user", "board"} <= broadcast_registry.namespaces()
    staff = django_user_model.objects.create_user("s", is_staff=True)
    plain = django_user_model.objects.create_user("p")
    assert broadcast_registry.authorize(staff, "$board:main")
    assert not broadcast_registry.authorize(plain, "$board:main")
    assert not broadcast_registry.authorize(staff, "$unknown:main")


@pytest.mark.parametrize("model", [Note, Task], ids=["own snapshot", "FieldTracker"])
def test_no_extra_query_per_save(model, django_assert_num_queries):
    obj = model.objects.create(title="a")
    obj = model.objects.get(pk=obj.pk)
    with capture_broadcasts() as published:
        with django_assert_num_queries(1):  # the UPDATE itself, nothing else
            obj.title = "b"
            obj.save()
    assert published and all(p["data"]["changed"] == {"title": "a"} for p in published)


def test_refresh_from_db_refreshes_previous_values():
    note = Note.objects.create(title="a")
    Note.objects.filter(pk=note.pk).update(title="b")  # behind the instance's back
    note.refresh_from_db()
    with capture_broadcasts() as published:
        note.title = "c"
        note.save()
    assert published[0]["data"]["changed"] == {"title": "b"}

    Note.objects.filter(pk=note.pk).update(title="d", done=True)
    note.title = "local edit"
    note.refresh_from_db(fields=["done"])  # title keeps the local edit and its old previous value
    with capture_broadcasts() as published:
        note.save()
    assert published[0]["data"]["changed"] == {"title": "c"}
