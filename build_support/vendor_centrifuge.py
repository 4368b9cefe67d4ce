"""Vendor the pinned `centrifuge` npm client into the package's static files.

The one place that puts the browser client next to ``instant.js``; used by the build hook
(``setup.py``, for sdists, wheels and editable installs) and by developers / ``scripts/lib.sh``::

    python build_support/vendor_centrifuge.py           # write or refresh the files
    python build_support/vendor_centrifuge.py --check   # exit 1 unless they are current (no npm)

The version and the sha512 come from ``package-lock.json`` (entry ``node_modules/centrifuge``).
The tarball is ``npm pack centrifuge@<version>`` (npm's cache first, then its registry), or the
local file named by ``$CENTRIFUGE_TARBALL`` (offline builds). Its sha512 must equal the lock
file's ``integrity``, otherwise nothing is written and the build stops. ``package/build/index.mjs``
(the library's self-contained ESM build) and ``package/LICENSE`` are copied to
``instant_signals/static/instant_signals/vendor/centrifuge/`` with a ``VERSION`` file that records
the version, the tarball's integrity and the sha512 of both copies. When ``VERSION`` already
matches the lock file and the files, nothing is fetched: building a wheel from an sdist (which
carries the files) needs no npm.

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

PACKAGE = "centrifuge"
ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = "package-lock.json"
VENDOR_DIR = Path("instant_signals", "static", "instant_signals", "vendor", PACKAGE)
# tarball member (below its top folder, "package/") -> vendored file name
FILES = {"build/index.mjs": "index.mjs", "LICENSE": "LICENSE"}


class VendorError(Exception):
    """The client cannot be vendored (no npm, wrong tarball, bad lock file)."""


def sri(data: bytes) -> str:
    """Subresource-integrity string, as npm writes it: ``sha512-<base64>``."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def locked(lock_path: Path) -> tuple[str, str]:
    """(version, integrity) of ``centrifuge`` in ``package-lock.json``."""
    try:
        lock = json.loads(lock_path.read_text(encoding="utf-8"))
        entry = lock["packages"][f"node_modules/{PACKAGE}"]
        version, integrity = entry["version"], entry["integrity"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VendorError(f"{lock_path}: no version/integrity for {PACKAGE} ({exc!r})") from None
    if not any(part.startswith("sha512-") for part in integrity.split()):
        raise VendorError(f"{lock_path}: the integrity of {PACKAGE} has no sha512 ({integrity})")
    return version, integrity


def integrity_matches(data: bytes, integrity: str) -> bool:
    return sri(data) in integrity.split()


def read_record(dest: Path) -> dict[str, str]:
    try:
        text = (dest / "VERSION").read_text(encoding="utf-8")
    except OSError:
        return {}
    return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)


def is_current(dest: Path, version: str, integrity: str) -> bool:
    """The vendored files exist, come from this version/integrity and are unmodified."""
    record = read_record(dest)
    if record.get(PACKAGE) != version or record.get("integrity") != integrity:
        return False
    for name in FILES.values():
        try:
            if record.get(name) != sri((dest / name).read_bytes()):
                return False
        except OSError:
            return False
    return True


def fetch_tarball(version: str, workdir: Path, cwd: Path) -> Path:
    """The npm tarball of ``centrifuge@version``: ``$CENTRIFUGE_TARBALL`` or ``npm pack``."""
    given = os.environ.get("CENTRIFUGE_TARBALL")
    if given:
        return Path(given)
    npm = shutil.which("npm")
    if npm is None:
        raise VendorError(
            f"npm is needed to fetch {PACKAGE}@{version} (the browser client shipped in the "
            "package). Install Node.js/npm, set CENTRIFUGE_TARBALL to the downloaded tarball, "
            "or build the wheel from an sdist, which already contains the client.")
    command = [npm, "pack", f"{PACKAGE}@{version}", "--pack-destination", str(workdir),
               "--ignore-scripts", "--silent"]
    result = subprocess.run(command, cwd=str(cwd), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True)
    tarballs = sorted(workdir.glob("*.tgz"))
    if result.returncode != 0 or len(tarballs) != 1:
        raise VendorError(f"`npm {' '.join(command[1:])}` failed (exit {result.returncode}):\n"
                          f"{result.stdout}{result.stderr}".rstrip())
    return tarballs[0]


def extract(tarball: Path, version: str) -> dict[str, bytes]:
    """The vendored files' contents, read from the tarball (nothing is unpacked to disk)."""
    wanted = dict(FILES, **{"package.json": "package.json"})
    found: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            inner = member.name.split("/", 1)[-1]  # npm tarballs have one top folder
            if member.isfile() and inner in wanted and wanted[inner] not in found:
                found[wanted[inner]] = tar.extractfile(member).read()
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise VendorError(f"{tarball}: no {', '.join(missing)} in the {PACKAGE} tarball")
    meta = json.loads(found.pop("package.json"))
    if (meta.get("name"), meta.get("version")) != (PACKAGE, version):
        raise VendorError(f"{tarball} is {meta.get('name')}@{meta.get('version')}, "
                          f"not {PACKAGE}@{version}")
    return found


def write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def vendor(root: Path = ROOT, *, force: bool = False, log=print) -> Path:
    """Make ``<root>/instant_signals/.../vendor/centrifuge/`` match the lock file; return it."""
    root = Path(root)
    dest = root / VENDOR_DIR
    version, integrity = locked(root / LOCK_FILE)
    if not force and is_current(dest, version, integrity):
        log(f"{PACKAGE} {version} is vendored in {VENDOR_DIR.as_posix()} (matches {LOCK_FILE})")
        return dest
    with tempfile.TemporaryDirectory(prefix="vendor-centrifuge-") as workdir:
        tarball = fetch_tarball(version, Path(workdir), cwd=root)
        data = tarball.read_bytes()
        if not integrity_matches(data, integrity):
            raise VendorError(
                f"refusing to vendor {PACKAGE}@{version}: the tarball {tarball.name} has "
                f"{sri(data)}, but {LOCK_FILE} pins {integrity}")
        files = extract(tarball, version)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "VERSION").unlink(missing_ok=True)  # stale until every file is written
    for name, content in files.items():
        write_atomic(dest / name, content)
    record = [f"{PACKAGE} {version}", f"integrity {integrity}"]
    record += [f"{name} {sri(files[name])}" for name in FILES.values()]
    record.append(f"source npm pack {PACKAGE}@{version}, checked against {LOCK_FILE}")
    write_atomic(dest / "VERSION", ("\n".join(record) + "\n").encode("utf-8"))
    log(f"vendored {PACKAGE} {version} ({integrity[:22]}...) into {VENDOR_DIR.as_posix()}")
    return dest


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
            version, integrity = locked(args.root / LOCK_FILE)
            if not is_current(args.root / VENDOR_DIR, version, integrity):
                print(f"{VENDOR_DIR.as_posix()} does not match {PACKAGE} {version} in "
                      f"{LOCK_FILE}; run python build_support/vendor_centrifuge.py",
                      file=sys.stderr)
                return 1
            print(f"{PACKAGE} {version} is vendored and matches {LOCK_FILE}")
            return 0
        vendor(args.root, force=args.force)
    except VendorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
