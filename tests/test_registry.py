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
    broadcast_registry.register(Plain, channels=["plain"], fields="__all__")
    yield
    broadcast_registry.unregister(Plain)


def test_decorator_returns_the_class_unchanged():
    class_before = Plain
    decorated = broadcast(channels=["plain"], fields=["name"])(Plain)
    try:
        assert decorated is class_before
        assert broadcast_registry.is_registered(Plain)
    finally:
        broadcast_registry.unregister(Plain)
    assert not broadcast_registry.is_registered(Plain)


def test_register_unregister_connects_and_disconnects_signals():
    assert not post_save.has_listeners(Plain)
    broadcast_registry.register(Plain, channels=["plain"], fields=["name"])
    assert post_save.has_listeners(Plain) and post_delete.has_listeners(Plain)
    # a second declaration, same receivers
    broadcast_registry.register(Plain, channels=["plain2"], fields=["name"])
    assert len(broadcast_registry.declarations(Plain)) == 2
    assert len([r for r in post_save.receivers if "testapp.plain" in str(r[0])]) == 1
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
    # "__all__" leaves the secret-looking field out
    assert declaration.attnames == ("id", "name", "code")
    assert declaration.dropped_secrets == ("secret",)


@pytest.mark.parametrize("options, message", [
    ({"fields": ["name"]}, "channels is required; the options are: channels, fields"),
    ({"channels": "plain", "fields": ["name"]}, "channels must be"),
    ({"channels": [], "fields": ["name"]}, "channels must be"),
    ({"channels": ["has space"], "fields": ["name"]}, "ASCII"),
    ({"channels": ["$p:{nope}"], "fields": ["name"]}, "no concrete field 'nope'"),
    ({"channels": ["$p:{name!r}"], "fields": ["name"]}, "plain {field}"),
    ({"channels": ["p"]}, r'say which fields to publish: fields=\["id", "title", ...\]'),
    ({"channels": ["p"], "fields": ["nope"]}, "no concrete field 'nope'"),
    ({"channels": ["p"], "fields": "name"}, "must be a list of names or \"__all__\""),
    ({"channels": ["p"], "exclude": ["nope"]}, "no concrete field"),
    ({"channels": ["p"], "fields": ["name"], "exclude": ["code"]}, "not both"),
    ({"channels": ["p"], "fields": ["name"], "serializer": str}, "serializer chooses"),
    ({"channels": ["p"], "fields": ["name"], "events": ["saved"]}, "events must be"),
    ({"channels": ["p"], "fields": ["name"], "events": "created"}, "events must be"),
    ({"channels": ["p"], "fields": ["name"], "condition": "no"}, "condition must be callable"),
    ({"channels": ["p"], "fields": ["name"], "authorize": 3}, "authorize must be"),
    ({"channels": ["$p:{pk}"], "fields": ["name"], "authorize": "nope"}, "no concrete field"),
    ({"channels": ["p"], "fields": ["name"], "colour": "red"},
     "unknown option 'colour'; the options are: channels, fields, exclude"),
    ({"channels": ["p"], "fields": ["name"], "level": "groups"}, "level must be one of"),
    # who may read: a private static channel needs a level, a private template a rule
    ({"channels": ["$p"], "fields": ["name"]}, r'say who may read \'\$p\': level="staff"'),
    ({"channels": ["$p:{pk}"], "fields": ["name"]}, "is private: say who may read it"),
    # an authorize rule on a channel without "$" would protect nothing
    ({"channels": ["p:{code}"], "fields": ["name"], "authorize": lambda u, code: True},
     r'does not start with "\$"'),
    # a string rule must single out one row
    ({"channels": ["$p:{name}"], "fields": ["name"], "authorize": "code"},
     "does not identify one row"),
])
def test_bad_options_fail_at_registration(options, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        BroadcastRegistry().register(Plain, **options)


def test_conflicting_declarations_are_refused():
    reg = BroadcastRegistry()
    reg.register(Plain, channels=["$ops"], fields=["name"], level="staff")
    with pytest.raises(ImproperlyConfigured, match="already declared by testapp.plain"):
        reg.register(Note, channels=["$ops"], fields=["title"], level="users")
    reg.register(Note, channels=["$ops"], fields=["title"], level="staff")  # same readers: fine
    reg.register(Plain, channels=["$plain:{pk}"], fields=["name"],
                 authorize=lambda user, pk: True)
    with pytest.raises(ImproperlyConfigured, match="belongs to one model"):
        reg.register(Note, channels=["$plain:{pk}"], fields=["title"],
                     authorize=lambda user, pk: True)
    reg.unregister(Plain)
    reg.unregister(Note)


def test_json_and_html_declarations_do_not_share_a_channel():
    reg = BroadcastRegistry()
    reg.register(Plain, channels=["cards"], fields=["name"])
    with pytest.raises(ImproperlyConfigured, match="already carries JSON events"):
        reg.register(Plain, channels=["cards"], fields=["name"], refresh=True)
    with pytest.raises(ImproperlyConfigured, match="already carries JSON events"):
        reg.register(Note, channels=["cards"], fields=["title"], render=lambda context: "<p>")
    reg.register(Plain, channels=["cards_refresh"], fields=["name"], refresh=True)
    reg.unregister(Plain)


def test_a_second_registry_publishes_with_its_own_receivers():
    """Regression: receivers called the global registry and dispatch_uid came from the label
    alone, so a second BroadcastRegistry published nothing."""
    first, second = BroadcastRegistry(), BroadcastRegistry()
    first.register(Plain, channels=["one"], fields=["name"])
    second.register(Plain, channels=["two"], fields=["name"])
    try:
        with capture_broadcasts() as published:
            Plain.objects.create(name="x")
    finally:
        first.unregister(Plain)
        second.unregister(Plain)
    assert sorted(p["channel"] for p in published) == ["one", "two"]
    assert not post_save.has_listeners(Plain)


@pytest.mark.parametrize("models_setting, message", [
    ({"nope.Model": {"channels": ["x"]}}, r"\['nope.Model'\]: no installed model"),
    ({"testapp.plain": {"channels": ["x"], "fields": ["nope"]}}, r"\['testapp.plain'\].*nope"),
    ({"testapp.plain": {"channels": ["x"]}}, r"\['testapp.plain'\].*say which fields"),
    ({"testapp.plain": "channels"}, "options must be a dict"),
    ({"testapp.plain": {"channels": ["x"], "fields": ["name"],
                        "condition": "no.such.function"}}, r"testapp.plain"),
    # Regression: an entry for a model already declared in code was skipped unvalidated.
    ({"testapp.note": {"channels": ["x"], "fields": ["nope"]}}, r"\['testapp.note'\].*nope"),
    # unknown names are listed, with the valid ones (no TypeError text involved)
    ({"testapp.plain": {"channels": ["x"], "fields": ["name"], "colour": 1, "Fields": 2}},
     r"unknown options 'Fields', 'colour'; the options are: channels, fields, exclude, .*refresh$"),
    ({"testapp.plain": {"fields": ["name"]}}, "channels is required"),
])
def test_bad_settings_fail_at_startup_naming_the_setting(settings, models_setting, message):
    settings.INSTANT_SIGNALS = {"MODELS": models_setting}
    with pytest.raises(ImproperlyConfigured, match=r"INSTANT_SIGNALS\['MODELS'\]" + ".*" + message):
        BroadcastRegistry().register_from_settings()


def test_settings_with_dotted_paths_and_several_declarations(settings):
    settings.INSTANT_SIGNALS = {"MODELS": {"testapp.Plain": [
        {"channels": ["plain"], "fields": ["name"]},
        {"channels": ["$plain:{pk}"], "authorize": "tests.test_registry.named_plain",
         "condition": "tests.test_registry.only_named", "fields": ["name"]},
    ]}}
    reg = BroadcastRegistry()
    reg.register_from_settings()
    reg.register_from_settings()  # again (tests, a second ready()): replaced, not doubled
    first, second = reg.declarations(Plain)
    assert first.attnames == ("name",)
    assert second.condition is only_named
    assert reg.namespaces() == {"": {"public": True, "presence": False},  # "plain"
                                "plain": {"public": False, "presence": False}}
    reg.unregister(Plain)


def test_every_option_that_takes_a_callable_is_imported_from_its_dotted_path():
    """The options type says which options settings give as dotted paths; each is imported."""
    from instant_signals import options

    given = options.parse({"channels": "tests.test_registry.route",
                           "fields": "tests.test_registry.route",  # a value: not imported
                           "authorize": "owner",  # no dot: a field name
                           **{name: "tests.test_registry.route" for name in options.NAMES
                              if options.option_of(name).dotted == "always"}},
                          from_settings=True)
    assert given.channels is route and given.fields == "tests.test_registry.route"
    assert given.authorize == "owner"
    assert {name for name in options.NAMES if getattr(given, name) is route} == {
        "channels", "serializer", "serializer_class", "condition", "queryset", "render"}
    in_code = options.parse({"channels": ["x"], "condition": "tests.test_registry.route"})
    assert in_code.condition == "tests.test_registry.route"  # code gives callables themselves


def route(*args):
    return ["x"]


def named_plain(user, pk):
    return True


def only_named(instance, event):
    return bool(instance.name)


def test_events_switched_off_per_model(plain_registered):
    broadcast_registry.unregister(Plain)
    broadcast_registry.register(Plain, channels=["plain"], fields=["name"], events=["deleted"])
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
    broadcast_registry.register(Plain, channels=["plain"], fields=["name"], condition=only_named)
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

    broadcast_registry.register(Plain, channels=route, fields=["name", "code"])
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


def test_raw_saves_from_fixtures_publish_unless_skipped(plain_registered, settings):
    from django.core import serializers

    data = '[{"model": "testapp.plain", "pk": 50, "fields": {"name": "fixture", "code": 0}}]'
    with capture_broadcasts() as published:
        for obj in serializers.deserialize("json", data):
            obj.save()
    assert Plain.objects.filter(pk=50).exists()
    assert [(p["event_class"], p["data"]["fields"]["name"]) for p in published] == [
        ("created", "fixture")]
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "SKIP_RAW_SAVES": True}
    with capture_broadcasts() as published:
        for obj in serializers.deserialize("json", data.replace("fixture", "again")):
            obj.save()
    assert Plain.objects.get(pk=50).name == "again"
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

    from instant_signals.capture.switch import broadcasting_enabled as _enabled

    assert asyncio.run(main()) == {"off": False, "on": True}


