"""@broadcast end to end: saves in Django, publications received by a real centrifuge-python client."""

import logging

import pytest
from django.contrib.auth.models import User
from django.db import transaction

from instant_signals import broadcast_failed
from instant_signals import client as http_client
from instant_signals.reporting import stats
from instant_signals.tokens import connection_token, subscription_token
from support.processes import CountingProxy
from tests.testapp.models import Note, Task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def watcher(live_client):
    """An anonymous client on the public channels of Task and Note."""
    client = live_client(connection_token(None))
    client.subscribe("tasks")
    client.subscribe("notes")
    return client


def envelope(channel, label, event, pk, fields, changed=None, received=None):
    data = {"model": label, "pk": pk, "event": event, "fields": fields}
    if changed is not None:
        data["changed"] = changed
    expected = {"channel": channel, "site": "Test site", "event_class": event, "bucket": label,
                "data": data}
    if received is not None:
        assert len(received["id"]) == 32
        expected["id"] = received["id"]
        assert isinstance(received["data"]["version"], int)
        data["version"] = received["data"]["version"]
    return expected


@pytest.mark.parametrize("model, channel", [(Task, "tasks"), (Note, "notes")],
                         ids=["with FieldTracker", "own snapshot"])
def test_create_update_delete_payloads(model, channel, watcher):
    obj = model.objects.create(title="Write tests")
    got = watcher.wait_for(1, channel=channel)
    label = model._meta.label_lower
    assert got[0] == envelope(channel, label, "created", obj.pk,
                              {"id": obj.pk, "title": "Write tests", "done": False}, received=got[0])

    obj = model.objects.get(pk=obj.pk)  # loaded fresh: previous values come from the load
    obj.title, obj.done = "Ship it", True
    obj.save()
    got = watcher.wait_for(2, channel=channel)
    assert got[1] == envelope(channel, label, "updated", obj.pk,
                              {"id": obj.pk, "title": "Ship it", "done": True},
                              {"title": "Write tests", "done": False}, received=got[1])

    obj.title = "Shipped"
    obj.save()  # second save of the same instance: previous values are the first save's
    got = watcher.wait_for(3, channel=channel)
    assert got[2]["data"]["changed"] == {"title": "Ship it"}

    pk = obj.pk
    obj.delete()
    got = watcher.wait_for(4, channel=channel)
    assert got[3] == envelope(channel, label, "deleted", pk,
                              {"id": pk, "title": "Shipped", "done": True}, received=got[3])
    assert len({g["id"] for g in got}) == 4
    versions = [g["data"]["version"] for g in got]
    assert versions == sorted(set(versions))  # per-row versions only grow


def test_rolled_back_transaction_delivers_nothing(watcher):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            Note.objects.create(title="never")
            raise RuntimeError("roll back")
    Note.objects.create(title="marker")
    got = watcher.wait_for(1, channel="notes", timeout=5)
    assert [g["data"]["fields"]["title"] for g in got] == ["marker"]


def test_rolled_back_savepoint_drops_only_its_events(watcher):
    with transaction.atomic():
        Note.objects.create(title="kept")
        try:
            with transaction.atomic():
                Note.objects.create(title="dropped")
                raise RuntimeError
        except RuntimeError:
            pass
        Note.objects.create(title="kept too")
    Note.objects.create(title="marker")
    got = watcher.wait_for(3, channel="notes", timeout=5)
    assert [g["data"]["fields"]["title"] for g in got] == ["kept", "kept too", "marker"]


def test_three_saves_one_event_with_final_state(watcher):
    note = Note.objects.create(title="v0")
    watcher.wait_for(1, channel="notes")
    with transaction.atomic():
        for title in ("v1", "v2", "v3"):
            note.title = title
            note.save()
    Note.objects.create(title="marker")
    got = watcher.wait_for(3, channel="notes", timeout=5)
    assert [(g["event_class"], g["data"]["fields"]["title"]) for g in got] == [
        ("created", "v0"), ("updated", "v3"), ("created", "marker")]
    assert got[1]["data"]["changed"] == {"title": "v0"}


def test_create_then_delete_in_one_transaction_sends_nothing(watcher):
    with transaction.atomic():
        Note.objects.create(title="ghost").delete()
    Note.objects.create(title="marker")
    got = watcher.wait_for(1, channel="notes", timeout=5)
    assert [g["data"]["fields"]["title"] for g in got] == ["marker"]


@pytest.fixture
def counted(centrifugo, settings):
    """Django talks to Centrifugo through a counting proxy: the requests on the wire."""
    proxy = CountingProxy(centrifugo.port)
    settings.CENTRIFUGO_API_URL = f"http://127.0.0.1:{proxy.port}/api"
    http_client.close_session()
    yield proxy
    http_client.close_session()
    proxy.close()


def test_thousand_saves_at_most_ten_requests_all_arrive(watcher, counted):
    with transaction.atomic():
        notes = [Note.objects.create(title=f"n{i}") for i in range(1000)]
    got = watcher.wait_for(1000, channel="notes", timeout=30)
    assert 1 <= counted.requests <= 10, counted.requests
    assert len(got) == 1000
    assert sorted(g["data"]["pk"] for g in got) == sorted(n.pk for n in notes)


