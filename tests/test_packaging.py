"""Packaging: ``pip install`` of the wheel is enough to serve instant.js and its centrifuge client.

The sdist is built from a copy of the working tree as a fresh clone has it (tracked and untracked
files, nothing gitignored, so no vendored client yet: the build hook fetches it with npm). The
wheel is built from that sdist, as ``python -m build`` does, but with an ``npm`` on PATH that fails
when called: the sdist must carry the client. The vendored file is compared with an independently
``npm pack``-ed tarball whose sha512 is package-lock.json's. Then the wheel goes into a fresh
virtualenv (Django etc. from PyPI, through pip's cache) and a minimal project runs
``collectstatic`` with the default storage and with ManifestStaticFilesStorage, and renders the
import map.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import need

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
VENDOR = "instant_signals/static/instant_signals/vendor/centrifuge"
INSTANT_JS = "instant_signals/static/instant_signals/instant.js"
RUNTIME_DEPENDENCIES = {"Django>=4.2", "PyJWT>=2.6", "urllib3>=2.0", "asgiref>=3.6"}
NOT_IN_SDIST = ("tests/", "support/", "benchmarks/", "demo_project/", "scripts/", "node_modules/")


def run(command, *, ok=True, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=timeout, **kwargs)
    output = f"$ {' '.join(map(str, command))}\n{result.stdout}{result.stderr}"
    if ok:
        assert result.returncode == 0, output
    result.output = output
    return result


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def locked_centrifuge() -> tuple[str, str]:
    lock = json.loads((REPO / "package-lock.json").read_text())
    entry = lock["packages"]["node_modules/centrifuge"]
    return entry["version"], entry["integrity"]


def copy_checkout(dest: Path) -> Path:
    """The working tree as a fresh clone would have it: tracked and untracked, not ignored."""
    listing = run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others",
                   "--exclude-standard"])
    for name in filter(None, listing.stdout.split("\0")):
        source = REPO / name
        if source.is_file():  # skips files deleted in the working tree
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def only(paths) -> Path:
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


def untar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)


def build(*args, env=None, ok=True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "build", *args], env=env, ok=ok)


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    need(shutil.which("npm") is not None, "npm")
    need(shutil.which("git") is not None and (REPO / ".git").exists(), "git and a git checkout")
    need(importlib.util.find_spec("build") is not None, "the `build` package (test extra)")
    tmp = tmp_path_factory.mktemp("packaging")
    src = copy_checkout(tmp / "src")
    assert not (src / VENDOR).exists(), "the vendored client must be gitignored"
    out = tmp / "dist"
    build("--sdist", "--outdir", out, src)
    sdist = only(out.glob("*.tar.gz"))

    # The wheel from the sdist, with an npm that fails when called.
    untar(sdist, tmp / "unpacked")
    fake_bin = tmp / "no-npm"
    fake_bin.mkdir()
    (fake_bin / "npm").write_text("#!/bin/sh\necho 'npm must not be needed here' >&2\nexit 97\n")
    (fake_bin / "npm").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    build("--wheel", "--outdir", out, only((tmp / "unpacked").iterdir()), env=env)
    wheel = only(out.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        wheel_files = {name: zf.read(name) for name in zf.namelist()}
    with tarfile.open(sdist) as tar:
        sdist_files = {m.name.split("/", 1)[1]: tar.extractfile(m).read()
                       for m in tar.getmembers() if m.isfile()}
    return SimpleNamespace(tmp=tmp, src=src, sdist=sdist, wheel=wheel,
                           wheel_files=wheel_files, sdist_files=sdist_files)


@pytest.fixture(scope="module")
def npm_client(tmp_path_factory):
    """build/index.mjs and LICENSE of the npm tarball package-lock.json pins, fetched here."""
    need(shutil.which("npm") is not None, "npm")
    version, integrity = locked_centrifuge()
    tmp = tmp_path_factory.mktemp("npm-pack")
    run(["npm", "pack", f"centrifuge@{version}", "--pack-destination", tmp, "--silent"], cwd=tmp)
    tarball = only(tmp.glob("*.tgz"))
    assert sri(tarball.read_bytes()) in integrity.split()
    with tarfile.open(tarball) as tar:
        return {name: tar.extractfile(f"package/{member}").read()
                for name, member in [("index.mjs", "build/index.mjs"), ("LICENSE", "LICENSE")]}


def test_wheel_contents(dists):
    names = set(dists.wheel_files)
    for name in [f"{VENDOR}/index.mjs", f"{VENDOR}/LICENSE", f"{VENDOR}/VERSION", INSTANT_JS,
                 "instant_signals/py.typed",
                 "instant_signals/templates/instant_signals/importmap.html",
                 "instant_signals/templatetags/instant_signals.py",
                 "instant_signals/migrations/__init__.py",
                 "instant_signals/management/commands/__init__.py"]:
        assert name in names
    assert any(re.fullmatch(r"[^/]+\.dist-info/licenses/LICENSE", name) for name in names)
    assert not [name for name in names if not name.startswith("instant_signals/")
                and ".dist-info/" not in name]
    assert not [name for name in names if "__pycache__" in name or name.endswith(".tmp")]


def test_wheel_metadata(dists):
    metadata = next(data for name, data in dists.wheel_files.items()
                    if name.endswith(".dist-info/METADATA")).decode()
    headers = [line.split(": ", 1) for line in metadata.split("\n\n", 1)[0].splitlines()]
    values = lambda key: [value for name, value in headers if name == key]  # noqa: E731
    assert values("License-Expression") == ["MIT"]
    assert values("License-File") == ["LICENSE"]
    # exactly the runtime dependencies: development needs are dependency groups, not extras
    assert set(values("Requires-Dist")) == RUNTIME_DEPENDENCIES
    assert values("Provides-Extra") == []
    assert "Typing :: Typed" in values("Classifier")
    assert [c for c in values("Classifier") if c.startswith("Development Status ::")] == [
        "Development Status :: 4 - Beta"]
    # The description is the README as the package index shows it: no link may be relative
    # (it would point into the index's own site).
    description = metadata.split("\n\n", 1)[1]
    links = re.findall(r"\]\(([^)\s]+)\)", description)
    assert links and [link for link in links if not link.startswith(("https://", "#"))] == []
    from instant_signals import __version__
    assert values("Version") == [__version__]


def test_sdist_contents(dists):
    names = set(dists.sdist_files)
    for name in [f"{VENDOR}/index.mjs", f"{VENDOR}/LICENSE", f"{VENDOR}/VERSION", INSTANT_JS,
                 "LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "setup.py",
                 "package-lock.json", "build_support/vendor_centrifuge.py",
                 "instant_signals/py.typed"]:
        assert name in names
    assert not [name for name in names if name.startswith(NOT_IN_SDIST)]


def test_twine_check(dists):
    need(importlib.util.find_spec("twine") is not None, "the `twine` package (test extra)")
    result = run([sys.executable, "-m", "twine", "check", "--strict", dists.sdist, dists.wheel])
    assert result.stdout.count("PASSED") == 2, result.output


def test_vendored_client_is_the_locked_npm_tarball(dists, npm_client):
    version, integrity = locked_centrifuge()
    for name, content in npm_client.items():
        assert dists.wheel_files[f"{VENDOR}/{name}"] == content, name
        assert dists.sdist_files[f"{VENDOR}/{name}"] == content, name
    record = dists.wheel_files[f"{VENDOR}/VERSION"].decode().splitlines()
    assert f"centrifuge {version}" in record
    assert f"integrity {integrity}" in record


def test_tampered_lock_integrity_refuses_to_build(dists):
    """Already vendored files do not help: they no longer match the (changed) lock file."""
    tampered = dists.tmp / "tampered"
    shutil.copytree(dists.src, tampered, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    assert (tampered / VENDOR / "VERSION").is_file()
    before = (tampered / VENDOR / "VERSION").read_bytes()
    lock = json.loads((tampered / "package-lock.json").read_text())
    lock["packages"]["node_modules/centrifuge"]["integrity"] = sri(b"not the centrifuge tarball")
    (tampered / "package-lock.json").write_text(json.dumps(lock, indent=2))

    result = build("--sdist", "--outdir", tampered / "dist", tampered, ok=False)
    assert result.returncode != 0, result.output
    assert "refusing to vendor centrifuge@" in result.output
    assert not list((tampered / "dist").glob("*.tar.gz"))
    assert (tampered / VENDOR / "VERSION").read_bytes() == before

    check = run([sys.executable, tampered / "build_support" / "vendor_centrifuge.py", "--check"],
                ok=False)
    assert check.returncode == 1, check.output


def test_wheel_straight_from_a_checkout(dists, npm_client):
    """``pip install .`` / ``pip install git+...``: the build_py hook vendors the client too."""
    src = copy_checkout(dists.tmp / "checkout")
    build("--wheel", "--outdir", dists.tmp / "direct", src)
    with zipfile.ZipFile(only((dists.tmp / "direct").glob("*.whl"))) as zf:
        assert zf.read(f"{VENDOR}/index.mjs") == npm_client["index.mjs"]


# --- the wheel in a fresh virtualenv, in a minimal Django project --------------------------------

SETTINGS = """\
from pathlib import Path
BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "packaging-test"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = ["django.contrib.staticfiles", "instant_signals"]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / %(root)r
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": %(backend)r},
}
"""

MANAGE = """\
import sys
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
"""

RENDER = """\
import instant_signals
from types import SimpleNamespace
from django.template import Context, Template
print("PACKAGE", instant_signals.__file__)
for source, context in [
    ('{% include "instant_signals/importmap.html" %}', {}),
    ('{% include "instant_signals/importmap.html" with nonce=request.csp_nonce %}',
     {"request": SimpleNamespace(csp_nonce="r3quest-n0nce")}),
    ('{% load instant_signals %}{% instant_importmap nonce="t4g-n0nce" %}', {}),
]:
    print("RENDERED", Template(source).render(Context(context)).strip())
