"""``benchmarks/run --quick``, run the way a user runs it, and what a user checks in its JSON.

Every arm of every scenario is there and ran; every publication an arm sent was accepted by
Centrifugo (counted by Centrifugo: the channel's stream offset, not by the library measured);
scenario 2 sends at most 10 HTTP requests for 1,000 saves with @broadcast, against one per save
for the django-instant style; scenario 6b's writers and relay met no lock and re-sent nothing.
Never timing: a slow machine makes slow numbers, not a failing test.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
from support.services import postgres_bindir

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

ARMS = {
    "s1": ["instant_signals publish()", "cent 5 Client (reused)", "django-instant publish()",
           "raw urllib3 pool floor", "raw requests.Session floor",
           "raw http.client keep-alive (stdlib)"],
    "s2": ["off (model not registered)", "registered, disable_broadcasts()", "@broadcast on",
           "django-instant publish() in post_save"],
    "s3": ["@broadcast on (after commit)", "cent 5 in transaction.on_commit",
           "django-instant publish() in post_save"],
    "s4": ["hooks' own cost (on − off)", "save with @broadcast on (capture)",
           "save, model not registered", "hooks alone, signals sent without SQL (on − off)",
           "django-model-utils FieldTracker, per save (tracked − plain)",
           "django-model-utils FieldTracker, per loaded row (µs/row)",
           "instant_signals snapshot, per loaded row (µs/row)"],
    "s5": ["@broadcast on, peak above baseline", "model not registered, peak above baseline",
           "events' share (on − off)"],
    "s6": ["SQLite (WAL), broadcasting off", 'SQLite (WAL), DELIVERY="outbox"',
           "PostgreSQL, broadcasting off", 'PostgreSQL, DELIVERY="outbox"'],
    "s6b": ["WAL + IMMEDIATE + timeout 20 s (what the docs require)",
            "Django defaults (rollback journal, deferred, 5 s)"],
    "s7": ["relay_outbox --once, SQLite (WAL)", "relay_outbox --once, PostgreSQL",
           "Centrifugo PostgreSQL consumer (NOTIFY trigger)"],
    "s8": ["relay_outbox, SQLite (WAL)", "relay_outbox, PostgreSQL (LISTEN)",
           "Centrifugo PostgreSQL consumer (NOTIFY trigger)"],
    "s9": ["instant_signals publish(), 8 threads", "cent 5 Client, 8 threads",
           "raw urllib3 pool, 8 threads", "instant_signals publish(), 4 processes",
           "cent 5 Client, 4 processes", "raw urllib3 pool, 4 processes"],
    "s10": ["instant_signals apublish()", "cent 5 AsyncClient",
            "sync_to_async(publish) (apublish before)"],
    "s11": ["default mode (after commit), read timeout 0.3 s"],
}
NOT_APPLICABLE = {("s3", "django-instant publish() in post_save")}
# Arms that publish: Centrifugo's count per round must equal what the arm was to send.
DELIVERING = {key: [a for a in arms if (key, a) not in NOT_APPLICABLE] for key, arms in {
    "s1": ARMS["s1"], "s2": ARMS["s2"], "s3": ARMS["s3"], "s5": ARMS["s5"][:1],
    "s6b": ARMS["s6b"], "s7": ARMS["s7"], "s8": ARMS["s8"], "s9": ARMS["s9"],
    "s10": ARMS["s10"]}.items()}
REQUIRED = ARMS["s6b"][0]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    need(postgres_bindir() is not None, "PostgreSQL server binaries (durable-mode scenarios)")
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(ROOT / "benchmarks" / "run"), "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "| Target | Measured | Goal | Result |" in done.stdout
    return json.loads(out.read_text())


def test_every_arm_of_every_scenario_ran(results):
    assert results["meta"]["quick"] is True and results["meta"]["rounds"] == 1
    assert results["meta"]["centrifugo"]
    assert set(results["scenarios"]) == set(ARMS)
    for key, names in ARMS.items():
        arms = results["scenarios"][key]["arms"]
        assert set(arms) == set(names), (key, sorted(arms))
        for name in names:
            want = "not applicable" if (key, name) in NOT_APPLICABLE else "ok"
            assert arms[name]["status"] == want, (key, name, arms[name])


def test_every_publication_was_accepted_by_centrifugo(results):
    for key, names in DELIVERING.items():
        for name in names:
            arm = results["scenarios"][key]["arms"][name]
            expected, delivered = arm["expected_per_round"], arm["delivered_per_round"]
            assert len(expected) == 1 and delivered == expected, (key, name, arm)
            silent = key == "s2" and name in ARMS["s2"][:2]  # off, and disable_broadcasts()
            assert expected == [0] if silent else expected[0] > 0, (key, name, arm)


def test_latency_arms_heard_every_event(results):
    """Scenarios 3 and 8 time each event at the subscribed client: it received all of them."""
    for key in ("s3", "s8"):
        for name, arm in results["scenarios"][key]["arms"].items():
            if (key, name) in NOT_APPLICABLE:
                continue
            assert arm["received_per_round"] == arm["expected_per_round"], (key, name, arm)


def test_outbox_rows_are_written_in_the_transaction(results):
    """Scenario 6: one outbox row per save with DELIVERY="outbox", none with broadcasting off."""
    s6 = results["scenarios"]["s6"]
    for name, arm in s6["arms"].items():
        want = s6["n"] if "outbox" in name else 0
        assert arm["outbox_rows_per_round"] == [want], (name, arm)


def test_scenario_two_counts_http_requests(results):
    s2 = results["scenarios"]["s2"]
    assert s2["n"] == 1000
    arms = s2["arms"]
    assert 1 <= arms["@broadcast on"]["http_requests"] <= 10
    assert arms["django-instant publish() in post_save"]["http_requests"] == 1000
    assert arms["off (model not registered)"]["http_requests"] == 0
    assert arms["registered, disable_broadcasts()"]["http_requests"] == 0


def test_sqlite_writers_and_relay_met_no_lock_and_resent_nothing(results):
    arm = results["scenarios"]["s6b"]["arms"][REQUIRED]
    assert arm["writer_lock_errors"] == 0 and arm["relay_lock_errors"] == 0, arm
    assert arm["lock_errors"] == 0, arm
    assert arm["resent_batches"] == 0 and arm["resent_rows"] == 0, arm
    assert arm["batches"] > 0 and arm["committed"] > 0, arm
    assert arm["duplicates"] == 0 and arm["lost"] == 0, arm


def test_hung_server_run_reports_what_happened(results):
    arm = results["scenarios"]["s11"]["arms"][ARMS["s11"][0]]
    assert arm["updates"] == results["scenarios"]["s11"]["n"]
    for key in ("reported_failed", "delivered_after_resume", "arrived_out_of_order"):
        assert isinstance(arm[key], int), (key, arm)
    assert isinstance(arm["highest_version_is_final_state"], bool), arm
    # data.version grows with each save, so a client can drop what arrives late
    assert arm["version_order_is_update_order"] is True, arm


def test_every_target_was_measured(results):
    names = " ".join(row["target"] for row in results["targets"])
    for prefix in ("S1 ", "S2 ", "S3 ", "S4 ", "S5 ", "S6 ", "S6b ", "S7 ", "S8 ", "S9 ", "S10 "):
        assert prefix in names, prefix
    for row in results["targets"]:
        assert row["measured"] is not None, row
        assert row["pass"] in (True, False), row
