"""Vendor the pinned npm browser packages into the package's static files.

The one place that puts browser code next to ``instant.js``; used by the build hook
(``setup.py``, for sdists, wheels and editable installs) and by developers / ``scripts/lib.sh``::

    python build_support/vendor_centrifuge.py           # write or refresh the files
    python build_support/vendor_centrifuge.py --check   # exit 1 unless they are current (no npm)

Three packages are vendored (``PACKAGES``): ``centrifuge`` (the client instant.js imports),
``@hotwired/turbo`` (Turbo 8) and ``htmx.org`` (htmx 2), the two libraries ``stream.js`` drives.
For each, the version and the sha512 come from ``package-lock.json`` (entry
``node_modules/<name>``). The tarball is ``npm pack <name>@<version>`` (npm's cache first, then
its registry), or the local file named by the package's environment variable
(``$CENTRIFUGE_TARBALL``, ``$TURBO_TARBALL``, ``$HTMX_TARBALL``: offline builds). Its sha512 must
equal the lock file's ``integrity``, otherwise nothing is written for it and the build stops. The
package's browser build and its license are copied to
``instant_signals/static/instant_signals/vendor/<folder>/`` (``centrifuge/``: ``package/build/
index.mjs`` and ``package/LICENSE``, as before) with a ``VERSION`` file that records the version,
the tarball's integrity and the sha512 of every copy. When ``VERSION`` already matches the lock
file and the files, nothing is fetched: building a wheel from an sdist (which carries the files)
needs no npm.

Standard library only, Python 3.8+.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, NamedTuple, Optional

ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = "package-lock.json"
STATIC_VENDOR = Path("instant_signals", "static", "instant_signals", "vendor")


class Package(NamedTuple):
    name: str  # the npm name
    folder: str  # below STATIC_VENDOR
    files: Dict[str, str]  # tarball member (below its top folder, "package/") -> vendored name
    tarball_env: str  # environment variable naming a local tarball (offline builds)

    @property
    def vendor_dir(self) -> Path:
        return STATIC_VENDOR / self.folder


PACKAGES = (
    Package("centrifuge", "centrifuge", {"build/index.mjs": "index.mjs", "LICENSE": "LICENSE"},
            "CENTRIFUGE_TARBALL"),
    # Turbo's tarball has no LICENSE file: its license (MIT, package.json) goes into VERSION,
    # and the copyright line is the first comment of the file itself.
    Package("@hotwired/turbo", "turbo", {"dist/turbo.es2017-esm.js": "turbo.es2017-esm.js"},
            "TURBO_TARBALL"),
    Package("htmx.org", "htmx", {"dist/htmx.esm.js": "htmx.esm.js", "LICENSE": "LICENSE"},
            "HTMX_TARBALL"),
)
CENTRIFUGE = PACKAGES[0]

# The centrifuge names of the first version of this script (kept for callers).
PACKAGE = CENTRIFUGE.name
VENDOR_DIR = CENTRIFUGE.vendor_dir
FILES = CENTRIFUGE.files


class VendorError(Exception):
    """A package cannot be vendored (no npm, wrong tarball, bad lock file)."""


def sri(data: bytes) -> str:
    """Subresource-integrity string, as npm writes it: ``sha512-<base64>``."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def locked(lock_path: Path, package: str = PACKAGE) -> tuple[str, str]:
    """(version, integrity) of ``package`` in ``package-lock.json``."""
    try:
        lock = json.loads(lock_path.read_text(encoding="utf-8"))
        entry = lock["packages"][f"node_modules/{package}"]
        version, integrity = entry["version"], entry["integrity"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VendorError(f"{lock_path}: no version/integrity for {package} ({exc!r})") from None
    if not any(part.startswith("sha512-") for part in integrity.split()):
        raise VendorError(f"{lock_path}: the integrity of {package} has no sha512 ({integrity})")
    return version, integrity


def integrity_matches(data: bytes, integrity: str) -> bool:
    return sri(data) in integrity.split()


def read_record(dest: Path) -> dict[str, str]:
    try:
        text = (dest / "VERSION").read_text(encoding="utf-8")
    except OSError:
        return {}
    return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)


def is_current(dest: Path, version: str, integrity: str,
               package: Package = CENTRIFUGE) -> bool:
    """The vendored files exist, come from this version/integrity and are unmodified."""
    record = read_record(dest)
    if record.get(package.name) != version or record.get("integrity") != integrity:
        return False
    for name in package.files.values():
        try:
            if record.get(name) != sri((dest / name).read_bytes()):
                return False
        except OSError:
            return False
    return True


