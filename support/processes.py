"""Servers the tests and benchmarks run: a Centrifugo process on a free loopback port, and the
helpers to start and stop child processes. Not part of the package (users run Centrifugo with
``manage.py runws`` or their process manager)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from instant_signals.transactions import is_lock_error


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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


class CentrifugoProcess:
    """One Centrifugo process run from a config file, with its log kept in a file."""

    def __init__(self, binary: str | os.PathLike, config_path: str | os.PathLike):
        self.binary = str(binary)
        self.config_path = Path(config_path)
        self.config: dict[str, Any] = json.loads(self.config_path.read_text())
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
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Centrifugo exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health", timeout=0.5) as answer:
                    if answer.status == 200:
                        return
            except (OSError, urllib.error.URLError):
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


class CountingProxy:
    """An HTTP/1.1 keep-alive reverse proxy on loopback that counts requests and connections.

    It sees exactly what a library sends on the wire, whatever the library, which is why the
    HTTP request counts of scenario 2 are taken through it (in a pass of their own, untimed).
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.requests = 0
        self.connections = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with proxy.lock:
                    proxy.connections += 1
                self.upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)

            def do_POST(self) -> None:  # noqa: N802
                with proxy.lock:
                    proxy.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length")}
                self.upstream.request("POST", self.path, body=body, headers=headers)
                reply = self.upstream.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.getheader("Content-Type") or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.connections = 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class LockErrorLog(logging.Handler):
    """Counts the ``instant_signals`` log records at WARNING and above, lock errors apart (by
    the relay's own rule, ``transactions.is_lock_error``); it attaches itself to that logger
    (the relay tests and the S6b benchmark workers use it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lock_errors = 0
        self.other_errors = 0
        self.first: str | None = None
        logging.getLogger("instant_signals").addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        text = f"{record.getMessage()} {exc!r}"
        if is_lock_error(text):
            self.lock_errors += 1
        else:
            self.other_errors += 1
        self.first = self.first or text[:500]


def start_centrifugo(binary: str | os.PathLike, workdir: Path, *,
                     client: dict[str, Any] | None = None, **options: Any) -> CentrifugoProcess:
    """Centrifugo with the config installws would write for the declarations registered now;
    ``client`` adds keys to its ``client`` section (e.g. ``recovery_max_publication_limit``)."""
    from instant_signals.centrifugo_config import generate_config, write_config
    from instant_signals.registry import broadcast_registry

    options.setdefault("namespaces", broadcast_registry.namespaces())
    config = generate_config(port=free_port(), **options)
    config["client"].update(client or {})
    path = write_config(workdir / f"centrifugo-{config['http_server']['port']}.json", config)
    return CentrifugoProcess(binary, path).start()
