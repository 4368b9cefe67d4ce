"""update(), bulk_create() and bulk_update() through BroadcastQuerySet publish like save()."""

import pytest
from django.db import transaction

from instant_signals.bulk import broadcast_instances
from instant_signals.testing import capture_broadcasts
from tests.testapp.models import Note, Task

pytestmark = pytest.mark.django_db


def titles(published, event):
    return sorted(p["data"]["fields"]["title"] for p in published if p["event_class"] == event)


def test_bulk_create():
    with capture_broadcasts() as published:
        notes = Note.objects.bulk_create([Note(title=f"n{i}") for i in range(5)])
    assert titles(published, "created") == [f"n{i}" for i in range(5)]
    assert sorted(p["data"]["pk"] for p in published) == sorted(n.pk for n in notes)


def test_bulk_update_carries_changed():
    notes = Note.objects.bulk_create([Note(title=f"n{i}") for i in range(3)])
    notes = list(Note.objects.order_by("pk"))
    for note in notes:
        note.title += "!"
    with capture_broadcasts() as published:
        Note.objects.bulk_update(notes, ["title"])
    assert titles(published, "updated") == ["n0!", "n1!", "n2!"]
    assert sorted(p["data"]["changed"]["title"] for p in published) == ["n0", "n1", "n2"]


def test_queryset_update_with_field_tracker_model():
    Task.objects.bulk_create([Task(title=f"t{i}") for i in range(4)])
    with capture_broadcasts() as published:
        count = Task.objects.filter(title__in=["t1", "t2"]).update(done=True)
    assert count == 2
    public = [p for p in published if p["channel"] == "tasks"]
    assert titles(public, "updated") == ["t1", "t2"]
    assert all(p["data"]["changed"] == {"done": False} for p in public)


def test_update_rolled_back_publishes_nothing():
    Note.objects.create(title="x")
    with capture_broadcasts() as published:
        try:
            with transaction.atomic():
                Note.objects.update(done=True)
                raise RuntimeError
        except RuntimeError:
            pass
    assert published == []
    assert not Note.objects.filter(done=True).exists()


def test_broadcast_instances_for_raw_sql_changes():
    note = Note.objects.create(title="raw")
    with capture_broadcasts() as published:
        broadcast_instances(Note.objects.filter(pk=note.pk), "updated")
    assert [p["event_class"] for p in published] == ["updated"]
