"""What a page says when it cannot connect, in a real Chromium against the test project.

Each misconfiguration a new user meets is made for real: Centrifugo not running, a site whose
CENTRIFUGO_HMAC_KEY is not the config's (a stale .env), a project whose urls.py lacks
``include("instant_signals.urls")``, and runserver on a port the config's allowed_origins does
not list. For each, the browser module must write one console line naming the cause and its
fix (once, however many retries), tell the page (the ``instant:state`` DOM event and
``<html data-instant-state>``), and never leave an unhandled rejection (``pageerror``). The
happy path reaches "connected" with no such line.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from support.browser_pages import SiteServer, chromium, wait_until  # noqa: F401,F811
from support.processes import free_port, start_centrifugo
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.slow

SETTLE = 30  # seconds: an upper bound for the page to notice, never a timing assertion
RETRIES = 3  # attempts a page must have made before we check it said its line only once

# The page's own code, as a site writes it: state events to a list, then start().
START = """() => {
  window.seen = { states: [], started: false };
  document.addEventListener("instant:state", (event) => {
    const { state, cause, reason, fix } = event.detail;
    window.seen.states.push({ state, cause, reason, fix });
  });
  const { Instant } = window.instantModule;
  window.instant = new Instant({ centrifuge: { minReconnectDelay: 100, maxReconnectDelay: 500 } });
  window.instant.start().then(() => { window.seen.started = true; });
}"""


class Recorder:
    """A page of the browser module with its console, page errors, requests and websockets."""

    def __init__(self, browser: Any, url: str):
        self.context = browser.new_context()
        self.console: list[tuple[str, str]] = []
        self.page_errors: list[str] = []
        self.token_requests = 0
        self.websockets = 0
        page = self.context.new_page()
        page.set_default_timeout(15_000)
        page.on("console", lambda msg: self.console.append((msg.type, msg.text)))
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("request", self._request)
        page.on("websocket", self._websocket)
        self.page = self._open(page, url)

    def _open(self, page: Any, url: str) -> Any:
        page.goto(url)
        page.wait_for_function("document.body.dataset.ready === '1'")
        page.evaluate(START)
        return page

    def _request(self, request: Any) -> None:
        if "/instant/get_token/" in request.url:
            self.token_requests += 1

    def _websocket(self, socket: Any) -> None:
        self.websockets += 1

    def lines(self) -> list[tuple[str, str]]:
        """The module's own console lines."""
        return [(kind, text) for kind, text in self.console if text.startswith("instant_signals:")]

    def states(self) -> list[dict[str, Any]]:
        return self.page.evaluate("window.seen.states")

    def wait_for_cause(self, cause: str) -> dict[str, Any]:
        found = wait_until(self.page, lambda: any(s["cause"] == cause for s in self.states()),
                           SETTLE)
        assert found, (self.states(), self.console)
        return next(s for s in self.states() if s["cause"] == cause)

    def attribute(self, name: str) -> str | None:
        return self.page.evaluate(f"document.documentElement.getAttribute('{name}')")

    def close(self) -> None:
        self.context.close()


def assert_said_once(recorder: Recorder, attempts: Any, kind: str, *words: str) -> str:
    """After RETRIES more attempts, exactly one line of the module, of `kind`, with `words`."""
    before = attempts()
    assert wait_until(recorder.page, lambda: attempts() >= before + RETRIES, SETTLE), \
        (attempts(), recorder.console)
    lines = recorder.lines()
    assert len(lines) == 1, lines
    found_kind, text = lines[0]
    assert found_kind == kind, lines
    for word in words:
        assert word in text, (word, text)
    assert recorder.page_errors == []  # no unhandled rejection, no "pageerror: Object"
    assert recorder.page.evaluate("window.seen.started") is False
    record(recorder.states()[-1]["cause"], text)
    return text


def record(cause: str, line: str) -> None:
    """The console line of each cause, for the docs: test-artifacts/browser-failures.json."""
    path = ARTIFACTS / "browser-failures.json"
    found = json.loads(path.read_text()) if path.exists() else {}
    found[cause] = line
    path.write_text(json.dumps(found, indent=1) + "\n")


# -- the sites ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    """Ports of the sites the config's allowed_origins lists, and one it does not."""
    return {name: free_port() for name in ("good", "stale_key", "no_urls", "other_port")}


@pytest.fixture(scope="module")
def centrifugo(centrifugo_binary, tmp_path_factory, ports):
    from instant_signals.registry import broadcast_registry

    allowed = [f"http://127.0.0.1:{ports[name]}" for name in ("good", "stale_key", "no_urls")]
    server = start_centrifugo(centrifugo_binary, tmp_path_factory.mktemp("failures"),
                              namespaces=broadcast_registry.namespaces(), allowed_origins=allowed)
    yield server
    server.stop()


def serve(tmp_path_factory, centrifugo, port: int, **overrides: Any) -> SiteServer:
    """runserver of the test project on ``port``, with Django settings ``overrides``."""
    return SiteServer(tmp_path_factory.mktemp("site"), centrifugo, port,
                      overrides=overrides).start()


@pytest.fixture
def recorders():
    opened: list[Recorder] = []
    yield opened
    for recorder in opened:
        recorder.close()