def test_a_failing_condition_never_breaks_the_save(caplog):
    def broken(instance, event):
        raise KeyError("bug in user code")

    broadcast_registry.register(Plain, channels=["plain"], fields=["name"], condition=broken)
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


def test_saves_in_several_savepoints_become_one_event(plain_registered):
    """Several saves of a row in one transaction are one event, across savepoints too; a save
    in a rolled-back savepoint is forgotten even though the instance still holds its values."""
    row = Plain.objects.create(name="v0", code=0)
    row = Plain.objects.get(pk=row.pk)
    with capture_broadcasts() as published:
        with transaction.atomic():
            row.name = "v1"
            row.save()
            with transaction.atomic():
                row.code = 1
                row.save()
            try:
                with transaction.atomic():
                    row.name = "never committed"
                    row.save()
                    raise RuntimeError
            except RuntimeError:
                pass
            row.name = "v2"
            row.save()
    assert len(published) == 1, published
    data = published[0]["data"]
    assert (published[0]["event_class"], data["fields"]["name"], data["fields"]["code"]) == (
        "updated", "v2", 1)
    assert data["changed"] == {"name": "v0", "code": 0}


def test_stale_snapshot_after_a_rolled_back_savepoint_is_not_published(plain_registered):
    """After the rollback the instance's snapshot says "never committed"; the database says v1.
    The event must compare with what the database held."""
    row = Plain.objects.create(name="v1")
    row = Plain.objects.get(pk=row.pk)
    with capture_broadcasts() as published:
        with transaction.atomic():
            try:
                with transaction.atomic():
                    row.name = "never committed"
                    row.save()
                    raise RuntimeError
            except RuntimeError:
                pass
            row.name = "v2"
            row.save()
    assert [(p["data"]["fields"]["name"], p["data"]["changed"]) for p in published] == [
        ("v2", {"name": "v1"})]


