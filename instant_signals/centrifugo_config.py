"""Centrifugo v6 config files: generated from what the app declares, read back, kept private.

``installws`` writes the config (default ``<BASE_DIR>/.centrifugo/config.json``, the setting
``INSTANT_SIGNALS["CENTRIFUGO_CONFIG"]``) and, next to it, ``<config>.binary``: the binary it
installed or was given, so ``runws`` starts the same one. Every file that holds a secret is
written ``0600``, new or existing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ORIGINS = ["http://localhost:8000", "http://127.0.0.1:8000"]
DEFAULT_HISTORY_SIZE = 300  # Centrifugo recovers at most 300 publications by default
DEFAULT_HISTORY_TTL = "300s"


def generate_config(
    *,
    port: int = 8427,
    address: str = "127.0.0.1",
    api_key: str | None = None,
    hmac_key: str | None = None,
    allowed_origins: list[str] | None = None,
    namespaces: dict[str, dict[str, Any]] | None = None,
    redis: list[str] | None = None,
    outbox_dsn: str | None = None,
    outbox_table: str = "instant_signals_outbox",
    outbox_partitions: int = 1,
    history_size: int = DEFAULT_HISTORY_SIZE,
    history_ttl: str = DEFAULT_HISTORY_TTL,
) -> dict[str, Any]:
    """A Centrifugo v6 config (nested keys) with fresh secrets unless given.

    ``namespaces`` maps a namespace (``task`` for ``$task:42``) to ``{"public": bool,
    "presence": bool}``: only a namespace holding a public channel lets clients subscribe
    without a token (``$`` channels always need one). Channels without a namespace (``public``,
    ``$staff``; the key ``""``) accept token-less subscriptions to their public names, and never
    have presence (a ValueError: it would be on for all of them). Every
    channel keeps a history with recovery, so a reconnecting client catches up. A namespace's
    ``"options"`` (Centrifugo namespace options an output format needs, see
    ``formats.base.Format.namespace_options``) are written into it last.
    """
    recovery = {"history_size": history_size, "history_ttl": history_ttl,
                "force_recovery": True}
    namespaces = dict(namespaces or {})
    bare = namespaces.pop("", {})
    if bare.get("presence"):
        raise ValueError("presence is enabled per namespace: on channels without one it would be "
                         "on for all of them; put the channel in a namespace (\"room:lobby\")")
    config: dict[str, Any] = {
        "http_server": {"address": address, "port": port},
        "log": {"level": "info"},
        "client": {
            "token": {"hmac_secret_key": hmac_key or secrets.token_urlsafe(48)},
            "allowed_origins": allowed_origins or list(DEFAULT_ORIGINS),
        },
        "http_api": {"key": api_key or secrets.token_urlsafe(32)},
        "admin": {"enabled": False},
        "health": {"enabled": True},
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
                **recovery,
                **(bare.get("options") or {}),
            },
            "namespaces": [_namespace(name, needs, recovery)
                           for name, needs in sorted(namespaces.items())],
        },
        "engine": {"type": "memory"},
    }
    if redis:
        config["engine"] = {"type": "redis", "redis": {"address": redis}}
    if outbox_dsn:
        config["consumers"] = [{
            "enabled": True,
            "name": "instant_signals_outbox",
            "type": "postgresql",
            "postgresql": {
                "dsn": outbox_dsn,
                "outbox_table_name": outbox_table,
                "num_partitions": outbox_partitions,
                "partition_select_limit": 500,
                "partition_poll_interval": "300ms",
                "partition_notification_channel": outbox_table,
            },
        }]
    return config


def _namespace(name: str, needs: dict[str, Any], recovery: dict[str, Any]) -> dict[str, Any]:
    public = bool(needs.get("public"))
    options: dict[str, Any] = {
        "name": name,
        "allow_subscribe_for_client": public,
        "allow_subscribe_for_anonymous": public,
        **recovery,
        **(needs.get("options") or {}),
    }
    if needs.get("presence"):
        options.update(_PRESENCE)
    return options


# Presence for the channel's readers only (its subscribers), with join/leave pushed to them.
_PRESENCE = {"presence": True, "join_leave": True, "force_push_join_leave": True,
             "allow_presence_for_subscriber": True}


def write_private(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` readable by the owner only, also when the file already existed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode applies to new files only
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return target


def write_config(path: str | os.PathLike[str], config: dict[str, Any]) -> Path:
    return write_private(path, json.dumps(config, indent=2) + "\n")


class ConfigError(Exception):
    """The existing config cannot be read; the message says what to do."""


def read_config(path: Path) -> dict[str, Any] | None:
    """The config at ``path``, None if there is none; ConfigError if it is not a JSON object."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        config = json.loads(text)
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return config


def existing_secrets(config: dict[str, Any]) -> dict[str, str]:
    """``api_key`` / ``hmac_key`` of a v6 config (only those that are set)."""
    found = {}
    api_key = (config.get("http_api") or {}).get("key")
    hmac_key = ((config.get("client") or {}).get("token") or {}).get("hmac_secret_key")
    if isinstance(api_key, str) and api_key:
        found["api_key"] = api_key
    if isinstance(hmac_key, str) and hmac_key:
        found["hmac_key"] = hmac_key
    return found