"""

IMPORTMAP = re.compile(r'<script type="importmap"(?: nonce="([^"]*)")?>(.*?)</script>')


@pytest.fixture(scope="module")
def site(dists):
    """A fresh virtualenv with only the wheel (and its dependencies), and a project folder."""
    venv = dists.tmp / "venv"
    run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
         dists.wheel])
    project = dists.tmp / "project"
    project.mkdir()
    (project / "manage.py").write_text(MANAGE)
    default = "django.contrib.staticfiles.storage.StaticFilesStorage"
    manifest = "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"
    (project / "plain_settings.py").write_text(
        SETTINGS % {"root": "static-plain", "backend": default})
    (project / "manifest_settings.py").write_text(
        SETTINGS % {"root": "static-manifest", "backend": manifest})
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PYTHONHOME")}

    def manage(settings: str, *args) -> str:
        return run([python, "manage.py", *args], cwd=project,
                   env=dict(env, DJANGO_SETTINGS_MODULE=settings)).stdout

    return SimpleNamespace(venv=venv, project=project, manage=manage)


def rendered_importmaps(output: str, site) -> list[tuple[str | None, str]]:
    package = re.search(r"^PACKAGE (.*)$", output, re.M).group(1)
    assert Path(package).resolve().is_relative_to(site.venv.resolve()), (
        f"instant_signals imported from {package}, not from the fresh virtualenv")
    maps = []
    for line in re.findall(r"^RENDERED (.*)$", output, re.M):
        match = IMPORTMAP.fullmatch(line)
        assert match, line
        maps.append((match.group(1), json.loads(match.group(2))["imports"]["centrifuge"]))
    assert [nonce for nonce, _ in maps] == [None, "r3quest-n0nce", "t4g-n0nce"], output
    assert len({url for _, url in maps}) == 1, maps
    return maps


@pytest.mark.parametrize("settings", ["plain_settings", "manifest_settings"])
def test_collectstatic_serves_the_client(site, dists, settings):
    site.manage(settings, "collectstatic", "--noinput", "-v", "0")
    root = site.project / ("static-plain" if settings == "plain_settings" else "static-manifest")
    for name in [f"{VENDOR}/index.mjs", f"{VENDOR}/LICENSE", INSTANT_JS]:
        path = name.removeprefix("instant_signals/static/")
        assert (root / path).read_bytes() == dists.wheel_files[name], name

    maps = rendered_importmaps(site.manage(settings, "shell", "-c", RENDER), site)
    url = maps[0][1]
    assert url.startswith("/static/"), url
    served = root / url.removeprefix("/static/")
    assert served.read_bytes() == dists.wheel_files[f"{VENDOR}/index.mjs"]

    client = "instant_signals/vendor/centrifuge/index.mjs"
    if settings == "manifest_settings":
        paths = json.loads((root / "staticfiles.json").read_text())["paths"]
        assert url == "/static/" + paths[client]
        assert paths[client] != client and re.fullmatch(
            r"instant_signals/vendor/centrifuge/index\.[0-9a-f]{12}\.mjs", paths[client])
        assert (root / paths["instant_signals/instant.js"]).is_file()
    else:
        assert url == "/static/" + client
