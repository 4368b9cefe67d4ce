"""capture_broadcasts() records the same publications in every delivery mode (issue 19, item 9):
after commit, coalesced per row, nothing for a rollback, nothing sent or written."""

import pytest
from django.db import transaction

from instant_signals.models import OutboxEntry
from instant_signals.testing import capture_broadcasts
from tests.testapp.models import Note


class Rollback(Exception):
    pass


@pytest.fixture(params=["on_commit", "outbox"])
def mode(request, settings):
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"  # capture must not need the network
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "DELIVERY": request.param}
    return request.param


def titles(published):
    return [(p["event_class"], p["data"]["fields"]["title"]) for p in published]


@pytest.mark.django_db(transaction=True)
def test_committed_changes_are_captured_once_per_row_in_every_mode(mode):
    with capture_broadcasts() as published:
        with transaction.atomic():
            note = Note.objects.create(title="a")
            note.title = "b"
            note.save()
            note.title = "c"
            note.save()
            assert published == []  # not final before the commit
        Note.objects.create(title="autocommit")
    assert titles(published) == [("created", "c"), ("created", "autocommit")]
    assert OutboxEntry.objects.count() == 0  # captured instead of written


@pytest.mark.django_db(transaction=True)
def test_rolled_back_changes_are_not_captured_in_any_mode(mode):
    note = Note.objects.create(title="before")
    with capture_broadcasts() as published:
        try:
            with transaction.atomic():
                Note.objects.create(title="gone")
                raise Rollback
        except Rollback:
            pass
        with transaction.atomic():
            note.title = "kept"
            note.save()
            try:
                with transaction.atomic():
                    note.title = "savepoint gone"
                    note.save()
                    raise Rollback
            except Rollback:
                pass
    assert titles(published) == [("updated", "kept")]


@pytest.mark.django_db
def test_capture_inside_a_test_case_transaction_in_every_mode(mode):
    """pytest-django's django_db runs the test in a transaction, like TestCase."""
    with capture_broadcasts() as published:
        note = Note.objects.create(title="x")
        note.title = "y"
        note.save()
    assert titles(published) == [("created", "y")]
