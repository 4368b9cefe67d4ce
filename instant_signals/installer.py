"""Find or install the Centrifugo binary: one code path for ``installws``, the demo and the tests.

Order of attempts (:func:`find_or_install`):

1. an explicit binary (argument or ``CENTRIFUGO_BINARY``; it must be the wanted version), or a
   ``centrifugo`` on PATH of the wanted version;
2. the cache (``$INSTANT_SIGNALS_CACHE`` or ``~/.cache/instant_signals/centrifugo/<version>/``);
3. the official release archive for this OS/CPU, downloaded with urllib3 (connect/read
   timeouts; ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` honoured) and checked against the sha256
   pinned in :data:`RELEASE_SHA256`;
4. when the download fails (no network, HTTP error, a proxy refusing it), ``go install`` when a Go
   toolchain is on PATH, with the version stamped in (``centrifugo version`` prints it);
5. an :class:`InstallError` saying what was tried and what to do.

A checksum mismatch is never installed and never papered over by building instead: it means the
download was corrupted or tampered with, and :class:`ChecksumError` says so.

**Authenticity caveat.** Only a checksum pinned in :data:`RELEASE_SHA256` (shipped inside this
package) proves that the archive is the one the maintainers pinned. When the table has no entry
for the version and platform, the installer falls back to the ``checksums.txt`` published next to
the archive and logs a WARNING: a checksum fetched from the same place as the archive proves the
download is intact (integrity), not that it is authentic -- whoever can replace the archive there
can replace its checksum too. For production, prefer the official Docker image
``centrifugo/centrifugo:v<version>`` or a binary from your OS's package manager.
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
import threading
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3

from instant_signals.progress import Progress  # absolute: the installer also runs as a file

logger = logging.getLogger("instant_signals.installer")

PINNED_VERSION = "6.9.1"
RELEASE_BASE_URL = "https://github.com/centrifugal/centrifugo/releases/download"
GO_MODULE = "github.com/centrifugal/centrifugo/v6"
# The variable Centrifugo's release builds stamp with -ldflags -X (internal/build/build.go, and
# `ldflags` in its .goreleaser.yml); `go install` alone leaves it at "0.0.0".
GO_VERSION_VARIABLE = f"{GO_MODULE}/internal/build.Version"
DOCKER_IMAGE = "centrifugo/centrifugo"
PLATFORMS = ("linux_amd64", "linux_arm64", "darwin_amd64", "darwin_arm64")

# sha256 of the official release archives, keyed by version then "<os>_<arch>". Filled in by a
# maintainer with internet access: `python build_support/pin_centrifugo_checksums.py --write`.
# A version or platform missing here falls back to the release's checksums file (with a WARNING:
# integrity, not authenticity -- see the module docstring).
RELEASE_SHA256: dict[str, dict[str, str]] = {
    # 6.9.1: not pinned yet. The sums were not obtainable where this was written (no access to
    # GitHub release downloads); never type them in by hand, run the script above.
    "6.9.1": {},
}

CONNECT_TIMEOUT = 10.0  # seconds to open a connection
READ_TIMEOUT = 60.0  # seconds without a byte before a download is given up
GO_INSTALL_TIMEOUT = 1800  # seconds; a cold build downloads modules and compiles for minutes

_VERSION_RE = re.compile(r"v?(\d+\.\d+\.\d+)")


class InstallError(RuntimeError):
    """No Centrifugo binary could be found or installed; the message says what to do."""


class ChecksumError(InstallError):
    """A downloaded archive does not match its expected sha256: never installed."""


def cache_dir() -> Path:
    """``$INSTANT_SIGNALS_CACHE`` or ``$XDG_CACHE_HOME/instant_signals`` (``~/.cache/...``)."""
    explicit = os.environ.get("INSTANT_SIGNALS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "instant_signals"


def cached_binary(version: str = PINNED_VERSION, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "centrifugo" / version / "centrifugo"


def binary_version(binary: str | os.PathLike[str]) -> str | None:
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
    # A binary built by `go install` without the version stamped in (as this installer did
    # before it passed -ldflags) reports 0.0.0; its embedded module version is right.
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


def platform_key() -> str:
    """This machine as the release names it: ``linux_amd64``, ``darwin_arm64``, ..."""
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
    return f"{os_name}_{arch}"


def platform_asset(version: str = PINNED_VERSION) -> str:
    """Release archive name for this machine, e.g. ``centrifugo_6.9.1_linux_amd64.tar.gz``."""
    return f"centrifugo_{version}_{platform_key()}.tar.gz"


def docker_image(version: str = PINNED_VERSION) -> str:
    return f"{DOCKER_IMAGE}:v{version}"


def find_or_install(
    version: str = PINNED_VERSION,
    *,
    binary: str | os.PathLike[str] | None = None,
    cache: Path | None = None,
    release_base_url: str | None = None,
    download: bool = True,
    build: bool = True,
    progress: Progress | None = None,
) -> Path:
    """Return the path of a Centrifugo binary of ``version``, installing it if needed.

    ``download=False`` skips the release archive, ``build=False`` skips ``go install``; by
    default a failed download falls back to building. ``release_base_url`` (or
    ``CENTRIFUGO_RELEASE_URL``) replaces the GitHub releases URL, e.g. with a mirror.
    ``progress`` shows a person what a download or a build is doing (nothing without it).
    """
    progress = progress or Progress(verbosity=0)
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

    tried: list[str] = []
    go = shutil.which("go") if build else None
    if download:
        base = release_base_url or os.environ.get("CENTRIFUGO_RELEASE_URL") or RELEASE_BASE_URL
        try:
            return download_release(version, target, base, progress=progress)
        except ChecksumError:
            raise  # corrupted or tampered with: refuse loudly, do not build around it
        except InstallError as exc:
            tried.append(f"download: {exc}")
            if go:
                logger.warning("download failed: %s; building with go install (a few minutes)", exc)
                progress.line(f"The download failed ({exc}); building Centrifugo {version} with "
                              f"go install instead (a few minutes the first time).")
            else:
                logger.warning("download failed: %s", exc)
    else:
        tried.append("download: switched off")
    if build:
        if go:
            try:
                return go_install(version, target, go=go, progress=progress)
            except InstallError as exc:
                tried.append(f"go install: {exc}")
                logger.warning("go install failed: %s", exc)
        else:
            tried.append("go install: no Go toolchain (`go`) on PATH")
    else:
        tried.append("go install: switched off")
    if not build:
        first = "allow the go install fallback (switched off here) on a machine with Go"
    elif go is None:
        first = (f"install Go (https://go.dev/dl/) and run this again: it then builds Centrifugo "
                 f"with `go install {GO_MODULE}@v{version}`")
    else:
        first = "fix what made `go install` fail and run this again"
    raise InstallError(
        f"Centrifugo {version} is not installed and could not be installed. Tried: "
        f"{'; '.join(tried)}. To fix it, do one of: {first}; or put a centrifugo {version} "
        f"binary on PATH or set CENTRIFUGO_BINARY to its path; or run the official Docker image "
        f"{docker_image(version)} (recommended for production)."
    )


def download_release(version: str, target: Path, base_url: str, *,
                     progress: Progress | None = None) -> Path:
    """Download the release archive, verify its sha256, install its binary into ``target``.

    The expected sha256 is the one pinned in :data:`RELEASE_SHA256`. Without a pinned entry it is
    read from the release's checksums file, with a WARNING: that proves integrity, not
    authenticity (the checksum comes from the same place as the archive).
    """
    key = platform_key()
    asset = f"centrifugo_{version}_{key}.tar.gz"
    base = f"{base_url.rstrip('/')}/v{version}"
    expected = RELEASE_SHA256.get(version, {}).get(key)
    if expected:
        source = "pinned in instant_signals.installer.RELEASE_SHA256"
    else:
        sums_name = f"centrifugo_{version}_checksums.txt"
        logger.warning(
            "no sha256 pinned for Centrifugo %s (%s) in this package; checking %s against the "
            "release's %s, which proves integrity, not authenticity",
            version, key, asset, sums_name)
        expected = _checksum_from_file(fetch(f"{base}/{sums_name}").decode(errors="replace"), asset)
        if expected is None:
            raise InstallError(f"{asset} is not listed in the release's checksums file")
        source = f"from {sums_name}"
    logger.info("downloading Centrifugo %s: %s/%s", version, base, asset)
    archive = fetch(f"{base}/{asset}", progress=progress, label=f"downloading {asset}")
    actual = hashlib.sha256(archive).hexdigest()
    if actual != expected.lower():
        raise ChecksumError(
            f"checksum mismatch for {asset}: expected {expected} ({source}), got {actual}; "
            f"the download is corrupted or was tampered with, nothing installed"
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


def _checksum_from_file(text: str, asset: str) -> str | None:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == asset:
            return parts[0].lower()
    return None


def go_install(version: str, target: Path, *, go: str = "go",
               progress: Progress | None = None) -> Path:
    """Build Centrifugo from source with ``go install`` (minutes the first time).

    The version is stamped in the way Centrifugo's release builds do it, so ``centrifugo
    version`` prints it instead of 0.0.0. ``-v`` makes Go name each package it compiles: they
    are counted on ``progress`` while the build runs.
    """
    progress = progress or Progress(verbosity=0)
    command = [go, "install", "-v", f"-ldflags=-X {GO_VERSION_VARIABLE}={version}",
               f"{GO_MODULE}@v{version}"]
    with tempfile.TemporaryDirectory() as gobin:
        env = {**os.environ, "GOBIN": gobin}
        logger.info("building Centrifugo %s with go install (a few minutes): %s", version,
                    " ".join(command))
        progress.line(f"Building Centrifugo {version}: {' '.join(command)}")
        returncode, output = _run_streaming(command, env, gobin, progress)
        built = Path(gobin) / "centrifugo"
        if returncode != 0 or not built.is_file():
            raise InstallError(f"`go install {GO_MODULE}@v{version}` failed:\n{output[-2000:]}")
        reported = binary_version(built)
        if reported != version:
            raise InstallError(f"the binary built by `go install` reports version {reported}, "
                               f"not {version}")
        _install_bytes(built.read_bytes(), target)
    logger.info("installed Centrifugo %s (built with go install) into %s", version, target)
    progress.line(f"Built Centrifugo {version}: {target}")
    return target


def _run_streaming(command: list[str], env: dict[str, str], cwd: str,
                   progress: Progress) -> tuple[int, str]:
    """Run ``go install -v``, counting the packages it names on ``progress`` as they come;
    its exit code and its output (the tail of which explains a failure)."""
    try:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as exc:
        raise InstallError(f"cannot run {command[0]}: {exc}") from None
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            name = line.strip()
            if name and " " not in name:  # a package path; anything else is a message
                progress.count("building Centrifugo: packages compiled", len(lines), name)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        returncode = process.wait(timeout=GO_INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise InstallError(f"`go install` did not finish in {GO_INSTALL_TIMEOUT} s") from None
    finally:
        reader.join(timeout=5)
    return returncode, "".join(lines)


def _pool_for(url: str) -> urllib3.PoolManager:
    """A pool manager for ``url``: through the proxy the environment names for its scheme
    (``HTTPS_PROXY``/``HTTP_PROXY``) unless ``NO_PROXY`` covers its host."""
    options: dict[str, Any] = {
        "timeout": urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
        "retries": urllib3.Retry(total=None, connect=2, read=2, status=0, other=0, redirect=5,
                                 backoff_factor=0.2, raise_on_status=False),
    }
    try:  # certifi's CA bundle when present: Python's default store is empty on some installs
        import certifi

        options["ca_certs"] = certifi.where()
    except ImportError:
        pass
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        if "://" not in proxy:  # HTTPS_PROXY=proxy.example:3128 means an http:// proxy
            proxy = f"http://{proxy}"
        try:
            return urllib3.ProxyManager(proxy, **options)
        except (urllib3.exceptions.HTTPError, ValueError) as exc:
            raise InstallError(f"cannot use the proxy {proxy} for {url}: {exc}") from None
    return urllib3.PoolManager(**options)


def fetch(url: str, *, progress: Progress | None = None, label: str = "") -> bytes:
    """GET ``url`` (following redirects) and return the body; any failure is an InstallError.
    With ``progress``, the body is read in chunks and its bytes are shown as they arrive."""
    with _pool_for(url) as pool:
        try:
            response = pool.request("GET", url, preload_content=False)
            try:
                if response.status != 200:
                    raise InstallError(f"cannot fetch {url}: HTTP {response.status}")
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                body = bytearray()
                for chunk in response.stream(256 * 1024):
                    body += chunk
                    if progress is not None:
                        progress.amount(label or url, len(body), total)
            finally:
                response.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise InstallError(f"cannot fetch {url}: {reason}") from None
        if progress is not None and label:
            progress.line(f"{label}: {len(body) / 1e6:.1f} MB")
        return bytes(body)


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
    parser.add_argument("--no-download", action="store_true",
                        help="never download the release archive")
    parser.add_argument("--no-build", action="store_true",
                        help="never build with `go install`")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry chatter; failures are ours
    try:
        path = find_or_install(args.version, download=not args.no_download,
                               build=not args.no_build, progress=Progress(sys.stderr))
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