def test_password_hash_of_user_registered_from_settings_never_sent(live_client, settings):
    """auth.User is registered in tests/settings.py with fields="__all__": the secret-looking
    password field is left out."""
    root = User.objects.create_superuser("root", password="pw")
    live = live_client(connection_token(root))
    live.subscribe("$users_feed", token=subscription_token(root, "$users_feed"))
    user = User.objects.create_user("carol", password="a-secret-password")
    user.first_name = "Carol"
    user.set_password("another-password")
    user.save()
    got = live.wait_for(2, timeout=5)
    assert [g["event_class"] for g in got] == ["created", "updated"]
    for publication in got:
        text = repr(publication)
        assert "password" not in text and "pbkdf2" not in text and "md5$" not in text
        assert publication["data"]["fields"]["username"] == "carol"
    assert got[1]["data"]["changed"] == {"first_name": ""}


def test_moving_between_channels_sends_deleted_and_created(live_client, django_user_model):
    ann = django_user_model.objects.create_user("ann", password="pw")
    bob = django_user_model.objects.create_user("bob", password="pw")
    ann_live = live_client(connection_token(ann))
    ann_live.subscribe(f"$user:{ann.pk}", token=subscription_token(ann, f"$user:{ann.pk}"))
    bob_live = live_client(connection_token(bob))
    bob_live.subscribe(f"$user:{bob.pk}", token=subscription_token(bob, f"$user:{bob.pk}"))
    task = Task.objects.create(title="hand over", owner=ann)
    assert [g["event_class"] for g in ann_live.wait_for(1)] == ["created"]
    task.owner = bob
    task.save()
    ann_got = ann_live.wait_for(2)
    bob_got = bob_live.wait_for(1)
    assert [g["event_class"] for g in ann_got] == ["created", "deleted"]
    assert ann_got[1]["channel"] == f"$user:{ann.pk}"
    assert "fields" not in ann_got[1]["data"]  # a row that left: its pk only
    assert [g["event_class"] for g in bob_got] == ["created"]
    assert bob_got[0]["data"]["fields"]["owner_id"] == bob.pk


def test_per_instance_channel_authorization(client, live_client, django_user_model):
    ann = django_user_model.objects.create_user("ann", password="pw")
    bob = django_user_model.objects.create_user("bob", password="pw")
    task = Task.objects.create(title="mine", owner=ann)

    def ask(user, channel):
        client.force_login(user)
        return client.post("/instant/subscribe/", {"channel": channel},
                           content_type="application/json")

    assert ask(bob, f"$task:{task.pk}").status_code == 403
    assert ask(bob, f"$user:{ann.pk}").status_code == 403
    assert ask(bob, "$task:not-a-number").status_code == 403
    assert ask(bob, "$task:999999").status_code == 403
    response = ask(ann, f"$task:{task.pk}")
    assert response.status_code == 200
    live = live_client(connection_token(ann))
    live.subscribe(f"$task:{task.pk}", token=response.json()["token"])
    task.done = True
    task.save()
    got = live.wait_for(1)
    assert got[0]["data"]["changed"] == {"done": False}
    assert got[0]["data"]["fields"]["owner_id"] == ann.pk
    client.logout()
    assert client.post("/instant/subscribe/", {"channel": f"$task:{task.pk}"},
                       content_type="application/json").status_code == 403


def test_centrifugo_down_saves_succeed_failure_logged_and_signalled(settings, caplog):
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"  # nothing listens there
    failures = []

    def receiver(sender, publications, error, **kwargs):
        failures.append((publications, error))

    broadcast_failed.connect(receiver)
    before = stats.snapshot()
    try:
        with caplog.at_level(logging.ERROR, logger="instant_signals"):
            with transaction.atomic():
                Note.objects.create(title="saved anyway")
            Note.objects.create(title="and this one")
    finally:
        broadcast_failed.disconnect(receiver)
    assert Note.objects.count() == 2
    assert stats["failed"] - before["failed"] == 2
    assert len(failures) == 2 and failures[0][1].retryable
    assert failures[0][0][0]["data"]["fields"]["title"] == "saved anyway"
    assert "not delivered" in caplog.text


def test_centrifugo_process_stopped(centrifugo, caplog):
    centrifugo.stop()
    try:
        with caplog.at_level(logging.ERROR, logger="instant_signals"):
            note = Note.objects.create(title="while down")
        assert Note.objects.filter(pk=note.pk).exists()
        assert "not delivered" in caplog.text
    finally:
        centrifugo.start()


def test_queryset_update_through_the_bulk_path(watcher):
    notes = [Note.objects.create(title=f"b{i}") for i in range(3)]
    watcher.wait_for(3, channel="notes")
    count = Note.objects.filter(pk__in=[n.pk for n in notes[:2]]).update(done=True)
    assert count == 2
    got = watcher.wait_for(5, channel="notes")[3:]
    assert sorted(g["data"]["pk"] for g in got) == sorted(n.pk for n in notes[:2])
    assert all(g["event_class"] == "updated" and g["data"]["changed"] == {"done": False}
               and g["data"]["fields"]["done"] is True for g in got)
