"""Throwaway PostgreSQL and Redis servers on free loopback ports, for the reliability tests.

Each server lives in a temporary directory and is stopped by its fixture. Import the fixtures
into a test module (``from support.services import redis_server``); the conftest starts PostgreSQL
for the tests that use the "pg" database (``start_postgres``).
PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` user
(Debian's package creates it) in a directory chowned to it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from support.environment import need
from support.processes import free_port, stop_process


def postgres_bindir() -> Path | None:
    """Directory with initdb/pg_ctl: PG_BINDIR, PATH, or Debian's /usr/lib/postgresql/N/bin."""
    explicit = os.environ.get("PG_BINDIR")
    if explicit and (Path(explicit) / "initdb").exists():
        return Path(explicit)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PostgresServer:
    """``initdb`` + ``pg_ctl start`` on 127.0.0.1:<free port>, trust auth for loopback only."""

    def __init__(self, bindir: Path, workdir: Path):
        self.bindir = bindir
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.port = free_port()
        self.user = "postgres"
        self.process_user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root needs a 'postgres' system user") from None
            self.process_user = "postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(a) for a in args]
        if self.process_user:
            command = ["runuser", "-u", self.process_user, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.process_user:
            entry = pwd.getpwnam(self.process_user)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        self._run(self.bindir / "initdb", "-D", self.datadir, "-U", self.user, "-A", "trust",
                  "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.workdir} -c fsync=off "
                   f"-c max_connections=50")
        self._run(self.bindir / "pg_ctl", "-D", self.datadir, "-l", self.workdir / "postgres.log",
                  "-o", options, "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        if self.datadir.exists():
            self._run(self.bindir / "pg_ctl", "-D", self.datadir, "-m", "immediate", "-w",
                      "stop", check=False)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self) -> str:
        try:
            return (self.workdir / "postgres.log").read_text(errors="replace")
        except OSError:
            return ""


class RedisServer:
    """``redis-server`` on 127.0.0.1:<free port>, no persistence, in its own directory."""

    def __init__(self, binary: str, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "redis.log", "ab")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.log()}")
            if self.ping():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer PING:\n{self.log()}")

    def ping(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.process)

    def log(self) -> str:
        try:
            return (self.workdir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def redis_server():
    binary = shutil.which("redis-server")
    need(binary is not None, "redis-server")
    server = RedisServer(binary, Path(tempfile.mkdtemp(prefix="instant-redis-")))
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """A throwaway cluster; ``server.cleanup()`` stops and removes it."""
    bindir = postgres_bindir()
    need(bindir is not None, "PostgreSQL server binaries (initdb, pg_ctl)")
    # Not under pytest's tmp dir: the postgres user must be able to reach it.
    server = PostgresServer(bindir, Path(tempfile.mkdtemp(prefix="instant-pg-")))
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"PostgreSQL did not start: {exc.stderr}\n{server.log()[-2000:]}")
    return server
