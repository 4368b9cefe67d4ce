"""Helpers for your own tests: see what a block would publish, with no Centrifugo running."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from django.db import DEFAULT_DB_ALIAS

from .delivery import capture_target, close_segment


@contextmanager
def capture_broadcasts(using: str = DEFAULT_DB_ALIAS) -> Iterator[list[dict]]:
    """Record the publications a block would send, as the list of their envelopes.

    ``on_commit`` callbacks registered in the block are run at its end (as Django's
    ``captureOnCommitCallbacks(execute=True)`` does), so it works inside ``TestCase``::

        with capture_broadcasts() as published:
            Task.objects.create(title="x")
        assert published[0]["event_class"] == "created"
    """
    from django.test import TestCase

    captured: list[dict] = []
    token = capture_target.set(captured)
    close_segment(using)
    try:
        with TestCase.captureOnCommitCallbacks(using=using, execute=True):
            yield captured
    finally:
        capture_target.reset(token)
