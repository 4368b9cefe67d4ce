"""Shared pieces of ``manage.py installws`` and ``manage.py runws``.

``installws`` writes a Centrifugo v6 config (default ``<BASE_DIR>/.centrifugo/config.json``) and,
next to it, ``<config>.binary``: the path of the Centrifugo binary it installed or was given, so
``runws`` starts the same binary without being told again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings

CONFIG_DIR_NAME = ".centrifugo"
CONFIG_FILE_NAME = "config.json"


def default_config_path() -> Path:
    """``<BASE_DIR>/.centrifugo/config.json`` (the current directory without ``BASE_DIR``)."""
    base = getattr(settings, "BASE_DIR", None) or os.getcwd()
    return Path(base) / CONFIG_DIR_NAME / CONFIG_FILE_NAME


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
    lines = [
        f"# Written by `manage.py installws` for the Centrifugo config {config_path}.",
        "# Keep it out of version control: it holds secrets.",
    ]
    lines += [f"{name} = {value!r}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` readable by the owner only (it holds secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path
