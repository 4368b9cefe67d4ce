"""Where the tests run: in CI (every tool required) or locally (a missing tool skips)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: Screenshots, logs and traces a failing run leaves for a human (CI uploads the directory).
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def need(condition: bool, what: str) -> None:
    """Skip locally when an optional tool is missing; in CI a missing tool is a failure."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{what} is required in CI but missing", pytrace=False)
        pytest.skip(f"{what} is not available here")
