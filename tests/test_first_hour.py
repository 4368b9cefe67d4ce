"""The first hour of a new user: the wheel alone, a fresh ``startproject``, the README followed.

Everything the user types comes out of README.md itself (the blocks between its
``--8<-- [start:NAME]`` / ``[end:NAME]`` markers), so the README cannot drift from what works.
The test changes only what a machine shared with other tests needs: free ports instead of 8000
and 8427 (``--port``/``--origin`` added to ``installws``, an address added to ``runserver``),
and processes started in the background instead of in terminals. Then Chromium opens the page
and the README's shell commands must show up on it, once with the default static files storage
and once with ``ManifestStaticFilesStorage`` after ``collectstatic``.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS, need
from support.processes import free_port

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.slow


def readme_block(name: str) -> str:
    """The code of README block ``name`` (between its snippet markers), without the fence."""
    text = (REPO / "README.md").read_text()
    found = re.search(rf"<!-- --8<-- \[start:{name}\] -->\n```[a-z]*\n(.*?)```\n"
                      rf"<!-- --8<-- \[end:{name}\] -->", text, re.S)
    assert found, f"README.md has no block {name!r}"
    return found.group(1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    need(subprocess.run([sys.executable, "-m", "build", "--version"],
                        capture_output=True).returncode == 0, "python -m build")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return next(out.glob("*.whl"))


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory):
    """A virtualenv with only the wheel (and what pip resolves for it), and a fresh project
    with the README's pieces in it."""
    root = tmp_path_factory.mktemp("first-hour")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = readme_block("install").strip()
    assert install == "pip install django-instant-signals"
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", str(wheel)],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "CENTRIFUGO_BINARY")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    project = root / "mysite"
    project.mkdir()
    subprocess.run([str(venv / "bin" / "django-admin"), "startproject", "mysite", str(project)],
                   check=True, env=env)
    subprocess.run([str(python), "manage.py", "startapp", "todo"], cwd=project, check=True,
                   env=env)
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\n" + readme_block("settings")
                        + '\nINSTALLED_APPS += ["todo"]  # the app of the model\n')
    urls = project / "mysite" / "urls.py"
    urls.write_text(urls.read_text() + "\n" + readme_block("urls"))
    (project / "todo" / "models.py").write_text(readme_block("model"))
    template = project / "todo" / "templates" / "todo" / "tasks.html"
    template.parent.mkdir(parents=True)
    template.write_text(readme_block("template"))
    return {"root": root, "project": project, "python": python, "env": env}


class Site:
    """The README's commands, run like a user runs them (servers in the background)."""

    def __init__(self, site: dict):
        self.project, self.python, self.env = site["project"], site["python"], dict(site["env"])
        self.web, self.ws = free_port(), free_port()
        self.servers: list[subprocess.Popen] = []
        self.log = site["root"] / "servers.log"

    def run(self, line: str) -> None:
        if line.startswith("set -a;"):  # the env file the README loads into the shell
            self.load_env(self.project / ".env")
            return
        words = shlex.split(line)
        background = words[-1] == "&"
        words = [w for w in words if w != "&"]
        assert words[:2] == ["python", "manage.py"], line
        command = words[2]
        if command == "installws":
            words += ["--port", str(self.ws), "--origin", f"http://127.0.0.1:{self.web}"]
        if command == "runserver":
            words += [f"127.0.0.1:{self.web}", "--noreload"]
            background = True
        argv = [str(self.python), *words[1:]]
        if background:
            log = open(self.log, "ab")
            self.servers.append(subprocess.Popen(argv, cwd=self.project, env=self.env,
                                                 stdout=log, stderr=subprocess.STDOUT,
                                                 start_new_session=True))
            return
        result = subprocess.run(argv, cwd=self.project, env=self.env, capture_output=True,
                                text=True, timeout=900)
        assert result.returncode == 0, f"{line}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"

    def load_env(self, path: Path) -> None:
        for entry in path.read_text().splitlines():
            if entry and not entry.startswith("#"):
                name, value = entry.split("=", 1)
                self.env[name] = value

    def wait_for_port(self, port: int) -> None:
        import socket

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for server in self.servers:
                assert server.poll() is None, self.log.read_text()[-3000:]
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        pytest.fail(f"nothing listens on {port}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        for server in self.servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
        self.servers = []


@pytest.fixture(scope="module")
def chromium():
    need(Path(CHROMIUM).exists(), "Debian's chromium (/usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


def watch_the_page(site: Site, chromium, shot: str, title: str, news: str) -> None:
    page = chromium.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    # every failed request but the favicon a new project does not have
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    try:
        response = page.goto(f"http://127.0.0.1:{site.web}/tasks/")
        assert response is not None and response.ok
        # live: the browser module connected and subscribed (its requests succeeded)
        try:
            page.wait_for_function("() => performance.getEntriesByType('resource').some("
                                   "e => e.name.includes('/instant/collection/'))",
                                   timeout=20_000)
        except Exception:
            pytest.fail(f"the page never loaded its collection; page errors: {errors}; "
                        f"servers: {site.log.read_text()[-3000:]}")
        page.wait_for_timeout(500)
        commands = readme_block("shell").strip().splitlines()
        site.run(commands[0].replace('title="Hello"', f'title="{title}"'))
        page.wait_for_function(f"() => document.querySelector('#tasks').textContent"
                               f".includes({title!r})", timeout=15_000)
        site.run(commands[1].replace('"Deployed"', f'"{news}"'))
        page.wait_for_function(f"() => document.querySelector('#news').textContent === {news!r}",
                               timeout=15_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / shot))
    finally:
        page.close()
    assert errors == [], errors


def test_the_readme_takes_a_new_project_to_a_live_page(site, chromium):
    running = Site(site)
    try:
        for line in readme_block("commands").strip().splitlines():
            running.run(line)
        running.wait_for_port(running.ws)
        running.wait_for_port(running.web)
        watch_the_page(running, chromium, "first-hour-default-storage.png", "Hello", "Deployed")
    finally:
        running.stop()

    # The same site with hashed static files after collectstatic, served from STATIC_ROOT by
    # WhiteNoise (runserver serves only unhashed files from the apps).
    pip = subprocess.run([str(site["python"]), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", "whitenoise"],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    settings = site["project"] / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + textwrap.dedent("""
        DEBUG = False
        ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
        MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")
        STATIC_ROOT = BASE_DIR / "staticfiles"
        STORAGES = {
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND":
                            "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
        }
    """))
    manifest = Site(site)
    manifest.load_env(site["project"] / ".env")
    try:
        manifest.run("python manage.py collectstatic --noinput")
        manifest.run(f"python manage.py installws --write-env .env")  # same keys, new ports
        manifest.load_env(site["project"] / ".env")
        manifest.run("python manage.py runws &")
        manifest.run("python manage.py runserver --nostatic")
        manifest.wait_for_port(manifest.ws)
        manifest.wait_for_port(manifest.web)
        watch_the_page(manifest, chromium, "first-hour-manifest-storage.png", "Hashed", "Again")
    finally:
        manifest.stop()
