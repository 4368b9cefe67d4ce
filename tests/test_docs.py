"""The documentation site: it builds with ``mkdocs build --strict``, the tutorial's code runs, and
Chromium shows the built pages from loopback alone.

* The build is ``scripts/docs build`` (its own virtualenv with the ``docs`` extra), as in CI.
* Part 1 of the tutorial is the README's quick start, included with snippet markers: this test
  checks that the tutorial includes exactly the README blocks ``tests/test_first_hour.py``
  runs, in its order, and that the built page shows their code. Parts 2 and 3 (a private
  per-user channel, a custom ``publish()``) are run here from the tutorial's own code blocks,
  in a fresh ``startproject`` with a real Centrifugo and ``runserver``, and checked in Chromium
  with a logged-in and an anonymous window.
* Every other code block of the tutorial must be one of the kinds this test runs (a file to
  write, a ``manage.py shell`` session, terminal commands), so none can drift unseen.

Artifacts: ``docs-build.json`` (build time, pages and their word counts), screenshots of the
built tutorial and settings reference pages, and of the tutorial's page after part 3.
"""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import ARTIFACTS, need
from tests.test_first_hour import (  # noqa: F401
    CHROMIUM, Site, chromium, follow_readme, readme_block, readme_blocks)

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
TUTORIAL = DOCS / "tutorial.md"
# The README blocks tests/test_first_hour.py runs, in the order a reader meets them.
README_BLOCKS = ["install", "app", "settings", "urls", "model", "template", "commands", "shell"]
# Tutorial blocks nobody needs to run: making the virtualenv the README's pip runs in.
NOT_RUN = {"python -m venv .venv\n. .venv/bin/activate\n"}
PASSWORD = "ann-tutorial-pw"

pytestmark = pytest.mark.slow


# -- the tutorial's blocks -----------------------------------------------------------------------

@dataclass
class Block:
    lang: str
    title: str
    code: str


FENCE = re.compile(r'^```(?P<lang>[a-z]*)(?: title="(?P<title>[^"]*)")?\n(?P<code>.*?)^```\n',
                   re.S | re.M)
SNIPPET = re.compile(r'^--8<-- "README\.md:(?P<name>[a-z_]+)"$', re.M)


def tutorial_blocks() -> list[Block]:
    return [Block(m["lang"], m["title"] or "", m["code"])
            for m in FENCE.finditer(TUTORIAL.read_text())]


def kind_of(block: Block) -> str:
    """What this test does with a block: write a file, run shell code, run commands, nothing."""
    if block.title == "terminal" and block.lang == "bash":
        return "terminal"
    if block.title == "python manage.py shell" and block.lang == "python":
        return "shell"
    if block.title and block.lang in ("python", "django") and "/" in block.title:
        return "append" if block.title.endswith(" (at the end)") else "file"
    if block.lang == "json":
        return "shown"  # an envelope the page receives: checked against the real one below
    if block.code in NOT_RUN:
        return "not run"
    return "unknown"


def test_the_tutorial_includes_exactly_the_readme_blocks_of_the_first_hour_test(built_site):
    text = TUTORIAL.read_text()
    assert SNIPPET.findall(text) == README_BLOCKS
    # test_first_hour follows every README block in this order (follow_readme and LATER).
    assert [b.name for b in readme_blocks()] == README_BLOCKS
    # The built page shows the README's code itself, not a copy that could drift.
    page = visible_text((built_site["dir"] / "tutorial" / "index.html").read_text())
    for name in README_BLOCKS:
        for line in readme_block(name).strip().splitlines():
            assert " ".join(line.split()) in page, (name, line)
    unknown = [b for b in tutorial_blocks() if kind_of(b) == "unknown"]
    assert unknown == [], "tutorial blocks this test would not run: give them a title"


def visible_text(page: str) -> str:
    text = re.sub(r"<[^>]+>", "", page)
    return " ".join(html.unescape(text).split())


