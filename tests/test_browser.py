"""The browser module in a real headless Chromium.

The demo, started with ``scripts/demo`` as a user would: ``scripts/demo`` sets everything up
(its virtualenv, the vendored client, Centrifugo, the database and the demo users) and runs
Centrifugo and runserver on free loopback ports, with its database and config in a temporary
folder. Rows are changed from the server side with ``manage.py shell``; the pages must follow.
A screenshot of the live page (with its online list) is saved in ``test-artifacts/``.

Then the module's access rules against the test project (``support/browser_pages.py``), with
token lifetimes of a few seconds and the JSON login switched off (the site's own session):
a channel refused once is granted after the next token refresh when access came, a channel
taken away by the server (owner changed) ends, and a logout in another tab ends this tab's
private events (disconnect 4501, then fresh tokens) until someone logs in again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from support.browser_pages import chromium, start_site  # noqa: F401,F811
from support.browser_pages import open_page as open_test_page
from support.browser_pages import wait_until as run_until
from tests.conftest import ARTIFACTS, need
from support.processes import free_port

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SETUP_TIMEOUT = 600  # a fresh machine creates a virtualenv and runs npm ci first
WAIT_MS = 15_000
TOKEN_LIFETIME = 5  # seconds: short, so the page must refresh its tokens during the test

pytestmark = pytest.mark.slow


class Demo:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.port = free_port()
        self.ws_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.output = data_dir / "demo-output.log"
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        env.update(DEMO_PORT=str(self.port), DEMO_WS_PORT=str(self.ws_port),
                   DEMO_DATA_DIR=str(data_dir), DEMO_TOKEN_LIFETIME=str(TOKEN_LIFETIME))
        self.env = env
        self.process = subprocess.Popen(
            [str(REPO / "scripts" / "demo")], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=open(self.output, "wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SETUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"scripts/demo exited with {self.process.returncode}:\n{self.log()}")
            if "demo ready: " + self.url in self.log() and port_open(self.port):
                return
            time.sleep(0.2)
        pytest.fail(f"scripts/demo was not ready after {SETUP_TIMEOUT} s:\n{self.log()[-4000:]}")

    def shell(self, code: str) -> str:
        """Run ``code`` in the demo's ``manage.py shell`` (a separate process, like a user)."""
        python = REPO / os.environ.get("DEMO_VENV", ".venv-demo") / "bin" / "python"
        result = subprocess.run([str(python), "demo_project/manage.py", "shell", "-c", code],
                                cwd=REPO, env=self.env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def runserver(self, port: int) -> subprocess.Popen:
        """One more runserver of the demo (its database, its Centrifugo) on ``port``."""
        python = REPO / os.environ.get("DEMO_VENV", ".venv-demo") / "bin" / "python"
        process = subprocess.Popen(
            [str(python), "demo_project/manage.py", "runserver", f"127.0.0.1:{port}",
             "--noreload"], cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
            stdout=open(self.data_dir / f"runserver-{port}.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not port_open(port):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"runserver on {port} did not start")
            time.sleep(0.1)
        return process

    def stop(self) -> int | None:
        """SIGTERM to scripts/demo alone: it must stop Django and Centrifugo itself."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                pass
        return self.process.returncode

    def kill_all(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_closed(port: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not port_open(port):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def demo(tmp_path):
    need(Path(CHROMIUM).exists(), "Chromium (/usr/bin/chromium)")
    need(shutil.which("npm") is not None, "npm")
    started = Demo(tmp_path)
    try:
        started.wait_ready()
        yield started
    finally:
        code = started.stop()
        stopped = code is not None and wait_closed(started.port) and wait_closed(started.ws_port)
        started.kill_all()
    assert stopped, f"scripts/demo did not stop Django and Centrifugo on SIGTERM:\n{started.log()}"


@pytest.fixture
def browser():
    need(Path(CHROMIUM).exists(), "Chromium (/usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"])
        yield chromium
        chromium.close()


def wait_until(condition, timeout: float, page) -> bool:
    """Let the page run (its requests are recorded) until ``condition()`` or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        page.wait_for_timeout(100)  # runs Playwright's event loop, so request events arrive
    return condition()


def open_page(browser, url: str, errors: list):
    page = browser.new_context().new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.token_requests = []  # (path, body) of every get_token/ and subscribe/ call
    page.on("request", lambda request: page.token_requests.append(
        (request.url.split("/instant/")[-1], request.post_data))
        if "/instant/get_token/" in request.url or "/instant/subscribe/" in request.url else None)
    page.goto(url)
    page.wait_for_function("document.body.dataset.state === 'connected'")
    page.wait_for_function("document.querySelector('#state').textContent === 'live'")
    assert page.locator("#problem").is_hidden()
    page.wait_for_function("document.querySelector('#channels').textContent.includes('feed')")
    return page


ONLINE_ARE = """(names) => {
    const shown = [...document.querySelectorAll('#online .user')].map((s) => s.textContent);
    return shown.length === names.length
        && names.every((name) => shown.some((s) => s.startsWith(name)));
}"""


def log_in(page, username: str) -> None:
    page.fill("#login-form [name=username]", username)
    page.fill("#login-form [name=password]", f"{username}-demo")
    page.click("#login-form button[type=submit]")
    page.wait_for_function(f"document.querySelector('#who').textContent === '{username}'")


def test_demo_pages_follow_server_side_changes_and_keep_private_feeds_private(demo, browser):
    tag = uuid.uuid4().hex[:8]
    errors: list[str] = []
    anonymous = open_page(browser, demo.url, errors)
    alice = open_page(browser, demo.url, errors)

    # 1. A row created from `manage.py shell` shows up on both pages.
    demo.shell(f"from board.models import Note; Note.objects.create(text='shell note {tag}')")
    for page in (anonymous, alice):
        page.locator("#feed li", has_text=f"shell note {tag}").wait_for()

    # 2. Logging in through the page starts alice's private feed (and admin's staff feed).
    staff = open_page(browser, demo.url, errors)
    bob = open_page(browser, demo.url, errors)
    for page, username in ((alice, "alice"), (staff, "admin"), (bob, "bob")):
        log_in(page, username)
    staff.wait_for_function("document.querySelector('#channels').textContent.includes('$staff')")
    assert "$staff" not in bob.locator("#channels").text_content()

    # Who is online: the presence of the team channel, one entry per user, on every
    # logged-in page; anonymous visitors do not see it.
    for page in (alice, staff, bob):
        page.wait_for_function(ONLINE_ARE, arg=["admin", "alice", "bob"])
        page.locator("#team li.online", has_text="bob").wait_for()
    assert anonymous.locator("#online-box").is_hidden()
    assert anonymous.evaluate("window.demo.online") is None
    alice_id = demo.shell("from django.contrib.auth.models import User; "
                          "print(User.objects.get(username='alice').pk)").split()[-1]
    alice.wait_for_function(
        f"document.querySelector('#channels').textContent.includes('$user:{alice_id}')")

    # 3. A private task for alice, then a public note, from the server side.
    demo.shell("from board.models import Note, Task; from django.contrib.auth.models import User; "
               f"Task.objects.create(title='private task {tag}', "
               f"owner=User.objects.get(username='alice')); "
               f"Note.objects.create(text='sentinel {tag}')")
    task = alice.locator("#my-tasks li", has_text=f"private task {tag}")
    task.wait_for()
    staff.locator("#staff-log li", has_text=f"private task {tag}").wait_for()
    alice.locator("#feed li", has_text=f"sentinel {tag}").wait_for()
    # The anonymous page got the public note published after the task, but never the task.
    anonymous.locator("#feed li", has_text=f"sentinel {tag}").wait_for()
    received = anonymous.evaluate("window.demo.events")
    assert [e for e in received if e["channel"].startswith("$")] == []
    assert f"private task {tag}" not in anonymous.content()
    bob.locator("#feed li", has_text=f"sentinel {tag}").wait_for()
    assert f"private task {tag}" not in bob.content()  # another user's task
    assert any(e["channel"] == f"$user:{alice_id}" for e in alice.evaluate("window.demo.events"))

    # ...and cannot subscribe to alice's channel: the server refuses the subscription token.
    denied = anonymous.evaluate("""(channel) => new Promise((resolve) => {
        window.demo.instant.addListener("denied", (d) => resolve(d.error.status));
        window.demo.instant.subscribe(channel);
    })""", f"$user:{alice_id}")
    assert denied == 403
    assert f"$user:{alice_id}" not in anonymous.evaluate("window.demo.instant.subscribedChannels()")

    # 4. An update from the server side changes the row in place.
    demo.shell(f"from board.models import Task; t = Task.objects.get(title='private task {tag}'); "
               "t.done = True; t.save()")
    alice.wait_for_function(
        """(title) => [...document.querySelectorAll('#my-tasks li.done')]
                      .some((li) => li.textContent.includes(title))""", arg=f"private task {tag}")
    assert task.locator("input[type=checkbox]").is_checked()

    # 5. Another tab: a note posted through the anonymous page reaches alice's page.
    anonymous.fill("#note-form [name=text]", f"from the other tab {tag}")
    anonymous.click("#note-form button")
    alice.locator("#feed li", has_text=f"from the other tab {tag}").wait_for()

    # 6. An edit in the Django admin (a tab of the staff user's browser) reaches alice's page.
    admin_tab = staff.context.new_page()
    admin_tab.set_default_timeout(WAIT_MS)
    admin_tab.goto(f"{demo.url}admin/board/task/{task.get_attribute('data-pk')}/change/")
    admin_tab.fill("#id_title", f"renamed in the admin {tag}")
    admin_tab.click("input[name=_save]")
    alice.locator("#my-tasks li", has_text=f"renamed in the admin {tag}").wait_for()
    staff.locator("#staff-log li", has_text=f"renamed in the admin {tag}").wait_for()
    assert alice.locator("#my-tasks li", has_text=f"private task {tag}").count() == 0

    # 7. Tokens expire after a few seconds: the page refreshes them through get_token/ and
    #    subscribe/ (centrifuge-js' getToken) and the private feed keeps working.
    channel = f"$user:{alice_id}"
    refreshed = wait_until(lambda: sum(1 for path, body in alice.token_requests
                                       if path == "subscribe/" and channel in (body or "")) >= 2
                           and sum(1 for path, _ in alice.token_requests
                                   if path == "get_token/") >= 2,
                           timeout=4 * TOKEN_LIFETIME, page=alice)
    assert refreshed, alice.token_requests
    demo.shell("from board.models import Task; from django.contrib.auth.models import User; "
               f"Task.objects.create(title='after refresh {tag}', "
               f"owner=User.objects.get(username='alice'))")
    alice.locator("#my-tasks li", has_text=f"after refresh {tag}").wait_for()

    # 8. bob logs out: his page is anonymous again, and the others no longer see him online.
    bob.click("#logout")
    bob.wait_for_function("document.querySelector('#who').textContent === 'anonymous'")
    assert bob.locator("#my-section").is_hidden()
    for page in (alice, staff):
        page.wait_for_function(ONLINE_ARE, arg=["admin", "alice"])
    assert alice.locator("#team li.online", has_text="bob").count() == 0

    alice.screenshot(path=str(ARTIFACTS / "demo-live-page.png"), full_page=True)
    (ARTIFACTS / "demo-events.json").write_text(
        json.dumps(alice.evaluate("window.demo.events"), indent=1))
    assert errors == []

    # 9. The demo's runserver on a port its Centrifugo config does not list (installws
    #    --origin): the page says "not allowed", with the reason and the fix.
    port = free_port()
    other = demo.runserver(port)
    try:
        page = browser.new_context().new_page()
        page.set_default_timeout(WAIT_MS)
        refused: list[str] = []
        page.on("pageerror", lambda exc: refused.append(str(exc)))
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.querySelector('#state').textContent === 'not allowed'")
        problem = page.locator("#problem").text_content()
        assert f"origin http://127.0.0.1:{port} is most likely not in" in problem, problem
        assert f"Fix: add it (python manage.py installws --origin http://127.0.0.1:{port}" in problem
        assert page.evaluate("document.documentElement.dataset.instantCause") == "origin_refused"
        page.screenshot(path=str(ARTIFACTS / "demo-not-allowed.png"))
        assert refused == []
    finally:
        other.terminate()
        other.wait(30)


# -- access rules of the browser module, against the test project ---------------------------------

LIFETIME = 3  # seconds: connection and subscription tokens, so refreshes happen during the test
REFRESH_BOUND = LIFETIME + 3  # a change of access reaches the page by the next refresh


@pytest.fixture(scope="module")
def site(centrifugo_binary, tmp_path_factory):
    site, centrifugo = start_site(
        centrifugo_binary, tmp_path_factory.mktemp("browser"),
        settings={"CONNECTION_TOKEN_LIFETIME": LIFETIME, "SUBSCRIPTION_TOKEN_LIFETIME": LIFETIME,
                  "LOGIN_VIEW": False})
    site.ids = site.users("alice", "bob")
    yield site
    site.stop()
    centrifugo.stop()


def record(name: str, value) -> None:
    """Measured numbers, for the docs: test-artifacts/browser-access.json."""
    path = ARTIFACTS / "browser-access.json"
    found = json.loads(path.read_text()) if path.exists() else {}
    found[name] = value
    path.write_text(json.dumps(found, indent=1) + "\n")


def session_context(browser, site, username):
    context = browser.new_context()
    context.add_cookies([{"name": "sessionid", "value": site.session(username), "url": site.url}])
    return context


START = """async ({ collections, channels }) => {
  const { Instant } = window.instantModule;
  const instant = new Instant({ centrifuge: { minReconnectDelay: 100, maxReconnectDelay: 1000 } });
  const t = { instant, lists: {}, events: [], denied: [], tokens: 0 };
  for (const channel of collections) {
    t.lists[channel] = instant.collection(channel, { model: "testapp.task" });
  }
  instant.on("testapp.task", "*", (data, envelope) => {
    t.events.push([envelope.channel, data.event, data.pk]);
  });
  instant.addListener("denied", (d) => t.denied.push([d.channel, d.error.status]));
  const fetchTokens = instant.fetchTokens.bind(instant);
  instant.fetchTokens = () => { t.tokens += 1; return fetchTokens(); };
  window.t = t;
  await instant.start();
  for (const channel of channels) instant.subscribe(channel);
}"""


def list_of(page, channel):
    return page.evaluate("""(channel) => {
        const c = window.t.lists[channel];
        const rows = c.rows.map((r) => [r.pk, r.fields.title, r.fields.owner_id]);
        return { state: c.state, rows };
    }""", channel)


def test_refused_channel_is_granted_at_the_next_token_refresh(site, chromium):
    ids = site.ids
    pks = site.json(f"""
        from tests.testapp.models import Task
        print(json.dumps([Task.objects.create(title=f"task {{i}}", owner_id={ids["alice"]}).pk
                          for i in range(2)]))
    """)
    listed, subscribed = f"$task:{pks[0]}", f"$task:{pks[1]}"
    errors: list[str] = []
    alice = open_test_page(session_context(chromium, site, "alice"), site.url, errors)
    alice.evaluate(START, {"collections": [listed], "channels": [subscribed]})
    bob = open_test_page(session_context(chromium, site, "bob"), site.url, errors)
    bob.evaluate(START, {"collections": [listed], "channels": [subscribed]})

    alice.wait_for_function(f"window.t.lists['{listed}'].state === 'live'")
    assert list_of(alice, listed)["rows"] == [[pks[0], "task 0", int(ids["alice"])]]
    # bob may read neither: collection/ and subscribe/ refuse (403), nothing is retried yet.
    bob.wait_for_function("window.t.denied.length === 2")
    assert sorted(bob.evaluate("window.t.denied")) == sorted([[listed, 403], [subscribed, 403]])
    assert list_of(bob, listed) == {"state": "denied", "rows": []}

    # Both tasks go to bob. alice's subscriptions end at once (server unsubscribe).
    changed = time.monotonic()
    site.run(f"""
        from tests.testapp.models import Task
        for task in Task.objects.filter(pk__in={pks!r}):
            task.owner_id = {ids["bob"]}
            task.save()
    """)
    alice.wait_for_function(f"window.t.lists['{listed}'].state === 'denied'")
    assert list_of(alice, listed)["rows"] == []
    assert not any(c.startswith("$task:") for c in alice.evaluate("t.instant.subscribedChannels()"))

    # bob's page asks again at its next connection token refresh, and now gets both.
    tokens = bob.evaluate("window.t.tokens")
    assert run_until(bob, lambda: list_of(bob, listed)["state"] == "live"
                     and subscribed in bob.evaluate("t.instant.subscribedChannels()"),
                     REFRESH_BOUND + 2)
    granted_after = time.monotonic() - changed
    assert granted_after < REFRESH_BOUND, granted_after
    record("access_granted_after_owner_change_s", round(granted_after, 2))
    assert bob.evaluate("window.t.tokens") > tokens  # through a refresh, not a reload
    assert list_of(bob, listed)["rows"] == [[pks[0], "task 0", int(ids["bob"])]]
    site.run(f"""
        from tests.testapp.models import Task
        task = Task.objects.get(pk={pks[1]}); task.title = "renamed"; task.save()
    """)
    bob.wait_for_function("(channel) => window.t.events.some((e) => e[0] === channel "
                          "&& e[1] === 'updated')", arg=subscribed)
    assert [e for e in errors if "403" not in e] == []


def test_logout_in_another_tab_ends_private_events_here(site, chromium):
    """The other tab logs out through the site's own page (Django's LogoutView): Centrifugo
    disconnects every connection of alice with ACCESS_CHANGED (4501, terminal for centrifuge-js);
    this tab asks get_token/ for fresh tokens and reconnects itself, as an anonymous visitor:
    public events still arrive, private ones no more."""
    ids = site.ids
    context = session_context(chromium, site, "alice")
    errors: list[str] = []
    mine = "$user:{user}"
    this_tab, other_tab = (open_test_page(context, site.url, errors) for _ in range(2))
    for page in (this_tab, other_tab):
        page.evaluate(START, {"collections": [mine], "channels": []})
        page.wait_for_function(f"window.t.lists['{mine}'].state === 'live'")
    this_tab.evaluate("""() => {
        window.t.states = [];
        window.t.instant.addListener("state", (e) => window.t.states.push(
            [e.state, e.ctx && e.ctx.code, window.t.tokens, window.t.instant.user]));
    }""")
    assert this_tab.evaluate("window.t.instant.user") == ids["alice"]
    assert f"$user:{ids['alice']}" in this_tab.evaluate("t.instant.subscribedChannels()")
    site.run(f"""
        from tests.testapp.models import Task
        Task.objects.create(title="before logout", owner_id={ids["alice"]})
    """)
    this_tab.wait_for_function(f"window.t.lists['{mine}'].size >= 1")

    logged_out = time.monotonic()
    status = other_tab.evaluate("""async () => {
        const answer = await fetch("/accounts/logout/", { method: "POST", redirect: "manual",
            headers: { "X-CSRFToken": window.t.instant.csrfToken } });
        return answer.type === "opaqueredirect" ? 302 : answer.status;
    }""")
    assert status == 302
    this_tab.wait_for_function("window.t.instant.user === '' && window.t.instant.state === 'connected'")
    record("other_tab_anonymous_after_logout_s", round(time.monotonic() - logged_out, 2))
    states = this_tab.evaluate("window.t.states")
    # disconnected by the server (not a token expiry, not centrifuge's own reconnect), then
    # connected again after one more get_token/
    disconnected = [s for s in states if s[0] == "disconnected"]
    assert disconnected and disconnected[0][1] == 4501, states
    assert states[-1][0] == "connected" and states[-1][2] > disconnected[0][2], states
    # The first connection after the disconnect is already anonymous: the server disconnected
    # once the session was gone, so get_token/ did not hand alice's tokens out again.
    after = states[states.index(disconnected[0]) + 1:]
    assert next(s for s in after if s[0] == "connected")[3] == "", states
    assert list_of(this_tab, mine) == {"state": "idle", "rows": []}
    assert not any(c.startswith("$") for c in this_tab.evaluate("t.instant.subscribedChannels()"))
    assert "tasks" in this_tab.evaluate("t.instant.subscribedChannels()")
    private = "window.t.events.filter((e) => e[0].startsWith('$')).length"
    events = this_tab.evaluate(private)
    site.run(f"""
        from tests.testapp.models import Task
        Task.objects.create(title="after logout", owner_id={ids["alice"]})
    """)
    # The public channel "tasks" shows the task; alice's private channel is not followed here.
    this_tab.wait_for_function("window.t.events.filter((e) => e[0] === 'tasks').length >= 2")
    this_tab.wait_for_timeout(300)
    assert this_tab.evaluate(private) == events

    # bob logs in (the site's own login, in this browser): at its next token refresh this tab
    # follows and shows bob's tasks.
    context.add_cookies([{"name": "sessionid", "value": site.session("bob"), "url": site.url}])
    site.run(f"""
        from tests.testapp.models import Task
        Task.objects.create(title="bob's own", owner_id={ids["bob"]})
    """)
    logged_in = time.monotonic()
    this_tab.wait_for_function(f"window.t.instant.user === '{ids['bob']}'",
                               timeout=REFRESH_BOUND * 1000)
    record("other_tab_follows_a_login_after_s", round(time.monotonic() - logged_in, 2))
    this_tab.wait_for_function("(mine) => window.t.lists[mine].rows.some((r) => "
                               "r.fields.title === \"bob's own\")", arg=mine)
    assert all(r[2] == int(ids["bob"]) for r in list_of(this_tab, mine)["rows"])
    assert [e for e in errors if "403" not in e] == []


def test_the_module_refreshes_its_tokens_before_centrifugo_ends_anything(site, chromium):
    """Tokens of LIFETIME seconds: over several lifetimes the page asks get_token/ and
    subscribe/ again and again, and its connection and private subscription never end (a token
    Centrifugo saw expire unrefreshed would end them: disconnect 3005 / unsubscribe)."""
    ids = site.ids
    errors: list[str] = []
    page = open_test_page(session_context(chromium, site, "alice"), site.url, errors)
    page.evaluate("""() => {
        window.asked = { get_token: 0, subscribe: 0 };
        const original = window.fetch;
        window.fetch = (url, options) => {
            for (const name of Object.keys(window.asked)) {
                if (String(url).includes(`/instant/${name}/`)) window.asked[name] += 1;
            }
            return original(url, options);
        };
    }""")
    page.evaluate(START, {"collections": [], "channels": []})
    page.evaluate("""() => {
        window.t.ended = [];
        window.t.instant.addListener("state", (e) => window.t.ended.push(["state", e.state]));
        window.t.instant.addListener("unsubscribed", (e) => window.t.ended.push(["unsub", e.channel]));
    }""")
    own = f"$user:{ids['alice']}"
    page.wait_for_function("(own) => window.t.instant.subscribedChannels().includes(own)",
                           arg=own)
    started = page.evaluate("({ ...window.asked })")
    # Three more connection refreshes and three more subscription refreshes, however long the
    # machine takes for them.
    page.wait_for_function("(s) => window.asked.get_token >= s.get_token + 3 && "
                           "window.asked.subscribe >= s.subscribe + 3", arg=started,
                           timeout=20 * LIFETIME * 1000)
    assert page.evaluate("window.t.ended") == []  # never disconnected, never unsubscribed
    site.run(f"""
        from tests.testapp.models import Task
        Task.objects.create(title="after the refreshes", owner_id={ids["alice"]})
    """)
    page.wait_for_function("(own) => window.t.events.some((e) => e[0] === own)", arg=own)
    record("refreshes_seen", page.evaluate("window.asked"))
    assert [e for e in errors if "403" not in e] == []