def client_host(address: str) -> str:
    """Where Django reaches a Centrifugo bound to ``address`` (a wildcard means this machine)."""
    if address in ("", "0.0.0.0"):
        return "127.0.0.1"
    if address == "::":
        return "[::1]"
    if ":" in address and not address.startswith("["):
        return f"[{address}]"
    return address


def django_settings(config: dict[str, Any], ws_url: str | None = None) -> dict[str, Any]:
    """The Django settings that talk to the Centrifugo run from ``config``."""
    server = config.get("http_server") or {}
    host = client_host(str(server.get("address", "127.0.0.1")))
    port = int(server.get("port", 8000))
    return {
        "CENTRIFUGO_HOST": f"http://{host}",
        "CENTRIFUGO_PORT": port,
        "CENTRIFUGO_API_KEY": config["http_api"]["key"],
        "CENTRIFUGO_HMAC_KEY": config["client"]["token"]["hmac_secret_key"],
        "CENTRIFUGO_WS_URL": ws_url or f"ws://{host}:{port}/connection/websocket",
    }


def settings_module_text(values: dict[str, Any], config_path: Path) -> str:
    lines = [f"# Written by `manage.py installws` for the Centrifugo config {config_path}.",
             "# Keep it out of version control: it holds secrets."]
    lines += [f"{name} = {value!r}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def env_file_text(values: dict[str, Any], config_path: Path) -> str:
    """The settings as ``NAME=value`` lines (for systemd's EnvironmentFile, docker --env-file,
    or ``set -a; . ./centrifugo.env``)."""
    return merge_env("", values, config_path)[0]


_ENV_LINE = re.compile(r"^(?P<lead>\s*(?:export\s+)?)(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                       r"(?P<eq>\s*=\s*)(?P<value>.*)$")


@dataclass
class EnvChanges:
    """What ``merge_env`` did: keys added, updated, kept as they were, and other lines kept."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    other_lines: int = 0

    def summary(self) -> str:
        parts = [f"{what} {', '.join(names)}" for what, names in
                 (("added", self.added), ("updated", self.updated)) if names]
        if self.kept:
            parts.append(f"kept {', '.join(self.kept)} (unchanged)")
        parts.append(f"kept {self.other_lines} other line{'s' * (self.other_lines != 1)} "
                     f"as they were")
        return "; ".join(parts)


def merge_env(text: str, values: dict[str, Any],
              config_path: Path) -> tuple[str, EnvChanges]:
    """``text`` (an existing env file) with ``values`` set: a line that sets one of them gets the
    new value in place (its ``export`` and quotes kept), missing ones are appended; every other
    line (comments, other keys, multi-line quoted values) is left exactly as it was."""
    changes = EnvChanges()
    wanted = {name: str(value) for name, value in values.items()}
    out: list[str] = []
    quote: str | None = None  # inside a multi-line quoted value of another key
    for line in text.splitlines(keepends=True):
        if quote is not None:
            if _closes(line.rstrip("\r\n"), quote):
                quote = None
            out.append(line)
            changes.other_lines += 1
            continue
        body = line.rstrip("\r\n")
        found = _ENV_LINE.match(body)
        if found is None or found["name"] not in wanted:
            if found is not None:
                quote = _opens(found["value"])
            out.append(line)
            changes.other_lines += 1
            continue
        name, raw = found["name"], found["value"]
        old, quoted = _unquote(raw)
        new = wanted[name]
        if old == new:
            if name not in changes.kept:
                changes.kept.append(name)
            out.append(line)
            continue
        mark = quoted or ""
        out.append(f"{found['lead']}{name}{found['eq']}{mark}{new}{mark}{line[len(body):]}")
        if name not in changes.updated:
            changes.updated.append(name)
    missing = [name for name in wanted if name not in changes.updated + changes.kept]
    if missing:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.append(f"# Written by `manage.py installws` for the Centrifugo config "
                   f"{config_path}.\n")
        out.append("# Keep it out of version control: it holds secrets.\n")
        out += [f"{name}={wanted[name]}\n" for name in missing]
        changes.added = missing
    return "".join(out), changes


def _unquote(raw: str) -> tuple[str, str | None]:
    value = raw.strip()
    if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
        return value[1:-1], value[0]
    return value, None


def _opens(raw: str) -> str | None:
    """The quote a value opens and does not close on its line (a multi-line value), if any."""
    value = raw.strip()
    if value[:1] in ("'", '"') and not _closes(value[1:], value[0]):
        return value[0]
    return None


def _closes(rest: str, quote: str) -> bool:
    escaped = False
    for char in rest:
        if escaped:
            escaped = False
        elif char == "\\" and quote == '"':
            escaped = True
        elif char == quote:
            return True
    return False


def write_env(path: Path, values: dict[str, Any], config_path: Path) -> EnvChanges:
    """Merge ``values`` into the env file at ``path`` (created if missing), atomically, 0600."""
    try:
        existing = path.read_text()
    except FileNotFoundError:
        existing = ""
    text, changes = merge_env(existing, values, config_path)
    if text != existing or stat.S_IMODE(path.stat().st_mode) != 0o600:
        temporary = path.with_name(f".{path.name}.installws-{os.getpid()}")
        write_private(temporary, text)
        os.replace(temporary, path)
    return changes


def binary_record(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".binary")


def remember_binary(config_path: Path, binary: Path) -> None:
    binary_record(config_path).write_text(str(Path(binary).resolve()) + "\n")


def remembered_binary(config_path: Path) -> Path | None:
    try:
        text = binary_record(config_path).read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None