# -- the site --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    started = time.monotonic()
    result = subprocess.run([str(REPO / "scripts" / "docs"), "build", "--site-dir", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    seconds = round(time.monotonic() - started, 1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    # mkdocs alone (the venv is ready now): the number CI's "mkdocs build --strict" step costs
    started = time.monotonic()
    again = subprocess.run([str(REPO / ".venv-docs" / "bin" / "mkdocs"), "build", "--strict",
                            "--quiet", "--site-dir", str(out)],
                           cwd=REPO, capture_output=True, text=True, timeout=900)
    build_seconds = round(time.monotonic() - started, 1)
    assert again.returncode == 0, again.stderr[-6000:]
    return {"dir": out, "log": result.stderr, "seconds": seconds, "build_seconds": build_seconds}


def page_words(site: Path) -> dict[str, int]:
    """Words per page as a reader sees them: the built page's article (README snippets and the
    generated API reference included, navigation left out)."""
    counts = {}
    for path in sorted(DOCS.rglob("*.md")):
        name = str(path.relative_to(DOCS))
        built = name[:-3] + ".html" if path.name == "index.md" else name[:-3] + "/index.html"
        page = (site / built).read_text()
        article = re.search(r"<article[^>]*>(.*?)</article>", page, re.S)
        assert article, built
        counts[name] = len(re.findall(r"[\w$@'/.:-]*\w[\w$@'/.:-]*",
                                      visible_text(article.group(1)).replace("¶", "")))
    return counts


def test_the_site_builds_strictly_without_a_warning(built_site):
    assert not re.search(r"^(WARNING|ERROR)", built_site["log"], re.M), built_site["log"]
    for page in ("index.html", "tutorial/index.html", "reference/settings/index.html",
                 "reference/python-api/index.html", "explanation/architecture/index.html",
                 "deployment/index.html"):
        assert (built_site["dir"] / page).is_file(), page
    api = (built_site["dir"] / "reference" / "python-api" / "index.html").read_text()
    for name in ("BroadcastRegistry", "Declaration", "Relay", "capture_broadcasts",
                 "BroadcastQuerySet"):
        assert f'id="instant_signals.' in api and name in api, name
    words = page_words(built_site["dir"])
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "docs-build.json").write_text(json.dumps({
        "scripts/docs build seconds (venv check included)": built_site["seconds"],
        "mkdocs build --strict seconds": built_site["build_seconds"],
        "pages": len(words), "words": sum(words.values()), "words per page": words,
    }, indent=2))


def test_the_architecture_page_maps_every_module():
    """Its module map names every module of the package, and nothing else (as the README's)."""
    text = (DOCS / "explanation" / "architecture.md").read_text()
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    listed = {m.replace("/", ".") for m in re.findall(r"^\| `([a-z_./]+)` \|", section, re.M)}
    listed = {m for m in listed if not m.startswith(("static.", "templates."))}
    package = REPO / "instant_signals"
    wanted = set()
    for path in package.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        name = ".".join(path.relative_to(package).with_suffix("").parts)
        if name.endswith("__init__") and name != "__init__":
            name = name.removesuffix(".__init__")
            if name in ("management", "management.commands", "templatetags"):
                continue
        wanted.add(name)
    assert sorted(wanted - listed) == [], "modules missing from the architecture page"
    assert sorted(listed - wanted) == [], "the architecture page names modules that do not exist"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served_site(built_site):
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 partial(_Quiet, directory=str(built_site["dir"])))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path, shot, heading", [
    ("/tutorial/", "docs-tutorial.png", "Tutorial: a live page in a new project"),
    ("/reference/settings/", "docs-reference-settings.png", "Settings and system checks"),
])
def test_built_pages_render_from_loopback_alone(served_site, chromium, path, shot, heading):
    page = chromium.new_page(viewport={"width": 1280, "height": 1000})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        response = page.goto(served_site + path)
        assert response is not None and response.ok
        page.wait_for_load_state("networkidle")
        assert page.locator("h1").first.inner_text().strip().removesuffix("¶") == heading
        # Material's search index loads in a worker: the site's own JavaScript works offline
        page.wait_for_function("() => !!document.querySelector('.md-search__input')")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / shot))
    finally:
        page.close()
    assert errors == [], errors
    foreign = [u for u in requests if urlsplit(u).hostname not in ("127.0.0.1", None)
               and not u.startswith(("data:", "blob:"))]
    assert foreign == [], f"the built site needs the network: {foreign}"


