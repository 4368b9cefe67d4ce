"""The benchmark harness works end to end: a tiny run against the real Centrifugo.

Structure and correctness only (every scenario present, every event delivered, request counts
as designed); never timing. ``benchmarks/run`` is the real entry point; this calls the harness
with the test venv's Python. Peer arms whose library is not installed here (cent 5, the
django-instant venv made by benchmarks/run) must say "unavailable", not fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "benchmarks" / "harness.py"
PEER_PYTHON = ROOT / ".venv-peer-instant" / "bin" / "python"

pytestmark = pytest.mark.slow

OURS = {
    "s1": ["instant_signals publish()", "raw requests.Session floor",
           "raw http.client keep-alive (stdlib)"],
    "s2": ["off (model not registered)", "registered, disable_broadcasts()", "@broadcast on"],
    "s3": ["@broadcast on (after commit)"],
    "s4": ["hooks' own cost (on − off)", "save with @broadcast on (capture)",
           "save, model not registered", "hooks alone, signals sent without SQL (on − off)"],
    "s5": ["@broadcast on, peak above baseline", "model not registered, peak above baseline",
           "events' share (on − off)"],
}
PEERS = {
    "s1": ["cent 5 Client (reused)", "django-instant publish()"],
    "s2": ["django-instant publish() in post_save"],
    "s3": ["cent 5 in transaction.on_commit", "django-instant publish() in post_save"],
}


@pytest.fixture(scope="module")
def results(centrifugo_binary, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "latest.json"
    cmd = [sys.executable, str(HARNESS), "--quick", "--out", str(out),
           "--peer-python", str(PEER_PYTHON)]
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["CENTRIFUGO_BINARY"] = str(centrifugo_binary)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "| Target |" in done.stdout
    return json.loads(out.read_text())


def test_every_scenario_and_arm_is_reported(results):
    assert set(results["scenarios"]) == {"s1", "s2", "s3", "s4", "s5"}
    for key, names in OURS.items():
        arms = results["scenarios"][key]["arms"]
        for name in names + PEERS.get(key, []):
            assert name in arms, (key, name)
        for name in names:
            assert arms[name]["status"] == "ok", (key, name, arms[name])
        for name in PEERS.get(key, []):
            assert arms[name]["status"] in ("ok", "unavailable", "not applicable"), (
                key, name, arms[name])
    meta = results["meta"]
    assert meta["quick"] is True and meta["rounds"] == 1
    assert meta["centrifugo"]


def test_every_event_was_delivered(results):
    for key, scenario in results["scenarios"].items():
        for name, arm in scenario["arms"].items():
            if arm.get("status") == "ok" and arm.get("received_per_round") is not None:
                assert arm["received_per_round"], (key, name)
                assert all(got == arm["sent_per_round"] for got in arm["received_per_round"]), (
                    key, name, arm)


def test_values_are_numbers_in_every_ok_arm(results):
    for key, scenario in results["scenarios"].items():
        for name, arm in scenario["arms"].items():
            if arm.get("status") != "ok":
                continue
            for metric in ([arm["p50"], arm["p99"]] if "p50" in arm else [arm]):
                assert isinstance(metric["median"], float), (key, name, metric)
                assert len(metric["rounds"]) == 1


def test_scenario_two_counts_http_requests(results):
    s2 = results["scenarios"]["s2"]
    n = s2["n"]
    on = s2["arms"]["@broadcast on"]
    assert 1 <= on["http_requests"] <= 10  # one /batch per 500 events
    assert s2["arms"]["off (model not registered)"]["http_requests"] == 0
    assert s2["arms"]["registered, disable_broadcasts()"]["http_requests"] == 0
    peer = s2["arms"]["django-instant publish() in post_save"]
    if peer["status"] == "ok":
        assert peer["http_requests"] == n


def test_targets_cover_every_scenario(results):
    names = " ".join(row["target"] for row in results["targets"])
    for prefix in ("S1", "S2", "S3", "S4", "S5"):
        assert prefix in names
    for row in results["targets"]:
        assert row["pass"] in (True, False, None)
