"""The Centrifugo installer: PATH, cache, release download with checksum, go install, clear error.

Release servers are local HTTP servers laid out like GitHub's release downloads
(``v<version>/<archive>`` and ``v<version>/centrifugo_<version>_checksums.txt``): one serves a
real archive made from the real binary, the others small archives for made-up versions whose
``centrifugo`` is a shell script printing its version. The go install tests run the real
``go install`` once per module.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import http.server
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from instant_signals import installer
from instant_signals.progress import Progress
from tests.conftest import need

VERSION = installer.PINNED_VERSION
FAKE = "9.9.9"  # a version only the local release servers have
KEY = installer.platform_key()
REPO = Path(__file__).resolve().parent.parent
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder without logging to stderr, records the request targets it got, and
    also answers as an HTTP proxy (``GET http://host/path``) by serving ``/path``."""

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def translate_path(self, path):
        self.server.seen.append(path)
        if "://" in path:
            path = urlsplit(path).path
        return super().translate_path(path)


@contextlib.contextmanager
def serving(directory: Path):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(directory)))
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}", seen=server.seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def serve():
    """``serve(directory)`` starts a release server for the test; all stop at its end."""
    with contextlib.ExitStack() as stack:
        yield lambda directory: stack.enter_context(serving(directory))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_release(root: Path, version: str, binary: Path | None = None, *,
                 says: str | None = None, checksums: str | bool = True) -> str:
    """Write ``root/v<version>/<archive>`` holding ``binary`` (or a script printing ``says``,
    by default its version) and, unless ``checksums`` is False, the checksums file (True: the
    right sums; a string: that text). Returns the archive's sha256."""
    folder = root / f"v{version}"
    folder.mkdir(parents=True, exist_ok=True)
    asset = folder / f"centrifugo_{version}_{KEY}.tar.gz"
    if binary is None:
        binary = root / f"centrifugo-{version}-script"
        says = says or f"Centrifugo v{version} (Go version: go1.26)"
        binary.write_text(f"#!/bin/sh\necho '{says}'\n")
        binary.chmod(0o755)
    readme = root / "README.md"
    readme.write_text("Centrifugo\n")
    with tarfile.open(asset, "w:gz", compresslevel=1) as tar:
        tar.add(binary, arcname="centrifugo")
        tar.add(readme, arcname="README.md")
    digest = hashlib.sha256(asset.read_bytes()).hexdigest()
    if checksums:
        text = checksums if isinstance(checksums, str) else (
            f"{'0' * 64}  centrifugo_{version}_windows_amd64.zip\n{digest}  {asset.name}\n")
        (folder / f"centrifugo_{version}_checksums.txt").write_text(text)
    return digest


def installed_files(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []


def path_without_centrifugo(path: str) -> str:
    return os.pathsep.join(d for d in path.split(os.pathsep)
                           if d and not os.path.exists(os.path.join(d, "centrifugo")))


def clear_installer_env(mp: pytest.MonkeyPatch) -> None:
    for name in ("CENTRIFUGO_BINARY", "CENTRIFUGO_RELEASE_URL", "INSTANT_SIGNALS_CACHE",
                 *PROXY_VARIABLES, *(v.upper() for v in PROXY_VARIABLES)):
        mp.delenv(name, raising=False)
    # Nothing pinned for the versions these servers have (the real 6.9.1 sums, once pinned,
    # would not match an archive made here); tests that pin inject their own table.
    mp.setattr(installer, "RELEASE_SHA256", {})


@pytest.fixture(scope="module")
def release_server(centrifugo_binary, tmp_path_factory):
    """The real binary in a release archive for the pinned version, with its checksums file."""
    root = tmp_path_factory.mktemp("releases")
    make_release(root, VERSION, centrifugo_binary)
    with serving(root) as server:
        yield server.url


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No centrifugo on PATH (a fresh bin/ folder first on it), no CENTRIFUGO_BINARY, no proxy,
    nothing pinned, an empty cache folder (returned). Go, if installed, stays reachable."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", os.pathsep.join(
        [str(bin_dir), path_without_centrifugo(os.environ["PATH"])]))
    clear_installer_env(monkeypatch)
    return tmp_path / "cache"


@pytest.fixture
def installer_log(caplog):
    caplog.set_level(logging.INFO, logger=installer.logger.name)
    return caplog


def warnings_in(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == installer.logger.name and r.levelno >= logging.WARNING]


# --- download -------------------------------------------------------------------------------

