"""Errors raised by instant_signals (imports nothing of ours)."""

from __future__ import annotations

from typing import Any

# Centrifugo codes worth retrying, the ones Centrifugo marks temporary: internal (100), too many
# requests (111). 108 "not available" (e.g. presence on a channel without it) is permanent.
# The one list: CentrifugoError.retryable reads it, docs/reference/publish.md shows it (tested).
RETRYABLE_CODES = frozenset({100, 111})
UNKNOWN_CHANNEL = 102
"""Centrifugo's "unknown channel": the channel's namespace is not in its config."""


class CentrifugoError(Exception):
    """A call to Centrifugo failed.

    ``code`` is Centrifugo's error code (e.g. 102 unknown channel) or the HTTP status when the
    server answered without JSON (401 for a wrong API key); ``None`` when it could not be reached.
    ``retryable`` says whether sending the same command again may succeed.
    """

    def __init__(self, message: str, *, code: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}" if self.code is not None else self.message

    @classmethod
    def from_reply(cls, error: dict[str, Any]) -> CentrifugoError:
        """The error object of a Centrifugo reply (``{"code": 102, "message": "..."}``)."""
        code = error.get("code")
        return cls(str(error.get("message") or "error"), code=code,
                   retryable=code in RETRYABLE_CODES)
