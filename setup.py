"""Build hook: put the pinned `centrifuge` browser client into the package before packaging.

All metadata lives in pyproject.toml. This file only makes ``sdist`` and ``build_py`` (wheels,
editable installs) run build_support/vendor_centrifuge.py first: it copies the npm client's ESM
build, checked against package-lock.json's sha512, to
instant_signals/static/instant_signals/vendor/centrifuge/ (gitignored, shipped in both the sdist
and the wheel). It fetches nothing when the files already match the lock file, so a wheel built
from an sdist needs no npm.
"""

import importlib.util
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))


def vendor_centrifuge(strict: bool = True) -> None:
    path = os.path.join(HERE, "build_support", "vendor_centrifuge.py")
    spec = importlib.util.spec_from_file_location("vendor_centrifuge", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.vendor(HERE, log=lambda message: print(message, file=sys.stderr))
    except module.VendorError as exc:
        if strict:
            raise SystemExit(f"error: {exc}") from None
        # An editable install still works for Python; scripts/lib.sh vendors the client again.
        print(f"warning: the browser client is not vendored: {exc}", file=sys.stderr)


class BuildPy(build_py):
    def run(self):
        vendor_centrifuge(strict=not getattr(self, "editable_mode", False))
        super().run()


class SDist(sdist):
    def run(self):
        vendor_centrifuge()  # before egg_info lists the files, so the sdist carries them
        super().run()


setup(cmdclass={"build_py": BuildPy, "sdist": SDist})