def test_download_without_pinned_sum_uses_the_checksums_file_and_warns(
        clean_env, release_server, installer_log):
    path = installer.find_or_install(cache=clean_env, release_base_url=release_server, build=False)
    assert path == installer.cached_binary(VERSION, clean_env)
    assert os.access(path, os.X_OK)
    assert installer.binary_version(path) == VERSION
    [warning] = warnings_in(installer_log)
    assert "no sha256 pinned" in warning and "integrity, not authenticity" in warning
    # A second call takes the cache and does not need the server.
    dead = f"http://127.0.0.1:{closed_port()}"
    assert installer.find_or_install(cache=clean_env, release_base_url=dead, build=False) == path


def test_pinned_sum_installs_without_the_checksums_file(clean_env, tmp_path, serve, monkeypatch,
                                                        installer_log):
    digest = make_release(tmp_path / "releases", FAKE, checksums=False)
    monkeypatch.setattr(installer, "RELEASE_SHA256", {FAKE: {KEY: digest}})
    server = serve(tmp_path / "releases")
    path = installer.find_or_install(FAKE, cache=clean_env, release_base_url=server.url,
                                     build=False)
    assert path == installer.cached_binary(FAKE, clean_env)
    assert installer.binary_version(path) == FAKE
    assert warnings_in(installer_log) == []
    assert not any("checksums" in target for target in server.seen)


def test_pinned_sum_mismatch_refused_even_when_the_checksums_file_agrees(
        clean_env, tmp_path, serve, monkeypatch):
    """Whoever replaces the archive on the server can replace its checksums file too; the
    pinned sum still refuses it, and nothing is built instead."""
    genuine = make_release(tmp_path / "genuine", FAKE)
    monkeypatch.setattr(installer, "RELEASE_SHA256", {FAKE: {KEY: genuine}})
    tampered = make_release(tmp_path / "tampered", FAKE, says=f"Centrifugo v{FAKE} (backdoored)")
    assert tampered != genuine
    server = serve(tmp_path / "tampered")
    with pytest.raises(installer.ChecksumError, match="checksum mismatch") as raised:
        installer.find_or_install(FAKE, cache=clean_env, release_base_url=server.url)
    assert genuine in str(raised.value) and tampered in str(raised.value)
    assert "pinned" in str(raised.value) and "nothing installed" in str(raised.value)
    assert installed_files(clean_env) == []


def test_checksums_file_mismatch_refused_and_nothing_installed(clean_env, tmp_path, serve):
    asset = f"centrifugo_{FAKE}_{KEY}.tar.gz"
    make_release(tmp_path, FAKE, checksums=f"{'f' * 64}  {asset}\n")
    server = serve(tmp_path)
    with pytest.raises(installer.ChecksumError, match="checksum mismatch"):
        installer.find_or_install(FAKE, cache=clean_env, release_base_url=server.url)
    assert installed_files(clean_env) == []


def test_asset_missing_from_checksums_refused(clean_env, tmp_path, serve):
    make_release(tmp_path, FAKE, checksums=f"{'0' * 64}  something_else.tar.gz\n")
    server = serve(tmp_path)
    with pytest.raises(installer.InstallError, match="not listed in the release's checksums"):
        installer.find_or_install(FAKE, cache=clean_env, release_base_url=server.url, build=False)
    assert installed_files(clean_env) == []


def test_download_goes_through_the_environment_proxy(clean_env, tmp_path, serve, monkeypatch):
    make_release(tmp_path, FAKE)
    proxy = serve(tmp_path)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    # Only the proxy can reach this host (.invalid never resolves).
    path = installer.find_or_install(FAKE, cache=clean_env, build=False,
                                     release_base_url="http://releases.example.invalid")
    assert installer.binary_version(path) == FAKE
    assert proxy.seen and all(t.startswith("http://releases.example.invalid/") for t in proxy.seen)


def test_no_proxy_hosts_bypass_the_proxy(clean_env, tmp_path, serve, monkeypatch):
    make_release(tmp_path, FAKE)
    server = serve(tmp_path)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")  # a dead proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    path = installer.find_or_install(FAKE, cache=clean_env, release_base_url=server.url,
                                     build=False)
    assert installer.binary_version(path) == FAKE


# --- binaries already there -----------------------------------------------------------------

def test_path_binary_of_pinned_version_is_used_first(clean_env, centrifugo_binary):
    (clean_env.parent / "bin" / "centrifugo").symlink_to(centrifugo_binary)
    assert installer.find_or_install(cache=clean_env, download=False, build=False) == \
        clean_env.parent / "bin" / "centrifugo"


def test_path_binary_of_other_version_is_skipped(clean_env):
    fake = clean_env.parent / "bin" / "centrifugo"
    fake.write_text("#!/bin/sh\necho 'Centrifugo v5.4.9 (Go version: go1.22)'\n")
    fake.chmod(0o755)
    with pytest.raises(installer.InstallError, match="could not be installed"):
        installer.find_or_install(cache=clean_env, download=False, build=False)


