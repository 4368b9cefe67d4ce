"""Centrifugo v6 config files and a running Centrifugo process (``runws``, the demo, the tests)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests


def generate_config(
    *,
    port: int = 8427,
    address: str = "127.0.0.1",
    api_key: str | None = None,
    hmac_key: str | None = None,
    allowed_origins: list[str] | None = None,
    namespaces: list[str] | None = None,
    redis: list[str] | None = None,
    outbox_dsn: str | None = None,
    outbox_table: str = "instant_signals_outbox",
    outbox_partitions: int = 1,
    history_size: int = 100,
) -> dict[str, Any]:
    """A Centrifugo v6 config (nested keys) with fresh secrets unless given.

    Channels without a namespace (``public``, ``$users``, ``$staff``...) and each name in
    ``namespaces`` (``task`` for ``$task:42``) accept client and anonymous subscriptions (``$``
    channels still need a subscription token), and keep a short history with recovery so a
    reconnecting browser catches up.
    """
    # History and recovery everywhere: a client that reconnects (network blip, expired token,
    # Centrifugo restart with a Redis engine) gets the publications it missed.
    recovery = {"history_size": history_size, "history_ttl": "300s", "force_recovery": True}
    config: dict[str, Any] = {
        "http_server": {"address": address, "port": port},
        "log": {"level": "info"},
        "client": {
            "token": {"hmac_secret_key": hmac_key or secrets.token_urlsafe(48)},
            "allowed_origins": allowed_origins or ["http://localhost:8000", "http://127.0.0.1:8000"],
        },
        "http_api": {"key": api_key or secrets.token_urlsafe(32)},
        "admin": {"enabled": False},
        "health": {"enabled": True},
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
                **recovery,
            },
            "namespaces": [
                {
                    "name": name,
                    "allow_subscribe_for_client": True,
                    "allow_subscribe_for_anonymous": True,
                    **recovery,
                }
                for name in sorted(set(namespaces or []))
            ],
        },
        "engine": {"type": "memory"},
    }
    if redis:
        config["engine"] = {"type": "redis", "redis": {"address": redis}}
    if outbox_dsn:
        config["consumers"] = [
            {
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
            }
        ]
    return config


def write_config(path: str | os.PathLike, config: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds secrets
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle, indent=2)
    return path


def stop_process(process: subprocess.Popen | None, *, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL) a child server and wait for it; SIGKILL if it lingers 10 s."""
    if process is None or process.poll() is not None:
        return
    if kill:
        process.kill()
    else:
        process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class CentrifugoProcess:
    """One Centrifugo process run from a config file, with its log kept in a file."""

    def __init__(self, binary: str | os.PathLike, config_path: str | os.PathLike):
        self.binary = str(binary)
        self.config_path = Path(config_path)
        self.config = json.loads(self.config_path.read_text())
        self.log_path = self.config_path.with_suffix(".log")
        self.process: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return int(self.config["http_server"]["port"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    @property
    def api_key(self) -> str:
        return self.config["http_api"]["key"]

    @property
    def hmac_key(self) -> str:
        return self.config["client"]["token"]["hmac_secret_key"]

    def start(self, timeout: float = 20.0) -> CentrifugoProcess:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [self.binary, "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Centrifugo exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.base_url}/health", timeout=0.5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"Centrifugo was not healthy after {timeout} s:\n{self.log()}")

    def stop(self, kill: bool = False) -> None:
        stop_process(self.process, kill=kill)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> CentrifugoProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
