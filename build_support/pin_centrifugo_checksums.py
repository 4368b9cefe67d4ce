#!/usr/bin/env python3
"""Pin the sha256 of Centrifugo's official release archives in ``instant_signals/installer.py``.

Run by a maintainer with internet access, when the pinned version changes (or to fill in the
table the first time):

    python build_support/pin_centrifugo_checksums.py               # print the entry for 6.9.1
    python build_support/pin_centrifugo_checksums.py 6.9.1 --write # rewrite RELEASE_SHA256

It downloads the release's ``centrifugo_<version>_checksums.txt`` with urllib3 (through the
installer's own ``fetch``: timeouts, ``HTTPS_PROXY``/``NO_PROXY`` honoured), takes the sums of the
archives of every platform the installer supports (linux/darwin, amd64/arm64), prints the
``RELEASE_SHA256`` entry, and with ``--write`` rewrites that table in installer.py. Review the
diff before committing.

Pinning moves the trust to the moment this script runs: the sums are as authentic as that one
download from GitHub over HTTPS. Cross-check them against a second source (e.g. download one
archive on another machine and compare ``sha256sum``) before committing.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from instant_signals import installer  # noqa: E402

TABLE_START = re.compile(r"^RELEASE_SHA256\b.*=\s*\{\s*$", re.MULTILINE)


def release_sums(version: str, base_url: str) -> dict[str, str]:
    """``{"linux_amd64": sha256, ...}`` for every supported platform, from the checksums file."""
    url = f"{base_url.rstrip('/')}/v{version}/centrifugo_{version}_checksums.txt"
    text = installer.fetch(url).decode()
    sums = {}
    for key in installer.PLATFORMS:
        asset = f"centrifugo_{version}_{key}.tar.gz"
        digest = installer._checksum_from_file(text, asset)
        if digest is None or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise SystemExit(f"error: {asset} has no sha256 in {url}")
        sums[key] = digest
    return sums


def _version_key(version: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"[.-]", version))


def render_table(table: dict[str, dict[str, str]]) -> str:
    lines = ["RELEASE_SHA256: dict[str, dict[str, str]] = {"]
    for version in sorted(table, key=_version_key):
        entry = table[version]
        if not entry:
            lines.append(f"    # {version}: not pinned yet; run "
                         f"`python build_support/pin_centrifugo_checksums.py {version} --write`.")
            lines.append(f'    "{version}": {{}},')
            continue
        lines.append(f'    "{version}": {{')
        for key in sorted(entry):
            lines.append(f'        "{key}": "{entry[key]}",')
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines)


def rewrite(source: str, version: str, sums: dict[str, str]) -> str:
    """installer.py's text with the RELEASE_SHA256 entry of ``version`` replaced by ``sums``."""
    start = TABLE_START.search(source)
    if start is None:
        raise SystemExit("error: no `RELEASE_SHA256 = {` table found")
    end = source.find("\n}\n", start.end() - 1)
    if end < 0:
        raise SystemExit("error: the RELEASE_SHA256 table does not end with a `}` line")
    literal = source[source.index("{", start.start()) : end + 2]
    table = ast.literal_eval(literal)
    table[version] = dict(sums)
    return source[: start.start()] + render_table(table) + source[end + 2 :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", nargs="?", default=installer.PINNED_VERSION)
    parser.add_argument("--base-url", default=installer.RELEASE_BASE_URL,
                        help="release downloads URL (default: GitHub releases)")
    parser.add_argument("--write", action="store_true", help="rewrite the table in --file")
    parser.add_argument("--file", type=Path, default=Path(installer.__file__),
                        help="installer module to rewrite (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        sums = release_sums(args.version, args.base_url)
    except installer.InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(render_table({args.version: sums}))
    if args.write:
        args.file.write_text(rewrite(args.file.read_text(), args.version, sums))
        print(f"updated {args.file}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
