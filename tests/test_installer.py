"""The Centrifugo installer: PATH, cache, release download with checksum, go install, clear error.

The release server is a local HTTP server serving a real archive made from the real binary.
"""

import hashlib
import http.server
import os
import shutil
import tarfile
import threading

import pytest

from instant_signals import installer

VERSION = installer.PINNED_VERSION


@pytest.fixture(scope="module")
def release_dir(centrifugo_binary, tmp_path_factory):
    """A release tree laid out like the official one: v6.9.1/<archive> and the checksums file."""
    root = tmp_path_factory.mktemp("releases")
    folder = root / f"v{VERSION}"
    folder.mkdir()
    asset = installer.platform_asset(VERSION)
    with tarfile.open(folder / asset, "w:gz", compresslevel=1) as tar:
        tar.add(centrifugo_binary, arcname="centrifugo")
        readme = root / "README.md"
        readme.write_text("Centrifugo\n")
        tar.add(readme, arcname="README.md")
    digest = hashlib.sha256((folder / asset).read_bytes()).hexdigest()
    (folder / f"centrifugo_{VERSION}_checksums.txt").write_text(
        f"{'0' * 64}  centrifugo_{VERSION}_windows_amd64.zip\n{digest}  {asset}\n")
    return root


@pytest.fixture(scope="module")
def release_server(release_dir):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(release_dir), **k)
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No centrifugo on PATH, no CENTRIFUGO_BINARY, an empty cache; go stays reachable."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    go = shutil.which("go")
    if go:
        (bin_dir / "go").symlink_to(go)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CENTRIFUGO_BINARY", raising=False)
    monkeypatch.delenv("CENTRIFUGO_RELEASE_URL", raising=False)
    return tmp_path / "cache"


def test_download_checks_sha256_and_installs(clean_env, release_server):
    path = installer.find_or_install(cache=clean_env, release_base_url=release_server, build=False)
    assert path == installer.cached_binary(VERSION, clean_env)
    assert installer.binary_version(path) == VERSION
    assert os.access(path, os.X_OK)
    # A second call takes the cache and does not need the server.
    again = installer.find_or_install(cache=clean_env, release_base_url="http://127.0.0.1:9",
                                      build=False)
    assert again == path


def test_wrong_checksum_refused_and_nothing_installed(clean_env, release_dir, release_server):
    sums = release_dir / f"v{VERSION}" / f"centrifugo_{VERSION}_checksums.txt"
    original = sums.read_text()
    sums.write_text(original.replace(original.split()[2], "f" * 64))
    try:
        with pytest.raises(installer.InstallError, match="checksum mismatch"):
            installer.find_or_install(cache=clean_env, release_base_url=release_server)
    finally:
        sums.write_text(original)
    assert not installer.cached_binary(VERSION, clean_env).exists()
    assert not list(clean_env.rglob("*centrifugo*")) or all(p.is_dir() for p in clean_env.rglob("*"))


def test_asset_missing_from_checksums_refused(clean_env, release_dir, release_server):
    sums = release_dir / f"v{VERSION}" / f"centrifugo_{VERSION}_checksums.txt"
    original = sums.read_text()
    sums.write_text("0" * 64 + "  something_else.tar.gz\n")
    try:
        with pytest.raises(installer.InstallError, match="not listed"):
            installer.find_or_install(cache=clean_env, release_base_url=release_server, build=False)
    finally:
        sums.write_text(original)


def test_path_binary_of_pinned_version_is_used_first(clean_env, centrifugo_binary):
    (clean_env.parent / "bin" / "centrifugo").symlink_to(centrifugo_binary)
    assert installer.find_or_install(cache=clean_env, download=False, build=False) == \
        clean_env.parent / "bin" / "centrifugo"


def test_path_binary_of_other_version_is_skipped(clean_env):
    fake = clean_env.parent / "bin" / "centrifugo"
    fake.write_text("#!/bin/sh\necho 'Centrifugo v5.4.9 (Go version: go1.22)'\n")
    fake.chmod(0o755)
    with pytest.raises(installer.InstallError):
        installer.find_or_install(cache=clean_env, download=False, build=False)


def test_explicit_binary_must_be_the_pinned_version(clean_env, monkeypatch, centrifugo_binary):
    monkeypatch.setenv("CENTRIFUGO_BINARY", str(centrifugo_binary))
    assert installer.find_or_install(cache=clean_env) == centrifugo_binary
    monkeypatch.setenv("CENTRIFUGO_BINARY", "/nonexistent/centrifugo")
    with pytest.raises(installer.InstallError, match="required"):
        installer.find_or_install(cache=clean_env)


def test_clear_error_when_nothing_works(clean_env, monkeypatch):
    monkeypatch.setenv("PATH", str(clean_env.parent / "empty"))  # no go either
    with pytest.raises(installer.InstallError) as raised:
        installer.find_or_install(cache=clean_env, release_base_url="http://127.0.0.1:9")
    message = str(raised.value)
    assert "go install github.com/centrifugal/centrifugo/v6@v6.9.1" in message
    assert "no Go toolchain" in message and "cannot fetch" in message


@pytest.mark.slow
def test_go_install_fallback_builds_the_pinned_version(clean_env):
    """Release download unreachable: the installer builds with the real `go install`."""
    if not shutil.which("go"):
        pytest.fail("this test needs Go (the fallback it tests)")
    path = installer.find_or_install(cache=clean_env, release_base_url="http://127.0.0.1:9")
    assert path == installer.cached_binary(VERSION, clean_env)
    assert installer.binary_version(path) == VERSION


def test_cli_prints_the_path(clean_env, monkeypatch, centrifugo_binary, capsys):
    monkeypatch.setenv("CENTRIFUGO_BINARY", str(centrifugo_binary))
    assert installer.main([]) == 0
    assert capsys.readouterr().out.strip() == str(centrifugo_binary)
    monkeypatch.delenv("CENTRIFUGO_BINARY")
    monkeypatch.setenv("INSTANT_SIGNALS_CACHE", str(clean_env))
    assert installer.main(["--no-download", "--no-build"]) == 1
    assert "error:" in capsys.readouterr().err
