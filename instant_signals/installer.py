"""Find or install the Centrifugo binary: one code path for ``installws``, the demo and the tests.

Order: an explicit binary (argument or ``CENTRIFUGO_BINARY``) or a ``centrifugo`` on PATH of the
pinned version → the cache → the official release archive for this OS/CPU with its sha256 checked
against the release's checksums file → ``go install`` when a Go toolchain is present → an
``InstallError`` saying what to do.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import requests

logger = logging.getLogger("instant_signals.installer")

PINNED_VERSION = "6.9.1"
RELEASE_BASE_URL = "https://github.com/centrifugal/centrifugo/releases/download"
GO_MODULE = "github.com/centrifugal/centrifugo/v6"

_VERSION_RE = re.compile(r"v?(\d+\.\d+\.\d+)")


class InstallError(RuntimeError):
    """No Centrifugo binary could be found or installed; the message says what to do."""


class ChecksumError(InstallError):
    """A downloaded archive does not match the release's checksums: never installed."""


def cache_dir() -> Path:
    """``$INSTANT_SIGNALS_CACHE`` or ``$XDG_CACHE_HOME/instant_signals`` (``~/.cache/...``)."""
    explicit = os.environ.get("INSTANT_SIGNALS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "instant_signals"


def cached_binary(version: str = PINNED_VERSION, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "centrifugo" / version / "centrifugo"


def binary_version(binary: str | os.PathLike) -> str | None:
    """The version a Centrifugo binary reports (``6.9.1``), or None if it cannot be run."""
    try:
        out = subprocess.run(
            [str(binary), "version"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(out)
    if match and match.group(1) != "0.0.0":
        return match.group(1)
    # A binary built with `go install` reports v0.0.0; its embedded module version is right.
    return _module_version(Path(binary))


def _module_version(binary: Path) -> str | None:
    marker = b"mod\t" + GO_MODULE.encode() + b"\tv"
    try:
        data = binary.read_bytes()
    except OSError:
        return None
    at = data.find(marker)
    if at < 0:
        return None
    match = _VERSION_RE.match(data[at + len(marker) : at + len(marker) + 40].decode("ascii", "replace"))
    return match.group(1) if match else None


def platform_asset(version: str = PINNED_VERSION) -> str:
    """Release archive name for this machine, e.g. ``centrifugo_6.9.1_linux_amd64.tar.gz``."""
    system = sys.platform
    os_name = {"linux": "linux", "darwin": "darwin"}.get(
        "linux" if system.startswith("linux") else system
    )
    if os_name is None:
        raise InstallError(f"no Centrifugo release archive for {system}; install it by hand")
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if arch is None:
        raise InstallError(f"no Centrifugo release archive for CPU {machine}; install it by hand")
    return f"centrifugo_{version}_{os_name}_{arch}.tar.gz"


def find_or_install(
    version: str = PINNED_VERSION,
    *,
    binary: str | os.PathLike | None = None,
    cache: Path | None = None,
    release_base_url: str | None = None,
    download: bool = True,
    build: bool = True,
) -> Path:
    """Return the path of a Centrifugo binary of ``version``, installing it if needed."""
    explicit = binary or os.environ.get("CENTRIFUGO_BINARY")
    if explicit:
        found = binary_version(explicit)
        if found != version:
            raise InstallError(
                f"{explicit} reports Centrifugo {found or 'nothing (cannot run it)'}, "
                f"but version {version} is required"
            )
        return Path(explicit)
    on_path = shutil.which("centrifugo")
    if on_path and binary_version(on_path) == version:
        return Path(on_path)
    target = cached_binary(version, cache)
    if target.is_file() and os.access(target, os.X_OK):
        return target
    tried = []
    if download:
        base = release_base_url or os.environ.get("CENTRIFUGO_RELEASE_URL") or RELEASE_BASE_URL
        try:
            return download_release(version, target, base)
        except ChecksumError:
            raise
        except InstallError as exc:
            tried.append(f"download: {exc}")
            logger.warning("Centrifugo download failed (%s); trying other ways", exc)
    if build:
        if shutil.which("go"):
            return go_install(version, target)
        tried.append("go install: no Go toolchain on PATH")
    raise InstallError(
        f"Centrifugo {version} is not installed and could not be installed "
        f"({'; '.join(tried) or 'downloads and builds were switched off'}). Either put a "
        f"centrifugo {version} binary on PATH or in CENTRIFUGO_BINARY, or install Go and run "
        f"`go install {GO_MODULE}@v{version}`."
    )


def download_release(version: str, target: Path, base_url: str) -> Path:
    """Download the release archive, check its sha256 against the checksums file, install it."""
    asset = platform_asset(version)
    base = f"{base_url.rstrip('/')}/v{version}"
    checksums = _fetch(f"{base}/centrifugo_{version}_checksums.txt").decode()
    expected = None
    for line in checksums.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == asset:
            expected = parts[0].lower()
    if expected is None:
        raise InstallError(f"{asset} is not listed in the release's checksums file")
    archive = _fetch(f"{base}/{asset}")
    actual = hashlib.sha256(archive).hexdigest()
    if actual != expected:
        raise ChecksumError(
            f"checksum mismatch for {asset}: expected {expected}, got {actual}; nothing installed"
        )
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        member = next(
            (m for m in tar.getmembers() if m.isfile() and Path(m.name).name == "centrifugo"), None
        )
        if member is None:
            raise InstallError(f"{asset} holds no centrifugo binary")
        content = tar.extractfile(member).read()  # type: ignore[union-attr]
    _install_bytes(content, target)
    logger.info("installed Centrifugo %s from %s into %s", version, base, target)
    return target


def go_install(version: str, target: Path) -> Path:
    """Build Centrifugo from source with ``go install`` (minutes the first time)."""
    with tempfile.TemporaryDirectory() as gobin:
        env = {**os.environ, "GOBIN": gobin}
        logger.warning("building Centrifugo %s with `go install` (a few minutes)...", version)
        result = subprocess.run(
            ["go", "install", f"{GO_MODULE}@v{version}"],
            env=env, capture_output=True, text=True, cwd=gobin,
        )
        built = Path(gobin) / "centrifugo"
        if result.returncode != 0 or not built.is_file():
            raise InstallError(
                f"`go install {GO_MODULE}@v{version}` failed:\n{result.stderr[-2000:]}"
            )
        _install_bytes(built.read_bytes(), target)
    return target


def _fetch(url: str) -> bytes:
    try:
        response = requests.get(url, timeout=(5, 120))
    except requests.RequestException as exc:
        raise InstallError(f"cannot fetch {url}: {exc.__class__.__name__}") from None
    if response.status_code != 200:
        raise InstallError(f"cannot fetch {url}: HTTP {response.status_code}")
    return response.content


def _install_bytes(content: bytes, target: Path) -> None:
    """Write the binary atomically so a half-written file is never taken from the cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".centrifugo-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    """``python -m instant_signals.installer``: print the binary's path, installing it if needed."""
    import argparse

    parser = argparse.ArgumentParser(description="Find or install the pinned Centrifugo.")
    parser.add_argument("--version", default=PINNED_VERSION)
    parser.add_argument("--no-download", action="store_true")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = find_or_install(args.version, download=not args.no_download, build=not args.no_build)
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
