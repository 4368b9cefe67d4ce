"""``manage.py runws``: run the Centrifugo that ``installws`` set up, in the foreground.

Its log goes to this terminal; Ctrl-C and SIGTERM are passed to Centrifugo, which shuts down
cleanly, and the command exits with Centrifugo's exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from instant_signals import centrifugo_config, conf, installer

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Command(BaseCommand):
    help = "Run Centrifugo in the foreground with the config written by installws."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--config", type=Path,
                            help="Centrifugo config (default <BASE_DIR>/.centrifugo/config.json).")
        parser.add_argument("--binary", type=Path,
                            help="Centrifugo binary (default: the one installws used).")

    def handle(self, *args: Any, **options: Any) -> None:
        config_path: Path = options["config"] or conf.centrifugo_config_path()
        if not config_path.is_file():
            raise CommandError(
                f"No Centrifugo config at {config_path}.\n"
                f"Run `python manage.py installws"
                f"{'' if options['config'] is None else f' --config {config_path}'}` first: it "
                f"installs Centrifugo, writes this config and prints the Django settings to use.")
        binary = self.find_binary(options["binary"], config_path)
        self.stdout.write(f"Starting {binary} --config {config_path} (Ctrl-C to stop)")
        self.stdout.flush()
        sys.stderr.flush()
        # Centrifugo reads CENTRIFUGO_* variables (and a .env file in its working directory) as
        # its own configuration: Django's settings of the same prefix are not for it.
        env = {k: v for k, v in os.environ.items() if k not in DJANGO_SETTINGS_VARS}
        sys.exit(run_foreground([str(binary), "--config", str(config_path.resolve())], env=env,
                                cwd=config_path.resolve().parent))

    def find_binary(self, explicit: Path | None, config_path: Path) -> Path:
        remembered = centrifugo_config.remembered_binary(config_path)
        if explicit is None and not os.environ.get("CENTRIFUGO_BINARY") and remembered:
            if remembered.is_file() and os.access(remembered, os.X_OK):
                return remembered
        try:
            return installer.find_or_install(binary=explicit, download=False, build=False)
        except installer.InstallError as exc:
            raise CommandError(
                f"Centrifugo is not installed: {exc}\n"
                f"Run `python manage.py installws` (it downloads Centrifugo, or builds it with Go "
                f"when the download fails), or give an existing binary with --binary PATH.") from None


#: Django settings (django-instant's names) that an env file may hold for Django's side.
DJANGO_SETTINGS_VARS = frozenset({"CENTRIFUGO_HOST", "CENTRIFUGO_PORT", "CENTRIFUGO_API_KEY",
                                  "CENTRIFUGO_HMAC_KEY", "CENTRIFUGO_API_URL",
                                  "CENTRIFUGO_WS_URL"})


def run_foreground(command: list[str], env: dict[str, str] | None = None,
                   cwd: Path | None = None) -> int:
    """Run ``command`` sharing this terminal; forward INT/TERM/HUP; return its exit code."""
    process = subprocess.Popen(command, env=env, cwd=cwd)
    previous = {}

    def forward(signum: int, frame: Any) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    for signum in FORWARDED:
        previous[signum] = signal.signal(signum, forward)
    try:
        while True:
            try:
                code = process.wait()
                break
            except KeyboardInterrupt:  # a handler replaced ours: keep waiting for the child
                forward(signal.SIGINT, None)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    # A child killed by a signal reports -N; shells report 128+N.
    return 128 - code if code < 0 else code
