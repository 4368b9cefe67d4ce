"""``benchmarks/run --scenarios fanout --quick``, run the way a user runs it: 1,000 centrifuge-go
clients over two Centrifugo nodes sharing Redis. Checks what a user checks in its JSON: every
client connected and subscribed, every change reached each of its project's members exactly once
(counted by the fleet, against the memberships the Django side made), both arms ran, Supabase's
figures are quoted with their source. Never timing: a slow step is a result, not a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fanout(tmp_path_factory) -> dict:
    need(shutil.which("go") is not None, "Go (builds the centrifuge-go fleet)")
    need(shutil.which("redis-server") is not None, "redis-server")
    out = tmp_path_factory.mktemp("fanout") / "quick.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(ROOT / "benchmarks" / "run"), "--scenarios", "fanout", "--quick",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "| Fan-out run |" in done.stdout
    return json.loads(out.read_text())["scenarios"]["fanout"]


def test_both_arms_ran_with_every_client_subscribed(fanout):
    assert {run["key"] for run in fanout["runs"]} == {"project", "row"}
    for run in fanout["runs"]:
        assert run["status"] == "ok", run
        ready = run["fleet_ready"]
        assert ready["connected"] == run["clients"] == 1000, ready
        assert ready["subscribed"] == ready["subscriptions_wanted"] > run["clients"], ready
        assert run["setup"]["refused"] == 0, run["setup"]


def test_every_change_reached_every_member_once(fanout):
    for run in fanout["runs"]:
        assert run["steps"], run
        for step in run["steps"]:
            assert step["expected_deliveries"] > 50 * step["changes"], step  # ~100 per change
            assert step["delivered"] == step["expected_deliveries"], step
            assert step["changes_never_received"] == 0, step
        assert run["fleet_totals"]["duplicates"] == 0, run["fleet_totals"]
        assert run["fleet_totals"]["unparsed"] == 0, run["fleet_totals"]


def test_supabase_figures_are_quoted_with_their_source(fanout):
    assert fanout["supabase"]["source"].startswith("https://supabase.com/")
    assert fanout["limits"]["nofile"]["soft_now"] >= 1000
