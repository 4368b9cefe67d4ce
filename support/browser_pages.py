"""The test project served to a real Chromium: a Django child process on a loopback port.

Browser tests need a Django that answers while the test drives the browser and changes rows,
with a database shared by every process: ``SiteServer`` runs ``runserver`` of the test project
on a SQLite file (WAL) with the settings of ``tests/settings.py`` plus the Centrifugo the test
started, and runs code against the same database in child processes (``run``, ``spawn``).

This module is also the child's ``ROOT_URLCONF``: ``instant/`` (instant_signals.urls),
``admin/``, ``accounts/logout/`` (Django's ``LogoutView``), ``static/`` (the package's static files, with the import map's client) and ``/``, a
page that loads the browser module and exposes it as ``window.instantModule``.
"""

from __future__ import annotations

import json
import mimetypes
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.http import FileResponse, Http404, HttpResponse
from django.urls import include, path

from support.environment import need
from support.processes import CentrifugoProcess, free_port, start_centrifugo, stop_process

REPO = Path(__file__).resolve().parent.parent
STATIC = REPO / "instant_signals" / "static"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>instant_signals test page</title>
<link rel="icon" href="data:,">
<script type="importmap">
{"imports": {"centrifuge": "/static/instant_signals/vendor/centrifuge/index.mjs"}}
</script>
<script type="module">
import * as instantModule from "/static/instant_signals/instant.js";
window.instantModule = instantModule;
document.body.dataset.ready = "1";
if (window.instantReady) window.instantReady(instantModule);  // a test's init script
</script></head><body></body></html>"""


# -- the child's urls -----------------------------------------------------------------------------

def page(request: Any) -> HttpResponse:
    return HttpResponse(PAGE)


def static_file(request: Any, name: str) -> FileResponse:
    target = (STATIC / name).resolve()
    if STATIC not in target.parents or not target.is_file():
        raise Http404(name)
    kind = "text/javascript" if target.suffix in (".js", ".mjs") else (
        mimetypes.guess_type(target.name)[0] or "application/octet-stream")
    return FileResponse(open(target, "rb"), content_type=kind)


urlpatterns = [
    path("instant/", include("instant_signals.urls")),
    path("admin/", admin.site.urls),
    path("accounts/logout/", LogoutView.as_view(next_page="/")),  # the site's own logout
    path("static/<path:name>", static_file),
    path("", page),
]


# -- the server -----------------------------------------------------------------------------------

SETTINGS = """\
from tests.settings import *  # noqa: F401,F403

DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r},
                           "OPTIONS": {{"timeout": 30}}}}}}
