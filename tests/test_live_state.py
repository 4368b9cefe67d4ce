"""Gap-free live lists: ``collection()`` of the browser module against a real Centrifugo.

A page loads a declared channel's rows with the stream position read first (``collection/``,
inside centrifuge-js' ``getState``) and subscribes from that position. These tests change rows
from another process while pages load, and while a page is offline, and compare every page's
list with the database afterwards.

Measured numbers (the time a page took to equal the database again after coming back online)
are written to ``test-artifacts/live-state.json``.
"""

from __future__ import annotations

import json
import time

import pytest

from support.browser_pages import chromium, open_page, start_site, wait_until  # noqa: F401,F811
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.slow

ROWS = 50
CHANGES = 1000
PAGES = 20
SETTLE = 30  # seconds a page may take to catch up once the writer is done (takes < 2 s)
HISTORY = 300  # publications Centrifugo keeps per channel (installws' default)
WRITING = 10.0  # seconds the 1,000 changes are spread over, while the 20 pages load

# The page's own script (an init script of the context): runs as the page loads.
START = """window.instantReady = (module) => {
  const { Instant } = module;
  const instant = new Instant({ centrifuge: { minReconnectDelay: 100, maxReconnectDelay: 1000 } });
  const notes = instant.collection("notes", { model: "testapp.note" });
  const applied = [];
  notes.onChange((change) => { if (change.envelope) applied.push(change.envelope.id); });
  window.t = { instant, notes, applied, loadedAt: null };
  notes.onChange((change) => { if (change.type === "reset") window.t.loadedAt = Date.now(); });
  instant.start();
}"""
ROWS_JS = "window.t.notes.rows.map((r) => [r.pk, r.fields.title, r.fields.done])"

WRITER = """
import random, sys, time
from tests.testapp.models import Note

random.seed({seed})
pks = list(Note.objects.order_by("pk").values_list("pk", flat=True))
print("started", flush=True)
start = time.monotonic()
for k in range({changes}):
    if k % 50 == 49:  # now and then a row goes and another comes
        Note.objects.get(pk=pks.pop(random.randrange(len(pks)))).delete()
        pks.append(Note.objects.create(title=f"new {{k}}").pk)
    else:
        note = Note.objects.get(pk=random.choice(pks))
        note.title = f"{{note.pk}} change {{k}}"
        note.done = not note.done
        note.save()
    time.sleep(max(0.0, start + (k + 1) * {duration} / {changes} - time.monotonic()))
print("done", flush=True)
"""

DATABASE = """
from tests.testapp.models import Note
print(json.dumps(sorted([n.pk, n.title, n.done] for n in Note.objects.all())))
"""

POSITION = """
from instant_signals.streams import stream_position
print(json.dumps(stream_position("notes")))
"""


@pytest.fixture(scope="module")
def site(centrifugo_binary, tmp_path_factory):
    site, centrifugo = start_site(centrifugo_binary, tmp_path_factory.mktemp("live-state"))
    site.run(f"""
        from tests.testapp.models import Note
        for i in range({ROWS}):
            Note.objects.create(title=f"row {{i}}")
    """)
    yield site
    site.stop()
    centrifugo.stop()


def rows_of(page) -> list:
    return sorted(page.evaluate(ROWS_JS))


def record(name: str, value) -> None:
    path = ARTIFACTS / "live-state.json"
    found = json.loads(path.read_text()) if path.exists() else {}
    found[name] = value
    path.write_text(json.dumps(found, indent=1) + "\n")


def writer(site, changes: int, seed: int, duration: float = 0.0):
    """A child process making ``changes`` changes, spread over ``duration`` seconds."""
    process = site.spawn(WRITER.format(changes=changes, seed=seed, duration=duration))
    assert process.stdout.readline().strip() == "started", process.stderr.read()
    return process