def test_item_namespace_and_rules(django_user_model):
    namespaces = broadcast_registry.namespaces()
    assert {"task", "user", "board", ""} <= set(namespaces)
    assert not any(needs["public"] for name, needs in namespaces.items() if name)
    staff = django_user_model.objects.create_user("s", is_staff=True)
    plain = django_user_model.objects.create_user("p")
    assert broadcast_registry.may_read(staff, "$board:main")
    assert not broadcast_registry.may_read(plain, "$board:main")
    assert broadcast_registry.may_read(staff, "$unknown:main") is None


@pytest.mark.parametrize("model", [Note, Task], ids=["plain model", "model with a FieldTracker"])
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


def test_snapshot_of_a_rolled_back_save_is_not_used_later(plain_registered):
    """A save rolled back with its savepoint, or its whole transaction: the next transaction's
    event compares with what the database holds, not with the instance's last save."""
    row = Plain.objects.create(name="v1")
    row = Plain.objects.get(pk=row.pk)
    with transaction.atomic():
        try:
            with transaction.atomic():
                row.name = "savepoint rolled back"
                row.save()
                raise RuntimeError
        except RuntimeError:
            pass
    try:
        with transaction.atomic():
            row.name = "transaction rolled back"
            row.save()
            raise RuntimeError
    except RuntimeError:
        pass
    with capture_broadcasts() as published:
        row.name = "v2"
        row.save()
    assert [(p["data"]["fields"]["name"], p["data"]["changed"]) for p in published] == [
        ("v2", {"name": "v1"})]
