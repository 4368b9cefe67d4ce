"""Progress of long operations (a download, a ``go install``), shown to the person waiting.

On a terminal one status line is rewritten in place; anywhere else (CI logs, pipes) a few plain
lines are written per operation, so a log stays short; at verbosity 0 nothing is written.
Errors are not progress: they are raised, and the caller reports them.
"""

from __future__ import annotations

import sys
import threading
from typing import Callable, TextIO

from django.core.management.base import OutputWrapper

#: Plain (non-terminal) output: one line per this fraction of a download...
PLAIN_FRACTION = 0.25
#: ... and one line per this many packages of a build.
PLAIN_PACKAGES = 50


class Progress:
    """Write progress to ``stream`` (default stderr) unless ``verbosity`` is 0."""

    def __init__(self, stream: TextIO | OutputWrapper | None = None, verbosity: int = 1,
                 tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        # A command's self.stdout adds a newline to every write unless told otherwise.
        self._write: Callable[[str], object] = (
            (lambda text: self.stream.write(text, ending=""))  # type: ignore[call-arg]
            if isinstance(self.stream, OutputWrapper) else self.stream.write)
        self.verbosity = verbosity
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty()) if tty is None and callable(isatty) else bool(tty)
        self._open = False  # a status line waits to be rewritten (terminal only)
        self._reported = -1  # the last plain step written
        self._lock = threading.Lock()  # a build's output is read on another thread

    def line(self, text: str) -> None:
        """A message of its own (it ends a status line first)."""
        if not self.verbosity:
            return
        with self._lock:
            self._end_status()
            self._write(text + "\n")
            self.stream.flush()
            self._reported = -1

    def amount(self, label: str, done: int, total: int | None) -> None:
        """Bytes of a transfer: a bar on a terminal, a line each quarter elsewhere."""
        if total:
            fraction = min(done / total, 1.0)
            width = 24
            bar = "#" * int(fraction * width)
            status = (f"{label} [{bar:<{width}}] {fraction:4.0%} "
                      f"{done / 1e6:.1f}/{total / 1e6:.1f} MB")
            step = int(fraction / PLAIN_FRACTION)
        else:
            status, step = f"{label} {done / 1e6:.1f} MB", int(done // 10_000_000)
        self._progress(status, step)

    def count(self, label: str, done: int, current: str = "") -> None:
        """Items of a job with no known total (packages built): a line every
        ``PLAIN_PACKAGES`` elsewhere than on a terminal."""
        status = f"{label}: {done}" + (f" ({current})" if current else "")
        self._progress(status, done // PLAIN_PACKAGES)

    def _progress(self, status: str, step: int) -> None:
        if not self.verbosity:
            return
        with self._lock:
            if self.tty:
                self._write("\r\033[K" + status)
                self._open = True
            elif step != self._reported:
                self._write(status + "\n")
                self._reported = step
            else:
                return
            self.stream.flush()

    def _end_status(self) -> None:
        if self._open:
            self._write("\n")
            self._open = False