def test_a_working_site_reaches_connected_and_says_nothing(
        centrifugo, ports, tmp_path_factory, chromium, recorders):
    site = serve(tmp_path_factory, centrifugo, ports["good"])
    try:
        recorder = Recorder(chromium, site.url)
        recorders.append(recorder)
        recorder.page.wait_for_function("window.seen.started === true")
        states = recorder.states()
        assert [s["state"] for s in states] == ["connecting", "connected"], states
        assert all(s["cause"] is None and s["fix"] is None for s in states)
        assert recorder.attribute("data-instant-state") == "connected"
        assert recorder.attribute("data-instant-cause") is None
        assert recorder.page.evaluate("window.instant.problem") is None

        recorder.page.evaluate("window.instant.stop()")
        recorder.page.wait_for_function(
            "document.documentElement.dataset.instantState === 'disconnected'")
        assert recorder.states()[-1]["state"] == "disconnected"
        assert recorder.lines() == [] and recorder.page_errors == []
        assert [text for kind, text in recorder.console if kind == "error"] == []
    finally:
        site.stop()


def test_centrifugo_not_running_is_named_and_the_page_connects_once_it_runs(
        centrifugo_binary, tmp_path_factory, chromium, recorders):
    port = free_port()
    from instant_signals.registry import broadcast_registry

    down = start_centrifugo(centrifugo_binary, tmp_path_factory.mktemp("down"),
                            namespaces=broadcast_registry.namespaces(),
                            allowed_origins=[f"http://127.0.0.1:{port}"])
    down.stop()  # the config and the keys are right; it just is not running
    site = serve(tmp_path_factory, down, port)
    try:
        recorder = Recorder(chromium, site.url)
        recorders.append(recorder)
        state = recorder.wait_for_cause("centrifugo_unreachable")
        assert state["state"] == "reconnecting"
        assert down.ws_url in state["reason"] and "runws" in state["fix"]
        assert recorder.attribute("data-instant-state") == "reconnecting"
        assert recorder.attribute("data-instant-cause") == "centrifugo_unreachable"
        assert_said_once(recorder, lambda: recorder.websockets, "warning",
                         f"Centrifugo does not answer at {down.ws_url}", "Fix: start it",
                         "python manage.py runws")

        down.start()  # the page needs no reload
        recorder.page.wait_for_function("window.seen.started === true", timeout=SETTLE * 1000)
        assert recorder.states()[-1] == {"state": "connected", "cause": None, "reason": None,
                                         "fix": None}
        assert recorder.attribute("data-instant-state") == "connected"
        assert recorder.attribute("data-instant-cause") is None
        assert recorder.lines()[-1] == ("info", f"instant_signals: connected to {down.ws_url}.")
        assert recorder.page_errors == []
    finally:
        site.stop()
        down.stop()


def test_a_stale_hmac_key_is_named_with_its_fix(
        centrifugo, ports, tmp_path_factory, chromium, recorders):
    site = serve(tmp_path_factory, centrifugo, ports["stale_key"],
                 CENTRIFUGO_HMAC_KEY="a-stale-key-from-an-old-env-file-0123456789")
    try:
        recorder = Recorder(chromium, site.url)
        recorders.append(recorder)
        state = recorder.wait_for_cause("token_rejected")
        assert state["state"] == "reconnecting"
        assert recorder.attribute("data-instant-cause") == "token_rejected"
        assert_said_once(recorder, lambda: recorder.websockets, "error",
                         "Centrifugo rejected the connection token", "3500",
                         "CENTRIFUGO_HMAC_KEY", "client.token.hmac_secret_key",
                         "Fix: make them the same", "instant_signals.W016")
        # The page keeps asking with fresh tokens (a fixed key needs no reload).
        assert recorder.token_requests >= 1 + RETRIES
    finally:
        site.stop()


def test_a_missing_include_of_the_urls_is_named_with_its_fix(
        centrifugo, ports, tmp_path_factory, chromium, recorders):
    site = serve(tmp_path_factory, centrifugo, ports["no_urls"],
                 ROOT_URLCONF="support.pages_without_instant")
    try:
        recorder = Recorder(chromium, site.url)
        recorders.append(recorder)
        state = recorder.wait_for_cause("endpoint_not_found")
        assert state["state"] == "reconnecting"
        assert recorder.attribute("data-instant-cause") == "endpoint_not_found"
        assert_said_once(recorder, lambda: recorder.token_requests, "error",
                         "GET /instant/get_token/ answered 404",
                         "instant_signals.urls is not mounted at /instant/",
                         'Fix: add path("instant/", include("instant_signals.urls"))')
        assert recorder.websockets == 0
    finally:
        site.stop()


def test_a_port_the_allowed_origins_do_not_list_is_named_with_its_fix(
        centrifugo, ports, tmp_path_factory, chromium, recorders):
    site = serve(tmp_path_factory, centrifugo, ports["other_port"])
    origin = f"http://127.0.0.1:{ports['other_port']}"
    try:
        recorder = Recorder(chromium, site.url)
        recorders.append(recorder)
        state = recorder.wait_for_cause("origin_refused")
        assert state["state"] == "reconnecting"
        assert origin in state["reason"] and origin in state["fix"]
        assert recorder.attribute("data-instant-cause") == "origin_refused"
        assert_said_once(recorder, lambda: recorder.websockets, "error",
                         f"Centrifugo answers at {centrifugo.ws_url} but refused",
                         f"origin {origin}", "client.allowed_origins",
                         f"Fix: add it (python manage.py installws --origin {origin}",
                         "restart Centrifugo")
    finally:
        site.stop()
