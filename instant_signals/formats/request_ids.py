"""The request id of the changes being committed, and the tag formats publish of it.

``html.RequestIdMiddleware`` (or ``request_id()``) sets the id of the page whose request makes a
change; the fragment and refresh formats publish its ``request_tag`` so that page's tab can tell
its own changes apart, and nobody else can pose as that tab.
"""

from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

__all__ = ["clean_request_id", "current_request_id", "request_id", "request_tag"]

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: Shortest request id that gets a tag: shorter ones could be guessed (and replayed).
MIN_TAGGED_ID = 16
_TAG_PREFIX = b"instant_signals request tag\x00"
_request_id: ContextVar[str | None] = ContextVar("instant_signals_request_id", default=None)


def current_request_id() -> str | None:
    """The request id of the request being handled (set by the middleware or decorator)."""
    return _request_id.get()


def clean_request_id(value: Any) -> str | None:
    """``value`` if it looks like a request id (at most 64 of ``A-Za-z0-9._:-``), else None."""
    if isinstance(value, str) and _REQUEST_ID_RE.match(value):
        return value
    return None


def request_tag(value: str | None) -> str | None:
    """What refresh signals and fragments publish of the request id ``value`` (``request_tag``):
    the first 32 hex digits of SHA-256 over a fixed prefix and the id; None for no id or one
    shorter than ``MIN_TAGGED_ID`` characters.

    Every reader of a channel sees the tag, never the id. Sending the tag back as a request id
    makes the server publish the tag of the tag, which matches nothing: to make another tab skip
    a change as its own one needs that tab's id, a preimage of the tag. The tab that made the id
    up computes the same hash (``stream.js``, ``requestTag``) and recognizes its own changes."""
    if not value or len(value) < MIN_TAGGED_ID:
        return None
    return hashlib.sha256(_TAG_PREFIX + value.encode()).hexdigest()[:32]


@contextmanager
def request_id(value: str | None) -> Iterator[None]:
    """Publish the changes committed in this block with ``value`` as their request id (e.g. in a
    task that carries the id of the request that queued it)."""
    token = _request_id.set(clean_request_id(value))
    try:
        yield
    finally:
        _request_id.reset(token)