ROOT_URLCONF = "support.browser_pages"
CENTRIFUGO_API_URL = {api_url!r}
CENTRIFUGO_WS_URL = {ws_url!r}
CENTRIFUGO_API_KEY = {api_key!r}
CENTRIFUGO_HMAC_KEY = {hmac_key!r}
INSTANT_SIGNALS = {{**INSTANT_SIGNALS, "TIMEOUT": (1.0, 5.0), **{extra!r}}}
INSTANT_SIGNALS["MODELS"] = {{**INSTANT_SIGNALS["MODELS"], **{models!r}}}
"""


class SiteServer:
    """``runserver`` of the test project against ``centrifugo``, on ``port``."""

    def __init__(self, workdir: Path, centrifugo: CentrifugoProcess, port: int, *,
                 settings: dict[str, Any] | None = None, models: dict[str, Any] | None = None,
                 overrides: dict[str, Any] | None = None):
        """``settings``: keys of INSTANT_SIGNALS; ``overrides``: Django settings set last (e.g. a
        stale ``CENTRIFUGO_HMAC_KEY``, another ``ROOT_URLCONF``)."""
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.centrifugo = centrifugo
        module = f"site_settings_{port}"
        (workdir / f"{module}.py").write_text(SETTINGS.format(
            db=str(workdir / f"db-{port}.sqlite3"), api_url=centrifugo.api_url,
            ws_url=centrifugo.ws_url, api_key=centrifugo.api_key, hmac_key=centrifugo.hmac_key,
            extra=settings or {}, models=models or {})
            + "".join(f"{name} = {value!r}\n" for name, value in (overrides or {}).items()))
        self.env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        self.env.update(DJANGO_SETTINGS_MODULE=module, PYTHONUNBUFFERED="1",
                        PYTHONPATH=os.pathsep.join([str(workdir), str(REPO)]))
        self.log_path = workdir / f"django-{port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> SiteServer:
        self.run("""
            from django.core.management import call_command
            from django.db import connection
            call_command("migrate", verbosity=0, interactive=False)
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
        """)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{self.port}",
             "--noreload", "--skip-checks"],
            cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not _port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"runserver did not start:\n{self.log()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        stop_process(self.process)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def _script(self, code: str) -> list[str]:
        prelude = "import django, json; django.setup()\n"
        return [sys.executable, "-c", prelude + textwrap.dedent(code)]

    def run(self, code: str, timeout: float = 120) -> str:
        """Run ``code`` with Django set up (a separate process, like ``manage.py shell``)."""
        result = subprocess.run(self._script(code), cwd=REPO, env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def spawn(self, code: str) -> subprocess.Popen:
        """Start ``code`` in the background; ``finish()`` waits for it."""
        return subprocess.Popen(self._script(code), cwd=REPO, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    @staticmethod
    def finish(process: subprocess.Popen, timeout: float = 120) -> str:
        out, err = process.communicate(timeout=timeout)
        assert process.returncode == 0, out + err
        return out

    def json(self, code: str) -> Any:
        """Run ``code``, which prints one JSON document last."""
        return json.loads(self.run(code).strip().splitlines()[-1])

    def users(self, *names: str, staff: tuple[str, ...] = ()) -> dict[str, str]:
        """Create users (password = name + "-pw"); their ids by name."""
        return self.json(f"""
            from django.contrib.auth.models import User
            ids = {{}}
            for name in {list(names)!r}:
                user = User.objects.create_user(name, password=name + "-pw",
                                                is_staff=name in {list(staff)!r})
                ids[name] = str(user.pk)
            print(json.dumps(ids))
        """)

    def session(self, username: str) -> str:
        """A session id of ``username``, as the site's own login would make."""
        return self.run(f"""
            from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
            from django.contrib.auth.models import User
            from django.contrib.sessions.backends.db import SessionStore
            user = User.objects.get(username={username!r})
            session = SessionStore()
            session[SESSION_KEY] = str(user.pk)
            session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
            session[HASH_SESSION_KEY] = user.get_session_auth_hash()
            session.create()
            print(session.session_key)
        """).split()[-1]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_site(binary: Path, workdir: Path, *, namespaces: dict[str, Any] | None = None,
               settings: dict[str, Any] | None = None, models: dict[str, Any] | None = None,
               **centrifugo_options: Any) -> tuple[SiteServer, CentrifugoProcess]:
    """A Centrifugo (config as installws writes it, the page's origin allowed) and the site."""
    from instant_signals.registry import broadcast_registry

    port = free_port()
    centrifugo = start_centrifugo(
        binary, workdir, namespaces={**broadcast_registry.namespaces(), **(namespaces or {})},
        allowed_origins=[f"http://127.0.0.1:{port}"], **centrifugo_options)
    try:
        site = SiteServer(workdir, centrifugo, port, settings=settings, models=models).start()
    except Exception:
        centrifugo.stop()
        raise
    return site, centrifugo


# -- Chromium -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium():
    need(Path(CHROMIUM).exists(), "Chromium (/usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(context: Any, url: str, errors: list[str] | None = None, *,
              wait: bool = True) -> Any:
    """A page of ``context`` with the browser module loaded (``window.instantModule``). A
    context's init script may define ``window.instantReady(module)``, called once it loaded.
    ``wait=False`` returns as soon as the navigation started (pages then load together)."""
    page = context.new_page()
    page.set_default_timeout(15_000)
    if errors is not None:
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(url, wait_until="load" if wait else "commit")
    if wait:
        page.wait_for_function("document.body.dataset.ready === '1'")
    return page


def logged_in_context(browser: Any, site: SiteServer, username: str | None) -> Any:
    """A browser context (its own cookies), logged in as ``username`` by a session cookie."""
    context = browser.new_context()
    if username:
        context.add_cookies([{"name": "sessionid", "value": site.session(username),
                              "url": site.url}])
    return context


def wait_until(page: Any, condition: Any, timeout: float) -> bool:
    """Let the page run until ``condition()`` holds or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        page.wait_for_timeout(50)
    return condition()