@pytest.mark.parametrize("path, least", [("/explanation/performance/", 11),
                                         ("/explanation/architecture/", 1)])
def test_the_pictures_show_from_loopback_alone(served_site, chromium, path, least):
    """The charts and the diagram are images of the built site: each one loads and has a size
    (no CDN, no script), and what would be read aloud for it is there."""
    page = chromium.new_page(viewport={"width": 1280, "height": 1000})
    try:
        response = page.goto(served_site + path)
        assert response is not None and response.ok
        page.wait_for_load_state("networkidle")
        images = page.evaluate("""() => [...document.querySelectorAll("article img")]
            .filter((i) => i.src.endsWith(".svg"))
            .map((i) => ({src: i.src, alt: i.alt, width: i.naturalWidth, done: i.complete}))""")
    finally:
        page.close()
    assert len(images) >= least, images
    for image in images:
        assert image["done"] and image["width"] > 0 and image["alt"], image


def test_the_diagram_names_every_path_between_browser_django_and_centrifugo():
    import xml.etree.ElementTree as ET

    path = DOCS / "assets" / "diagrams" / "browser-django-centrifugo.svg"
    root = ET.parse(path).getroot()  # well-formed, or this raises
    words = " ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for name in ("get_token/", "subscribe/", "collection/", "WebSocket", "/connection/websocket",
                 "/api/batch", "relay_outbox", "history", "COMMIT"):
        assert name in words, name
    page = (DOCS / "explanation" / "architecture.md").read_text()
    assert "](../assets/diagrams/browser-django-centrifugo.svg)" in page


# -- parts 2 and 3 of the tutorial, run ------------------------------------------------------------

