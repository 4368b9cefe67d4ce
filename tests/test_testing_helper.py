"""capture_broadcasts(): what users' own tests see, with no Centrifugo at all."""

import pytest
from django.test import TestCase

from instant_signals import publish
from instant_signals.testing import capture_broadcasts
from tests.testapp.models import Note


class CaptureInTestCase(TestCase):
    def test_records_model_events_and_publish_calls(self):
        with capture_broadcasts() as published:
            note = Note.objects.create(title="x")
            publish("public", "custom")
        # publish() is recorded when called; model events when the block's on_commit hooks run.
        self.assertEqual(published[0], {"channel": "public", "site": "Test site", "message": "custom"})
        self.assertEqual(published[1]["event_class"], "created")
        self.assertEqual(published[1]["data"]["fields"]["title"], "x")
        self.assertEqual(len(published), 2)
        self.assertTrue(Note.objects.filter(pk=note.pk).exists())


@pytest.mark.django_db
def test_nothing_outside_the_block_is_recorded(settings):
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"  # capture must not need the network
    with capture_broadcasts() as published:
        Note.objects.create(title="inside")
    assert [p["data"]["fields"]["title"] for p in published] == ["inside"]
