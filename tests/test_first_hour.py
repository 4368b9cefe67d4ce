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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ARTIFACTS, need
from support.processes import free_port

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.slow


BLOCK = re.compile(r'<!-- --8<-- \[start:(?P<name>[a-z_]+)\] -->\n'
                   r'```(?P<lang>[a-z]*)(?: title="(?P<title>[^"]*)")?\n(?P<code>.*?)```\n'
                   r'<!-- --8<-- \[end:(?P=name)\] -->', re.S)
# The blocks a user types into a terminal once the servers are set up: the test runs them.
LATER = ("commands", "shell")


@dataclass
class ReadmeBlock:
    name: str
    lang: str
    title: str  # where a file block goes: "todo/models.py", "settings.py (at the end)"
    code: str


def readme_blocks() -> list[ReadmeBlock]:
    """README.md's marked blocks, in the order a reader meets them."""
    return [ReadmeBlock(m["name"], m["lang"], m["title"] or "", m["code"])
            for m in BLOCK.finditer((REPO / "README.md").read_text())]


def readme_block(name: str) -> str:
    """The code of README block ``name`` (between its snippet markers), without the fence."""
    found = [b.code for b in readme_blocks() if b.name == name]
    assert found, f"README.md has no block {name!r}"
    return found[0]


def follow_readme(project: Path, python: Path, env: dict[str, str], *, install: Any) -> None:
    """Do what the README says up to its server commands, literally and in its order: run its
    terminal blocks, write each file block where its title says (``settings.py`` and ``urls.py``
    are the project's own). ``install(line)`` runs the ``pip install`` line. A block the README
    does not say what to do with fails the test: every step a user needs is in the README."""
    package = project / project.name
    for block in readme_blocks():
        if block.name in LATER:
            continue
        if block.lang == "bash":
            for line in block.code.strip().splitlines():
                if line.startswith("pip install"):
                    install(line)
                    continue
                words = shlex.split(line)
                assert words[:2] == ["python", "manage.py"], line
                result = subprocess.run([str(python), *words[1:]], cwd=project, env=env,
                                        capture_output=True, text=True, timeout=300)
                assert result.returncode == 0, f"{line}\n{result.stdout}{result.stderr}"
            continue
        assert block.title, f"README block {block.name!r} does not say which file it goes in"
        name = block.title.removesuffix(" (at the end)")
        target = (package if name in ("settings.py", "urls.py") else project) / name
        if block.title.endswith(" (at the end)"):
            target.write_text(target.read_text() + "\n" + block.code)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code)


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

    def install(line: str) -> None:  # the README's pip line, with the wheel for the index
        assert line == "pip install django-instant-signals"
        if (venv / "bin" / "django-admin").exists():
            return  # installed already, for the project the README starts from
        pip = subprocess.run([str(python), "-m", "pip", "install", "-q",
                              "--disable-pip-version-check", str(wheel)],
                             capture_output=True, text=True, timeout=900)
        assert pip.returncode == 0, pip.stderr[-3000:]

    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "CENTRIFUGO_BINARY")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    project = root / "mysite"
    project.mkdir()
    # The user's existing project ("in an existing project", the README says).
    install("pip install django-instant-signals")
    subprocess.run([str(venv / "bin" / "django-admin"), "startproject", "mysite", str(project)],
                   check=True, env=env)
    follow_readme(project, python, env, install=install)
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