class TutorialSite(Site):
    """test_first_hour's runner of README commands, plus what the tutorial's terminal blocks do:
    a project made with django-admin, createsuperuser without prompts (the password comes from
    the environment), and servers that are started again replace the running ones."""

    def __init__(self, site: dict):
        super().__init__(site)
        self.root = site["root"]
        self.by_command: dict[str, subprocess.Popen] = {}

    def run(self, line: str) -> None:
        line = line.strip()
        if not line or line.startswith("#"):
            return
        words = shlex.split(line)
        if words[0] == "django-admin":
            subprocess.run(words, cwd=self.root, env=self.env, check=True)
            return
        if words[0] == "cd":
            assert self.root / words[1] == self.project, line
            return
        if words[2:3] == ["createsuperuser"]:
            env = {**self.env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
            result = subprocess.run([str(self.python), *words[1:], "--noinput"], cwd=self.project,
                                    env=env, capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr[-2000:]
            return
        command = words[2]
        if command in ("runws", "runserver"):
            self.stop_one(command)
        count = len(self.servers)
        super().run(line)
        if len(self.servers) > count:
            self.by_command[command] = self.servers[-1]

    def stop_one(self, command: str) -> None:
        server = self.by_command.pop(command, None)
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(15)
        if server is not None:
            self.servers.remove(server)

    def terminal(self, block: Block) -> None:
        for line in block.code.splitlines():
            self.run(line)

    def write(self, block: Block, append: bool = False) -> None:
        name = block.title.removesuffix(" (at the end)")
        target = self.project / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if append:
            target.write_text(target.read_text() + "\n" + block.code)
        else:
            target.write_text(block.code)

    def shell(self, code: str) -> str:
        result = subprocess.run([str(self.python), "manage.py", "shell"], input=code,
                                cwd=self.project, env=self.env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        return result.stdout

    def wait_until_live(self) -> None:
        self.wait_for_port(self.ws)
        self.wait_for_port(self.web)


def open_tasks(browser, site: TutorialSite, login: bool):
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    base = f"http://127.0.0.1:{site.web}"
    if login:
        page.goto(f"{base}/admin/login/?next=/tasks/")
        page.fill("#id_username", "ann")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"{base}/tasks/")
    else:
        page.goto(f"{base}/tasks/")
    page.wait_for_function("() => performance.getEntriesByType('resource').some("
                           "e => e.name.includes('/instant/collection/?channel=tasks'))",
                           timeout=20_000)
    return context, page, errors


def text_of(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def test_parts_two_and_three_run_in_a_fresh_project(tmp_path, chromium):
    need(Path(CHROMIUM).exists(), "Debian's chromium (/usr/bin/chromium)")
    blocks = tutorial_blocks()
    kinds = [kind_of(b) for b in blocks]
    part2 = kinds.index("file", kinds.index("terminal") + 1)  # the new todo/models.py
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "CENTRIFUGO_BINARY")
           and not k.startswith("CENTRIFUGO_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    site = TutorialSite({"root": tmp_path, "project": tmp_path / "mysite",
                         "python": Path(sys.executable), "env": env})
    contexts = []
    try:
        # Part 1, as the README and the first-hour test have it (this project, this venv).
        site.terminal(blocks[kinds.index("terminal")])
        follow_readme(site.project, site.python, site.env,
                      install=lambda line: None)  # this venv has the package
        for line in readme_block("commands").strip().splitlines():
            site.run(line)
        site.wait_until_live()

        # Part 2: the files, then the terminal block (servers stopped first, as it says).
        rest = list(zip(kinds[part2:], blocks[part2:]))
        shells = [b.code for k, b in rest if k == "shell"]
        assert len(shells) == 3, "the tutorial's shell sessions changed: update this test"
        for kind, block in rest:
            if kind == "file" and block.title != "todo/notify.py":
                site.write(block)
        site.stop()
        site.by_command.clear()
        site.terminal(next(b for k, b in rest if k == "terminal"))
        site.wait_until_live()

        ann_context, ann, ann_errors = open_tasks(chromium, site, login=True)
        anon_context, anon, anon_errors = open_tasks(chromium, site, login=False)
        contexts += [ann_context, anon_context]
        ann.wait_for_function("() => document.querySelector('#who').textContent"
                              " === 'Logged in as ann'", timeout=15_000)
        ann.wait_for_function("() => performance.getEntriesByType('resource').some("
                              "e => e.name.includes('/instant/collection/?channel=%24user%3A'))",
                              timeout=20_000)
        assert text_of(anon, "#who") == "Anonymous"

        site.shell(shells[0])  # ann gets a task: only her page lists it
        ann.wait_for_function("() => document.querySelector('#mine').textContent"
                              ".includes('Water the plants')", timeout=15_000)
        time.sleep(0.5)
        assert "Water the plants" not in text_of(anon, "body")
        assert "Water the plants" not in text_of(ann, "#tasks")

        site.shell(shells[1])  # taken away: leaves her list, enters the public one
        for page in (ann, anon):
            page.wait_for_function("() => document.querySelector('#tasks').textContent"
                                   ".includes('Water the plants')", timeout=15_000)
        ann.wait_for_function("() => !document.querySelector('#mine').textContent"
                              ".includes('Water the plants')", timeout=15_000)

        # Part 3: a message of our own, to ann's pages only.
        site.write(next(b for k, b in rest if k == "file" and b.title == "todo/notify.py"))
        site.shell(shells[2])
        ann.wait_for_function("() => document.querySelector('#news').textContent"
                              " === 'Your export is ready'", timeout=15_000)
        time.sleep(0.5)
        assert text_of(anon, "#news") == ""
        ARTIFACTS.mkdir(exist_ok=True)
        ann.screenshot(path=str(ARTIFACTS / "docs-tutorial-part3.png"))
        # The envelope the page shows in the tutorial is the one publish() sends.
        captured = site.shell("import json\nfrom instant_signals.testing import capture_broadcasts"
                              "\nwith capture_broadcasts() as published:\n"
                              + "".join(f"    {line}\n" for line in shells[2].splitlines())
                              + "print(json.dumps(published))\n")
        shown = json.loads(next(b.code for b in blocks if kind_of(b) == "shown"))
        assert json.loads(captured.strip().splitlines()[-1]) == [shown]
        assert ann_errors == [] and anon_errors == [], (ann_errors, anon_errors)
    finally:
        for context in contexts:
            context.close()
        site.stop()


def test_the_envelope_page_shows_versions_as_the_code_makes_them():
    """The examples' ``version`` has the digits of ``next_version()`` (microseconds: 16 now)."""
    from instant_signals.capture.changes import next_version

    page = Path(__file__).resolve().parent.parent / "docs" / "reference" / "envelope.md"
    text = page.read_text()
    shown = re.findall(r'"version": (\d+)', text)
    assert shown, "the envelope page shows no version"
    assert {len(v) for v in shown} == {len(str(next_version()))}
    assert all(int(v) < 2**53 for v in shown)


def test_the_reference_documents_only_the_stated_public_api():
    """Every ``::: module.name`` of docs/reference is public: re-exported by ``instant_signals``
    or in its module's ``__all__``; internals the package's own layers call are not shown."""
    import importlib

    import instant_signals

    reference = REPO / "docs" / "reference"
    text = "\n".join(page.read_text() for page in sorted(reference.glob("*.md")))
    documented = re.findall(r"^::: (instant_signals(?:\.\w+)*)$", text, re.M)
    assert documented
    not_public = []
    for target in documented:
        module_name, _, name = target.rpartition(".")
        try:
            module = importlib.import_module(target)
            continue  # a module: its docstring
        except ImportError:
            module = importlib.import_module(module_name)
        stated = set(getattr(module, "__all__", ()))
        if name not in stated and name not in instant_signals.__all__:
            not_public.append(target)
    assert not_public == [], "documented but not in __all__"
    page = (reference / "python-api.md").read_text()
    members = set(re.findall(r"^        - (\w+)$", page, re.M))
    for internal in ("changes", "seen", "seen_before", "publications", "revocations",
                     "channels_of"):
        assert internal not in members, f"{internal} is internal"
    assert "::: instant_signals.declarations.Seen" not in page
    assert "::: instant_signals.declarations.Change" not in page


# -- the changelog -------------------------------------------------------------------------------

KEEP_A_CHANGELOG_KINDS = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")


def changelog_sections(text: str) -> list[tuple[str, list[str]]]:
    """``[(version heading, [kind headings in order])]`` of a Keep a Changelog file."""
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("## "):
            sections.append((line[3:].strip(), []))
        elif line.startswith("### "):
            assert sections, f"{line!r} before any version heading"
            sections[-1][1].append(line[4:].strip())
    return sections


def test_the_changelog_can_become_a_release_section():
    """Keep a Changelog: an ``[Unreleased]`` section first, only the six kinds of change as its
    headings, each once and in the standard order, and a link for every version heading, so
    that renaming the heading is all a release needs."""
    text = (REPO / "CHANGELOG.md").read_text()
    sections = changelog_sections(text)
    assert sections and sections[0][0] == "[Unreleased]", sections[:1]
    for version, kinds in sections:
        assert kinds, f"{version}: no entries"
        unknown = [k for k in kinds if k not in KEEP_A_CHANGELOG_KINDS]
        assert not unknown, f"{version}: headings {unknown} are not Keep a Changelog's"
        assert len(set(kinds)) == len(kinds), f"{version}: a heading repeats: {kinds}"
        assert kinds == sorted(kinds, key=KEEP_A_CHANGELOG_KINDS.index), kinds
        label = version.split(" ")[0]
        assert re.search(rf"^{re.escape(label)}: https://", text, re.M), \
            f"no link definition for {label}"


def test_the_changelog_check_can_fail():
    bad = "## [Unreleased]\n### Changed (breaking)\n- x\n### Added\n- y\n"
    version, kinds = changelog_sections(bad)[0]
    assert [k for k in kinds if k not in KEEP_A_CHANGELOG_KINDS] == ["Changed (breaking)"]