def test_explicit_binary_must_be_the_pinned_version(clean_env, monkeypatch, centrifugo_binary):
    monkeypatch.setenv("CENTRIFUGO_BINARY", str(centrifugo_binary))
    assert installer.find_or_install(cache=clean_env) == centrifugo_binary
    monkeypatch.setenv("CENTRIFUGO_BINARY", "/nonexistent/centrifugo")
    with pytest.raises(installer.InstallError, match="version 6.9.1 is required"):
        installer.find_or_install(cache=clean_env)


# --- nothing works --------------------------------------------------------------------------

@pytest.mark.parametrize("release", ["404", "unreachable"])
def test_clear_error_when_download_and_build_both_fail(release, clean_env, monkeypatch, tmp_path,
                                                        serve, installer_log):
    monkeypatch.setenv("PATH", str(clean_env.parent / "bin"))  # no go either
    (tmp_path / "empty").mkdir()
    url = serve(tmp_path / "empty").url if release == "404" else f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(installer.InstallError) as raised:
        installer.find_or_install(cache=clean_env, release_base_url=url)
    message = str(raised.value)
    # What was tried ...
    assert f"cannot fetch {url}/v{VERSION}/" in message
    assert ("HTTP 404" if release == "404" else "Connection refused") in message
    assert "no Go toolchain" in message
    # ... and what to do.
    assert "install Go" in message and f"go install {installer.GO_MODULE}@v{VERSION}" in message
    assert "PATH" in message and "CENTRIFUGO_BINARY" in message
    assert f"centrifugo/centrifugo:v{VERSION}" in message
    assert any("download failed" in w for w in warnings_in(installer_log))
    assert installed_files(clean_env) == []


def test_go_install_failure_is_reported_with_its_output(clean_env, monkeypatch):
    bin_dir = clean_env.parent / "bin"
    (bin_dir / "go").write_text("#!/bin/sh\necho 'go: module lookup disabled by GOPROXY=off' >&2\n"
                                "exit 1\n")
    (bin_dir / "go").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(installer.InstallError) as raised:
        installer.find_or_install(cache=clean_env, download=False)
    message = str(raised.value)
    assert "download: switched off" in message
    assert f"`go install {installer.GO_MODULE}@v{VERSION}` failed" in message
    assert "module lookup disabled by GOPROXY=off" in message
    assert f"centrifugo/centrifugo:v{VERSION}" in message
    assert installed_files(clean_env) == []