def fetch_tarball(version: str, workdir: Path, cwd: Path,
                  package: Package = CENTRIFUGE) -> Path:
    """The npm tarball of ``package@version``: its ``*_TARBALL`` variable or ``npm pack``."""
    given = os.environ.get(package.tarball_env)
    if given:
        return Path(given)
    npm = shutil.which("npm")
    if npm is None:
        raise VendorError(
            f"npm is needed to fetch {package.name}@{version} (browser code shipped in the "
            f"package). Install Node.js/npm, set {package.tarball_env} to the downloaded "
            "tarball, or build the wheel from an sdist, which already contains it.")
    command = [npm, "pack", f"{package.name}@{version}", "--pack-destination", str(workdir),
               "--ignore-scripts", "--silent"]
    result = subprocess.run(command, cwd=str(cwd), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True)
    tarballs = sorted(workdir.glob("*.tgz"))
    if result.returncode != 0 or len(tarballs) != 1:
        raise VendorError(f"`npm {' '.join(command[1:])}` failed (exit {result.returncode}):\n"
                          f"{result.stdout}{result.stderr}".rstrip())
    return tarballs[0]


def extract(tarball: Path, version: str,
            package: Package = CENTRIFUGE) -> tuple[dict[str, bytes], dict]:
    """The vendored files' contents read from the tarball (nothing is unpacked to disk), and
    its package.json."""
    wanted = dict(package.files, **{"package.json": "package.json"})
    found: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            inner = member.name.split("/", 1)[-1]  # npm tarballs have one top folder
            if member.isfile() and inner in wanted and wanted[inner] not in found:
                found[wanted[inner]] = tar.extractfile(member).read()
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise VendorError(f"{tarball}: no {', '.join(missing)} in the {package.name} tarball")
    meta = json.loads(found.pop("package.json"))
    if (meta.get("name"), meta.get("version")) != (package.name, version):
        raise VendorError(f"{tarball} is {meta.get('name')}@{meta.get('version')}, "
                          f"not {package.name}@{version}")
    return found, meta


def write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def vendor_package(root: Path, package: Package, *, force: bool = False, log=print) -> Path:
    """Make ``<root>/instant_signals/.../vendor/<folder>/`` match the lock file; return it."""
    root = Path(root)
    dest = root / package.vendor_dir
    where = package.vendor_dir.as_posix()
    version, integrity = locked(root / LOCK_FILE, package.name)
    if not force and is_current(dest, version, integrity, package):
        log(f"{package.name} {version} is vendored in {where} (matches {LOCK_FILE})")
        return dest
    with tempfile.TemporaryDirectory(prefix="vendor-npm-") as workdir:
        tarball = fetch_tarball(version, Path(workdir), cwd=root, package=package)
        data = tarball.read_bytes()
        if not integrity_matches(data, integrity):
            raise VendorError(
                f"refusing to vendor {package.name}@{version}: the tarball {tarball.name} has "
                f"{sri(data)}, but {LOCK_FILE} pins {integrity}")
        files, meta = extract(tarball, version, package)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "VERSION").unlink(missing_ok=True)  # stale until every file is written
    for name, content in files.items():
        write_atomic(dest / name, content)
    record = [f"{package.name} {version}", f"integrity {integrity}"]
    record += [f"{name} {sri(files[name])}" for name in package.files.values()]
    if "LICENSE" not in package.files.values():
        record.append(f"license {meta.get('license')} (package.json; the tarball has no "
                      f"LICENSE file)")
    record.append(f"source npm pack {package.name}@{version}, checked against {LOCK_FILE}")
    write_atomic(dest / "VERSION", ("\n".join(record) + "\n").encode("utf-8"))
    log(f"vendored {package.name} {version} ({integrity[:22]}...) into {where}")
    return dest


def vendor(root: Path = ROOT, *, force: bool = False, log=print,
           packages: Optional[tuple[Package, ...]] = None) -> Path:
    """Vendor every package of ``PACKAGES`` (or ``packages``); the first error stops, after
    the packages before it were written. Returns the centrifuge folder (as it always did)."""
    for package in packages or PACKAGES:
        vendor_package(root, package, force=force, log=log)
    return Path(root) / VENDOR_DIR


def check(root: Path) -> list[str]:
    """Problems of the vendored files (empty: every package matches the lock file)."""
    problems = []
    for package in PACKAGES:
        version, integrity = locked(root / LOCK_FILE, package.name)
        if not is_current(root / package.vendor_dir, version, integrity, package):
            problems.append(f"{package.vendor_dir.as_posix()} does not match {package.name} "
                            f"{version} in {LOCK_FILE}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT,
                        help=f"project root holding {LOCK_FILE} (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="only check that the vendored files match the lock file")
    parser.add_argument("--force", action="store_true", help="fetch and write even if current")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check(args.root)
            for problem in problems:
                print(f"{problem}; run python build_support/vendor_centrifuge.py",
                      file=sys.stderr)
            if problems:
                return 1
            print(", ".join(f"{p.name} {locked(args.root / LOCK_FILE, p.name)[0]}"
                            for p in PACKAGES) + f" are vendored and match {LOCK_FILE}")
            return 0
        vendor(args.root, force=args.force)
    except VendorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
