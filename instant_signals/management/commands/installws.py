"""``manage.py installws``: install Centrifugo and write its v6 config and the Django settings.

    python manage.py installws                      # cached / downloaded / built Centrifugo
    python manage.py installws --binary /usr/local/bin/centrifugo --port 9000 \\
        --origin https://example.com --write-settings centrifugo_settings.py
    python manage.py installws --redis redis://10.0.0.5:6379      # several Centrifugo nodes
    python manage.py installws --outbox-dsn postgresql://...       # durable delivery
    python manage.py installws --write-env .env                    # settings as NAME=value

A second run keeps the secrets of the config it finds (and updates everything else, e.g. the
namespaces of models added since); ``--overwrite`` makes fresh ones. Namespaces and their
protection come from the ``@broadcast`` declarations and the ``Channel`` rows: a namespace lets
clients subscribe without a token only when it holds a public channel.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django.db import DatabaseError

from instant_signals import centrifugo_config as cc
from instant_signals import conf, installer
from instant_signals.progress import Progress
from instant_signals.channels import is_private, namespace_of
from instant_signals.models import Channel
from instant_signals.registry import broadcast_registry


def channel_namespaces(extra: list[str]) -> dict[str, dict[str, Any]]:
    """Namespaces of the declared ``@broadcast`` channels, of the ``Channel`` rows and of
    ``--namespace`` (public), with what each needs (see ``generate_config``)."""
    found = broadcast_registry.namespaces()
    try:  # the table may not exist yet (installws before migrate): then rows add nothing
        rows = list(Channel.objects.filter(name__contains=":").values_list("name", flat=True))
    except DatabaseError:
        rows = []
    for name in [*rows, *extra]:
        namespace = namespace_of(name if ":" in name else f"{name}:")
        if namespace:
            needs = found.setdefault(namespace, {"public": False, "presence": False})
            needs["public"] |= not is_private(name)
    return found


class Command(BaseCommand):
    help = ("Install Centrifugo (v%s by default) and write its v6 config with fresh secrets, "
            "then print the Django settings that use it." % installer.PINNED_VERSION)
    requires_system_checks: list[str] = []  # it makes the very settings the checks ask for

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # Our --version (of Centrifugo) replaces Django's --version (of Django).
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--version", dest="centrifugo_version",
                            default=installer.PINNED_VERSION,
                            help="Centrifugo version to install (default %(default)s).")
        parser.add_argument("--install-dir", type=Path,
                            help="Cache folder for the binary (default: $INSTANT_SIGNALS_CACHE "
                                 "or ~/.cache/instant_signals).")
        parser.add_argument("--binary", type=Path,
                            help="Use this existing Centrifugo binary (it must be of --version).")
        parser.add_argument("--build", action="store_true",
                            help="Build from source with `go install` without trying the "
                                 "download first (it is tried anyway when the download fails).")
        parser.add_argument("--no-install", action="store_true",
                            help="Only use a binary that is already there (PATH, "
                                 "CENTRIFUGO_BINARY or the cache); never download or build.")
        parser.add_argument("--config-only", action="store_true",
                            help="Write the config and settings without any Centrifugo binary "
                                 "(production runs the official Docker image or a package); "
                                 "the config is then not checked with `centrifugo checkconfig`.")
        parser.add_argument("--config", type=Path,
                            help="Config file to write (default <BASE_DIR>/.centrifugo/config.json).")
        parser.add_argument("--address", default="127.0.0.1",
                            help="Address Centrifugo listens on (default %(default)s).")
        parser.add_argument("--port", type=int, default=conf.DEFAULT_PORT,
                            help="Port Centrifugo listens on (default %(default)s).")
        parser.add_argument("--origin", action="append", dest="origins", metavar="URL",
                            help="Origin of the pages allowed to connect, e.g. "
                                 "https://example.com (repeatable; default "
                                 "http://localhost:8000 and http://127.0.0.1:8000).")
        parser.add_argument("--ws-url",
                            help="Websocket URL browsers connect to, if not the address:port "
                                 "(e.g. behind a proxy: wss://example.com/connection/websocket).")
        parser.add_argument("--redis", action="append", metavar="ADDRESS",
                            help="Use the Redis engine at ADDRESS (redis://host:6379); repeat "
                                 "to shard over several Redis servers. Every Centrifugo node "
                                 "gets the same config.")
        parser.add_argument("--outbox-dsn", metavar="DSN",
                            help="PostgreSQL DSN of Django's database: Centrifugo consumes the "
                                 "instant_signals outbox table (INSTANT_SIGNALS['DELIVERY'] = "
                                 "'outbox').")
        parser.add_argument("--namespace", action="append", dest="namespaces", default=[],
                            help="Extra public channel namespace (repeatable; \"$name\" for a "
                                 "private one); those of @broadcast channels and Channel rows "
                                 "are added anyway.")
        parser.add_argument("--history-size", type=int, default=cc.DEFAULT_HISTORY_SIZE,
                            help="Publications kept per channel for reconnecting clients "
                                 "(default %(default)s).")
        parser.add_argument("--history-ttl", default=cc.DEFAULT_HISTORY_TTL,
                            help="How long they are kept (default %(default)s).")
        parser.add_argument("--overwrite", action="store_true",
                            help="Replace the secrets of an existing config with fresh ones.")
        parser.add_argument("--write-settings", type=Path, metavar="FILE",
                            help="Write the Django settings into FILE (a Python module to "
                                 "import from settings.py) instead of printing them.")
        parser.add_argument("--write-env", type=Path, metavar="FILE",
                            help="Write the settings as NAME=value lines into FILE (an env "
                                 "file for systemd, docker --env-file or your shell).")

    def handle(self, *args: Any, **options: Any) -> None:
        config_path: Path = options["config"] or conf.centrifugo_config_path()
        binary = None if options["config_only"] else self.find_binary(options)

        try:
            existing = cc.read_config(config_path)
        except cc.ConfigError as exc:
            if not options["overwrite"]:
                raise CommandError(f"{exc}. Fix it, or run installws --overwrite to replace it "
                                   f"with a fresh config (new secrets).") from None
            existing = None
        keep = cc.existing_secrets(existing or {}) if not options["overwrite"] else {}
        if existing is not None and not options["overwrite"]:
            if len(keep) < 2:
                raise CommandError(
                    f"{config_path} exists but has no http_api.key or "
                    f"client.token.hmac_secret_key; run installws --overwrite to replace it.")
            self.stdout.write(f"Keeping the secrets of the existing {config_path} "
                              f"(--overwrite makes new ones).")

        if not 0 < options["port"] < 65536:
            raise CommandError(f"--port must be from 1 to 65535, not {options['port']}")
        if options["history_size"] < 0:
            raise CommandError("--history-size must be 0 or more")
        namespaces = channel_namespaces(options["namespaces"])
        self.warn_unprotected_rows()
        config = cc.generate_config(
            port=options["port"],
            address=options["address"],
            allowed_origins=options["origins"] or None,
            namespaces=namespaces,
            redis=options["redis"] or None,
            outbox_dsn=options["outbox_dsn"],
            outbox_partitions=int(conf.app_setting("OUTBOX_PARTITIONS")),
            history_size=options["history_size"],
            history_ttl=options["history_ttl"],
            **keep,
        )
        cc.write_config(config_path, config)
        if binary is not None:
            cc.remember_binary(config_path, binary)
            self.check_config(binary, config_path)
        listed = ", ".join(sorted(n for n in namespaces if n)) or "none"
        self.stdout.write(f"Wrote {config_path} (namespaces: {listed}; "
                          f"engine: {config['engine']['type']}"
                          f"{'; outbox consumer' if options['outbox_dsn'] else ''}).")

        values = cc.django_settings(config, options["ws_url"])
        target: Path | None = options["write_settings"]
        env_target: Path | None = options["write_env"]
        if target is not None:
            cc.write_private(target, cc.settings_module_text(values, config_path))
            self.stdout.write(f"Wrote the Django settings into {target} "
                              f"(import them at the end of settings.py).")
        if env_target is not None:
            changes = cc.write_env(env_target, values, config_path)
            self.stdout.write(f"Wrote the settings as environment variables into {env_target}: "
                              f"{changes.summary()}.")
        if target is None and env_target is None:
            self.stdout.write("\n# Django settings (keep the keys secret):")
            for name, value in values.items():
                self.stdout.write(f"{name} = {value!r}")
            self.stdout.write("")
        if binary is None:
            port = options["port"]
            self.stdout.write(f"Give {config_path} to your Centrifugo, e.g. docker run -p "
                              f"{port}:{port} -v {config_path.resolve()}:/centrifugo/config.json "
                              f"{installer.docker_image()} centrifugo -c config.json")
            if options["address"] in ("127.0.0.1", "localhost", "::1"):
                self.stdout.write("(inside a container, write the config with --address 0.0.0.0: "
                                  "127.0.0.1 is the container's own loopback)")
        else:
            self.stdout.write(f"Start Centrifugo with: python manage.py runws"
                              f"{'' if options['config'] is None else f' --config {config_path}'}")

    def warn_unprotected_rows(self) -> None:
        try:
            bad = list(Channel.objects.unprotected().values_list("name", flat=True))
        except DatabaseError:
            return
        for name in bad:
            self.stderr.write(f"Warning: Channel {name!r} is not public but has no \"$\": "
                              f"Centrifugo serves it to anyone. Rename it to \"${name}\".")

    def find_binary(self, options: dict[str, Any]) -> Path:
        try:
            binary = installer.find_or_install(
                options["centrifugo_version"],
                binary=options["binary"],
                cache=options["install_dir"],
                download=not options["build"] and not options["no_install"],
                build=not options["no_install"],
                progress=Progress(self.stdout, verbosity=options["verbosity"]),
            )
        except installer.InstallError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Centrifugo {options['centrifugo_version']}: {binary}")
        return binary

    def check_config(self, binary: Path, config_path: Path) -> None:
        """Centrifugo itself validates what was written (unknown keys are errors)."""
        try:
            result = subprocess.run(
                [str(binary), "checkconfig", "--strict", "--config", str(config_path)],
                capture_output=True, text=True, timeout=60,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise CommandError(f"cannot run {binary} checkconfig: {exc}") from None
        if result.returncode != 0:
            raise CommandError(f"Centrifugo refused {config_path}:\n"
                               f"{(result.stdout + result.stderr).strip()}")