def test_cli_prints_the_path(clean_env, monkeypatch, centrifugo_binary, capsys):
    monkeypatch.setenv("CENTRIFUGO_BINARY", str(centrifugo_binary))
    assert installer.main([]) == 0
    assert capsys.readouterr().out.strip() == str(centrifugo_binary)
    monkeypatch.delenv("CENTRIFUGO_BINARY")
    monkeypatch.setenv("INSTANT_SIGNALS_CACHE", str(clean_env))
    assert installer.main(["--no-download", "--no-build"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Centrifugo 6.9.1 is not installed")
    assert "download: switched off" in err and "go install: switched off" in err


def test_cli_as_a_module_prints_the_cached_binary(clean_env, centrifugo_binary):
    target = installer.cached_binary(VERSION, clean_env)
    target.parent.mkdir(parents=True)
    target.symlink_to(centrifugo_binary)
    result = subprocess.run(
        [sys.executable, "-m", "instant_signals.installer", "--no-download", "--no-build"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**os.environ, "INSTANT_SIGNALS_CACHE": str(clean_env)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(target)


# --- go install -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def go_built(tmp_path_factory):
    """One real `go install` for the module: the release server answers 404, Go is on PATH,
    no centrifugo anywhere, an empty cache. Gives the path, the cache and the log."""
    need(shutil.which("go") is not None, "go")
    root = tmp_path_factory.mktemp("go-fallback")
    (root / "empty").mkdir()
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = installer.logger
    level = logger.level
    with serving(root / "empty") as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", path_without_centrifugo(os.environ["PATH"]))
        clear_installer_env(mp)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            path = installer.find_or_install(cache=root / "cache", release_base_url=server.url)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
    return SimpleNamespace(path=path, cache=root / "cache", server=server.url,
                           log=[(r.levelno, r.getMessage()) for r in records])


@pytest.mark.slow
def test_failed_download_falls_back_to_go_install_and_is_cached(go_built, clean_env):
    assert go_built.path == installer.cached_binary(VERSION, go_built.cache)
    assert os.access(go_built.path, os.X_OK)
    [(level, warning)] = [(lv, m) for lv, m in go_built.log if "download failed" in m]
    assert level == logging.WARNING
    assert "HTTP 404" in warning and "building with go install (a few minutes)" in warning
    # Next time the cache answers: no download, no build.
    cached = installer.find_or_install(cache=go_built.cache, download=False, build=False)
    assert cached == go_built.path


@pytest.mark.slow
def test_go_installed_binary_reports_the_pinned_version(go_built):
    out = subprocess.run([str(go_built.path), "version"], capture_output=True, text=True,
                         timeout=30).stdout
    assert out.startswith(f"Centrifugo v{VERSION} "), out  # not "v0.0.0"
    assert installer.binary_version(go_built.path) == VERSION


# --- the maintainers' pinning script --------------------------------------------------------

def test_pin_script_writes_the_table_the_installer_reads(tmp_path, serve):
    folder = tmp_path / "releases" / f"v{FAKE}"
    folder.mkdir(parents=True)
    sums = {key: hashlib.sha256(key.encode()).hexdigest() for key in installer.PLATFORMS}
    (folder / f"centrifugo_{FAKE}_checksums.txt").write_text("".join(
        f"{digest}  centrifugo_{FAKE}_{key}.tar.gz\n" for key, digest in sums.items())
        + f"{'1' * 64}  centrifugo_{FAKE}_windows_amd64.zip\n")
    server = serve(tmp_path / "releases")
    copy = tmp_path / "installer_copy.py"
    shutil.copy(installer.__file__, copy)
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    result = subprocess.run(
        [sys.executable, str(REPO / "build_support" / "pin_centrifugo_checksums.py"), FAKE,
         "--base-url", server.url, "--write", "--file", str(copy)],
        capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert sums["linux_arm64"] in result.stdout
    spec = importlib.util.spec_from_file_location("installer_copy", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.RELEASE_SHA256[FAKE] == sums
    assert module.RELEASE_SHA256[VERSION] == installer.RELEASE_SHA256[VERSION]  # kept


# --- progress shown to the person waiting ---------------------------------------------------

class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_download_shows_progress_as_plain_lines_a_bar_on_a_terminal_and_nothing_when_quiet(
        clean_env, release_server):
    plain, terminal, quiet = io.StringIO(), Terminal(), io.StringIO()
    for n, stream, verbosity in ((1, plain, 1), (2, terminal, 1), (3, quiet, 0)):
        installer.find_or_install(cache=clean_env / str(n), release_base_url=release_server,
                                  build=False, progress=Progress(stream, verbosity=verbosity))
    lines = plain.getvalue().splitlines()
    asset = installer.platform_asset()
    steps = [line for line in lines if "%" in line]
    # a few lines for a log (one per quarter), ending at 100 %, then the size
    assert 2 <= len(steps) <= 5 and "100%" in steps[-1] and asset in steps[0], lines
    assert "\r" not in plain.getvalue() and lines[-1].startswith(f"downloading {asset}: ")
    shown = terminal.getvalue()
    assert shown.count("\r\033[K") >= 3 and "100%" in shown  # one line rewritten in place
    assert quiet.getvalue() == ""


def test_go_build_streams_the_packages_it_compiles(clean_env, monkeypatch, centrifugo_binary):
    """A stand-in for `go` (a real cold build takes minutes): it names 120 packages as Go's
    -v does, then puts the real binary where GOBIN says."""
    bin_dir = clean_env.parent / "bin"
    packages = "\n".join(f"github.com/example/pkg{i}" for i in range(120))
    (bin_dir / "go").write_text(
        "#!/bin/sh\n"
        f'case "$*" in *" -v "*) ;; *) echo "no -v" >&2; exit 2;; esac\n'
        f"printf '%s\\n' '{packages}'\n"
        f'cp {centrifugo_binary} "$GOBIN/centrifugo"\n')
    (bin_dir / "go").chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"]))  # no real go
    shown = io.StringIO()
    path = installer.find_or_install(cache=clean_env, download=False, progress=Progress(shown))
    assert path == installer.cached_binary(VERSION, clean_env)
    lines = shown.getvalue().splitlines()
    assert lines[0].startswith(f"Building Centrifugo {VERSION}: ") and " -v " in lines[0]
    counts = [line for line in lines if "packages compiled" in line]
    # plain output: a line per 50 packages, naming the one being built
    assert [c.split(": ")[2].split(" ")[0] for c in counts] == ["1", "50", "100"], lines
    assert "github.com/example/pkg99" in counts[-1]
    assert lines[-1] == f"Built Centrifugo {VERSION}: {path}"
