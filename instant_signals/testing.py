"""Helpers for your own tests: see what a block would publish, with no Centrifugo running."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from django.db import DEFAULT_DB_ALIAS, connections
from django.test import TestCase

from . import reporting
from .delivery.buffer import Buffer

__all__ = ["capture_broadcasts"]


@contextmanager
def capture_broadcasts(using: str = DEFAULT_DB_ALIAS) -> Iterator[list[dict[str, Any]]]:
    """Record the publications a block would send, as the list of their envelopes.

    ``on_commit`` callbacks registered in the block are run at its end (as Django's
    ``captureOnCommitCallbacks(execute=True)`` does), so it works inside ``TestCase``:

    ```python
    with capture_broadcasts() as published:
        Task.objects.create(title="x")
    assert published[0]["event_class"] == "created"
    ```

    ``publish()`` calls in the block are recorded too.
    """
    captured: list[dict[str, Any]] = []
    token = reporting.start_capture(captured)
    Buffer.forget(connections[using])  # changes made before the block stay out of it
    try:
        with TestCase.captureOnCommitCallbacks(using=using, execute=True):
            yield captured
    finally:
        reporting.stop_capture(token)