def test_page_loads_during_a_thousand_changes_all_end_equal_to_the_database(site, chromium):
    before = site.json(POSITION)
    contexts = [chromium.new_context() for _ in range(4)]
    for context in contexts:
        context.add_init_script(START)
    errors: list[str] = []
    process = writer(site, CHANGES, seed=1, duration=WRITING)
    opening = time.monotonic()
    pages = []
    for i in range(PAGES):  # while the writer commits: each page loads at another position
        pages.append(open_page(contexts[i % len(contexts)], site.url, errors, wait=False))
    opening = time.monotonic() - opening
    still_writing = process.poll() is None
    site.finish(process)
    after = site.json(POSITION)
    database = sorted(site.json(DATABASE))
    assert len(database) == ROWS

    for page in pages:
        page.wait_for_function("window.t && window.t.notes.state === 'live'")
        wait_until(page, lambda: rows_of(page) == database, SETTLE)
    loaded = [page.evaluate("window.t.notes.position") for page in pages]
    for i, page in enumerate(pages):
        assert rows_of(page) == database, f"page {i} differs from the database"
        applied = page.evaluate("window.t.applied")
        assert len(applied) == len(set(applied)), f"page {i} applied an event twice"
        stats = page.evaluate("window.t.notes.stats")
        assert stats["loads"] == 1, stats  # nothing reloaded: the stream had no gap
        assert page.evaluate("window.t.notes.state") == "live"
    # The loads really happened while rows changed: strictly between the first and last event.
    assert still_writing, "the writer finished before the last page loaded; slow it down"
    during = [p for p in loaded if before["offset"] < p["offset"] < after["offset"]]
    assert len(during) >= PAGES // 2, (before, after, loaded)
    assert after["offset"] - before["offset"] >= CHANGES
    assert [e for e in errors if "WebSocket" not in e and "INTERNET_DISCONNECTED" not in e] == []
    record("pages_loaded_during_writes", len(during))
    record("seconds_to_open_20_pages", round(opening, 2))
    for context in contexts:
        context.close()


def test_offline_page_recovers_missed_events_and_reloads_past_the_history(site, chromium):
    context = chromium.new_context()
    errors: list[str] = []
    context.add_init_script(START)
    page = open_page(context, site.url, errors)
    page.evaluate("window.notReloaded = true")
    page.wait_for_function("window.t.notes.state === 'live'")
    assert wait_until(page, lambda: rows_of(page) == sorted(site.json(DATABASE)), SETTLE)

    def offline_for(changes: int, seed: int) -> float:
        context.set_offline(True)
        page.wait_for_function("window.t.instant.state !== 'connected'")
        site.finish(writer(site, changes, seed))
        database = sorted(site.json(DATABASE))
        assert rows_of(page) != database  # the page missed them while offline
        started = time.monotonic()
        context.set_offline(False)
        assert wait_until(page, lambda: rows_of(page) == database, SETTLE), "never caught up"
        return time.monotonic() - started

    # 1. Within the history: the missed publications are recovered, nothing is loaded again.
    recovered_in = offline_for(100, seed=2)
    stats = page.evaluate("window.t.notes.stats")
    assert stats["loads"] == 1, stats
    applied = page.evaluate("window.t.applied")
    assert len(applied) == len(set(applied))

    # 2. Past the history (more than its 300 publications): the recovery fails (code 112) and
    #    getState loads the rows again, with the new stream position.
    reloaded_in = offline_for(HISTORY + 50, seed=3)
    stats = page.evaluate("window.t.notes.stats")
    assert stats["loads"] == 2, stats

    assert page.evaluate("window.notReloaded") is True  # the page itself never reloaded
    assert [e for e in errors if "WebSocket" not in e and "INTERNET_DISCONNECTED" not in e] == []
    record("online_to_equal_after_100_missed_s", round(recovered_in, 2))
    record("online_to_equal_after_350_missed_reload_s", round(reloaded_in, 2))
    context.close()
