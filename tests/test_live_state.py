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
from pathlib import Path

import pytest

from support.browser_pages import chromium, open_page, start_site, wait_until  # noqa: F401,F811
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.slow

ROWS = 50
CHANGES = 1000  # at least this many changes while the pages load
PAGES = 20
SETTLE = 30  # seconds a page may take to catch up once the writer is done (takes < 2 s)
HISTORY = 300  # publications Centrifugo keeps per channel (installws' default)
# While pages load, the stream must keep every publication a page may still have to recover
# from its load position, however slow the machine: the writer runs until every page is live,
# so that site keeps far more than it can write meanwhile.
DEEP_HISTORY = 100_000

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

# Makes ``changes`` changes; with a ``stop`` path, goes on until that file exists and then makes
# one more (so every change counted before it was seen is followed by at least one).
WRITER = """
import os, random, sys, time
from tests.testapp.models import Note

random.seed({seed})
pks = list(Note.objects.order_by("pk").values_list("pk", flat=True))
stop = {stop!r}
print("started", flush=True)
k = 0
while True:
    if k % 50 == 49:  # now and then a row goes and another comes
        Note.objects.get(pk=pks.pop(random.randrange(len(pks)))).delete()
        pks.append(Note.objects.create(title=f"new {{k}}").pk)
    else:
        note = Note.objects.get(pk=random.choice(pks))
        note.title = f"{{note.pk}} change {{k}}"
        note.done = not note.done
        note.save()
    k += 1
    if k >= {changes} and (stop is None or stopping):
        break
    stopping = stop is not None and os.path.exists(stop)
    time.sleep(0.002)  # leaves the pages some CPU; nothing depends on the pace
print("done", k, flush=True)
"""

DATABASE = """
from tests.testapp.models import Note
print(json.dumps(sorted([n.pk, n.title, n.done] for n in Note.objects.all())))
"""

POSITION = """
from instant_signals.streams import stream_position
print(json.dumps(stream_position("notes")))
"""


def _site(binary, workdir, **centrifugo_options):
    site, centrifugo = start_site(binary, workdir, **centrifugo_options)
    site.run(f"""
        from tests.testapp.models import Note
        for i in range({ROWS}):
            Note.objects.create(title=f"row {{i}}")
    """)
    return site, centrifugo


@pytest.fixture(scope="module")
def site(centrifugo_binary, tmp_path_factory):
    """The site as installws configures it (300 publications of history)."""
    site, centrifugo = _site(centrifugo_binary, tmp_path_factory.mktemp("live-state"))
    yield site
    site.stop()
    centrifugo.stop()


@pytest.fixture()
def deep_site(centrifugo_binary, tmp_path_factory):
    """A site whose stream keeps ``DEEP_HISTORY`` publications and hands all of them to a
    subscriber recovering from its load position."""
    site, centrifugo = _site(
        centrifugo_binary, tmp_path_factory.mktemp("live-state-deep"),
        history_size=DEEP_HISTORY, client={"recovery_max_publication_limit": DEEP_HISTORY})
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


def writer(site, changes: int, seed: int, stop: Path | None = None):
    """A child process making ``changes`` changes (with ``stop``: until that file exists)."""
    process = site.spawn(WRITER.format(changes=changes, seed=seed,
                                       stop=None if stop is None else str(stop)))
    assert process.stdout.readline().strip() == "started", process.stderr.read()
    return process


def test_page_loads_during_a_thousand_changes_all_end_equal_to_the_database(
        deep_site, chromium, tmp_path):
    site = deep_site
    before = site.json(POSITION)
    contexts = [chromium.new_context() for _ in range(4)]
    for context in contexts:
        context.add_init_script(START)
    errors: list[str] = []
    stop = tmp_path / "stop-writing"
    process = writer(site, CHANGES, seed=1, stop=stop)
    opening = time.monotonic()
    pages = []
    for i in range(PAGES):  # while the writer commits: each page loads at another position
        pages.append(open_page(contexts[i % len(contexts)], site.url, errors, wait=False))
    for page in pages:  # the writer goes on until every page has loaded its rows and is live
        page.wait_for_function("window.t && window.t.notes.state === 'live'", timeout=120_000)
    opening = time.monotonic() - opening
    loaded = [page.evaluate("window.t.notes.position") for page in pages]
    still_writing = process.poll() is None
    stop.touch()
    site.finish(process)
    after = site.json(POSITION)
    database = sorted(site.json(DATABASE))
    assert len(database) == ROWS

    for page in pages:
        wait_until(page, lambda: rows_of(page) == database, SETTLE)
    for i, page in enumerate(pages):
        assert rows_of(page) == database, f"page {i} differs from the database"
        applied = page.evaluate("window.t.applied")
        assert len(applied) == len(set(applied)), f"page {i} applied an event twice"
        stats = page.evaluate("window.t.notes.stats")
        assert stats["loads"] == 1, stats  # nothing reloaded: the stream had no gap
        assert page.evaluate("window.t.notes.state") == "live"
    # The loads really happened while rows changed: strictly between the first and last event
    # (the writer only stops once told, after every page was live).
    assert still_writing
    during = [p for p in loaded if before["offset"] < p["offset"] < after["offset"]]
    assert len(during) == PAGES, (before, after, loaded)
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
