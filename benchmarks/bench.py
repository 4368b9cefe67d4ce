"""The benchmark session: the servers (Centrifugo, PostgreSQL, a counting proxy), the Django
project, django-instant's side, and scenarios 1-5 (default mode). Scenarios 6-11 are functions
of a ``Bench`` in ``durable.py`` and ``concurrency.py``; ``harness.py`` runs them."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Iterator

from common import (
    FULL, ITEM_CHANNEL, MAX_ROUNDS, QUEUE_MAX_SIZE, QUICK, Unavailable, arm_result, cent5,
    describe, failed_arm, latency_arm, log, percentile, rotated, summary,
)
from workloads import (
    clear_items, clear_table, dump, history_offset, item_values, save_items, setup_django,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


class Bench:
    """The running servers (Centrifugo, PostgreSQL), the Django project and the peer's venv."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.rounds = args.rounds or (1 if args.quick else 5)
        self.tmp = Path(tempfile.mkdtemp(prefix="instant-bench-"))
        self.peer_python = args.peer_python
        self.peer_problem: str | None = None
        self.pg_problem: str | None = None
        self.pg: Any = None
        self.consumer: Any = None
        self.processes: list[subprocess.Popen] = []
        # SQLite files on tmpfs when there is one: the disk's fsync at COMMIT (noise from other
        # users of a shared machine) stays out of the numbers, SQLite itself stays in.
        shm = Path("/dev/shm")
        self.db_dir = Path(tempfile.mkdtemp(prefix="instant-bench-db-",
                                            dir=shm if shm.is_dir() else None))
        (self.db_dir / "peer").mkdir()

    def rounds_for(self, key: str) -> int:
        return min(self.rounds, MAX_ROUNDS.get(key, self.rounds))

    # -- setup ------------------------------------------------------------------------------------
    def start(self) -> None:
        from instant_signals import installer

        self.binary = installer.find_or_install()
        self.server = self.centrifugo("main")
        self.api_url, self.api_key = self.server.api_url, self.server.api_key
        os.environ["BENCH_CENTRIFUGO_PORT"] = str(self.server.port)
        os.environ["BENCH_CENTRIFUGO_API_KEY"] = self.api_key
        os.environ["BENCH_CENTRIFUGO_HMAC_KEY"] = self.server.hmac_key
        self.start_postgres()
        aliases = ["default", "wal", "plain"] + (["pg", "pgc"] if self.pg else [])
        setup_django(str(self.db_dir), databases=tuple(aliases))
        if self.pg:
            self.consumer = self.centrifugo("consumer", outbox_dsn=self.pg.dsn("bench_consumer"))
        from django.conf import settings

        settings.CENTRIFUGO_API_URL = self.api_url
        from support.processes import CountingProxy

        self.proxy = CountingProxy(self.server.port)
        self.peer_versions = self.check_peer()

    def centrifugo(self, name: str, **options: Any) -> Any:
        """A Centrifugo on a free port with the ``bench`` namespace (history on)."""
        from instant_signals.centrifugo_config import generate_config, write_config
        from support.processes import CentrifugoProcess, free_port

        config = generate_config(port=free_port(), namespaces={"bench": {"public": True}},
                                 history_size=10, **options)
        config["log"]["level"] = "error"
        config["client"]["queue_max_size"] = QUEUE_MAX_SIZE
        if "main" != name and hasattr(self, "server"):  # one key pair for every node
            config["http_api"]["key"] = self.server.api_key
            config["client"]["token"]["hmac_secret_key"] = self.server.hmac_key
        path = write_config(self.tmp / f"centrifugo-{name}.json", config)
        return CentrifugoProcess(self.binary, path).start()

    def start_postgres(self) -> None:
        try:
            from support.services import PostgresServer, postgres_bindir
        except ImportError as exc:
            self.pg_problem = f"support.services cannot be imported: {exc}"
            return
        bindir = postgres_bindir()
        if bindir is None:
            self.pg_problem = "no PostgreSQL server binaries (initdb, pg_ctl)"
            return
        server = PostgresServer(bindir, Path(tempfile.mkdtemp(prefix="instant-bench-pg-")))
        try:
            server.start()
            import psycopg

            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                for name in ("bench", "bench_consumer"):
                    conn.execute(f"CREATE DATABASE {name}")
                self.pg_version = conn.execute("SHOW server_version").fetchone()[0]
        except Exception as exc:  # noqa: BLE001 - durable PostgreSQL arms become "unavailable"
            self.pg_problem = f"PostgreSQL did not start: {describe(exc)}"
            server.stop()
            return
        self.pg = server
        os.environ["BENCH_PG_PORT"] = str(server.port)

    def binary_version(self) -> str | None:
        from instant_signals.installer import binary_version

        return binary_version(self.binary)

    def stop(self) -> None:
        import shutil

        for process in self.processes:
            if process.poll() is None:
                process.kill()
        if getattr(self, "proxy", None) is not None:
            self.proxy.close()
        for server in (getattr(self, "server", None), self.consumer):
            if server is not None:
                server.stop()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            self.pg.stop()
            shutil.rmtree(self.pg.workdir, ignore_errors=True)
        shutil.rmtree(self.db_dir, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def check_peer(self) -> dict[str, Any] | None:
        if not self.peer_python or not Path(self.peer_python).exists():
            self.peer_problem = ("no django-instant venv (pass --peer-python; benchmarks/run "
                                 "makes one)")
            return None
        try:
            return self.peer("version")
        except RuntimeError as exc:
            self.peer_problem = f"django-instant venv does not run: {exc}"
            return None

    def peer(self, scenario: str, *, n: int = 0, channel: str = "",
             port: int | None = None) -> dict:
        env = dict(os.environ)
        if port is not None:
            env["BENCH_CENTRIFUGO_PORT"] = str(port)
        env.pop("PYTHONPATH", None)
        cmd = [self.peer_python, str(HERE / "peer_instant.py"), scenario, "--n", str(n),
               "--channel", channel or "bench:peer", "--db-dir", str(self.db_dir / "peer")]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip()[-2000:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    # -- worker processes -------------------------------------------------------------------------
    def spawn(self, *args: str, env: dict[str, str] | None = None,
              wait: bool = True) -> subprocess.Popen:
        """A worker.py process; returns once it printed ``ready`` (``wait``; else see
        ``ready``). Its stderr goes to a file (read when it fails)."""
        full_env = {**os.environ, "BENCH_DB_DIR": str(self.db_dir), **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
        errors = tempfile.TemporaryFile(mode="w+", dir=self.tmp)
        process = subprocess.Popen(
            [sys.executable, str(HERE / "worker.py"), *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=errors, text=True, env=full_env)
        process.errors = errors  # type: ignore[attr-defined]
        self.processes.append(process)
        if wait:
            self.ready(process)
        return process

    @staticmethod
    def stderr_of(process: subprocess.Popen) -> str:
        errors = process.errors  # type: ignore[attr-defined]
        errors.seek(0)
        return errors.read()[-3000:]

    def ready(self, process: subprocess.Popen) -> None:
        line = process.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "ready":
            process.kill()
            process.wait()
            role = process.args[2:4]  # type: ignore[index]
            raise RuntimeError(f"worker {role} did not start: {line}{self.stderr_of(process)}")

    @staticmethod
    def go(process: subprocess.Popen) -> None:
        process.stdin.write("go\n")  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]

    def collect(self, process: subprocess.Popen, timeout: float = 300) -> dict[str, Any]:
        """The JSON a worker printed last; raises with its stderr when it failed."""
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
            raise RuntimeError(f"worker timed out: {self.stderr_of(process)}") from None
        finally:
            if process in self.processes:
                self.processes.remove(process)
        lines = [line for line in out.strip().splitlines() if line.strip()]
        if process.returncode != 0 or not lines:
            raise RuntimeError(f"worker exited with {process.returncode}: "
                               f"{self.stderr_of(process)}")
        try:
            return json.loads(lines[-1])
        except ValueError:
            raise RuntimeError(f"worker said {lines[-1][:200]!r}: "
                               f"{self.stderr_of(process)}") from None

    # -- Django state -----------------------------------------------------------------------------
    def offset(self, channel: str, server: Any = None) -> int:
        server = server or self.server
        return history_offset(server.api_url, server.api_key, channel)

    def use_api(self, url: str) -> None:
        from django.conf import settings

        from instant_signals import client

        settings.CENTRIFUGO_API_URL = url
        client.close_session()

    @contextlib.contextmanager
    def app_settings(self, **values: Any) -> Iterator[None]:
        """``INSTANT_SIGNALS`` keys changed for a block (they are read when used)."""
        from django.conf import settings

        old = settings.INSTANT_SIGNALS
        settings.INSTANT_SIGNALS = {**old, **values}
        try:
            yield
        finally:
            settings.INSTANT_SIGNALS = old

    @staticmethod
    def item_model() -> Any:
        from benchproject.benchapp.models import Item

        return Item

    def broadcast_on(self, channel: str = ITEM_CHANNEL) -> None:
        """The bench model registered (all its fields) into ``channel``."""
        from instant_signals import broadcast_registry

        Item = self.item_model()
        declared = broadcast_registry.declarations(Item)
        if declared and [t.template for t in declared[0].templates] == [channel]:
            return
        broadcast_registry.unregister(Item)
        broadcast_registry.register(Item, channels=[channel], fields="__all__")

    def broadcast_off(self) -> None:
        from instant_signals import broadcast_registry

        broadcast_registry.unregister(self.item_model())

    # -- scenario 1 -------------------------------------------------------------------------------
    def s1(self) -> dict[str, Any]:
        from instant_signals import envelope, publish

        n = self.sizes["s1"]
        site = "Bench site"

        def bodies(channel: str) -> list[bytes]:
            return [dump({"channel": channel, "data": envelope.custom_event(
                channel, f"message {i}", site=site)}).encode() for i in range(n)]

        def run_instant_signals(channel: str) -> float:
            start = time.perf_counter()
            for i in range(n):
                publish(channel, f"message {i}")
            return time.perf_counter() - start

        def run_cent5(channel: str) -> float:
            Client, PublishRequest = cent5()
            client = Client(self.api_url, self.api_key)  # one reused Client, as cent's docs show
            start = time.perf_counter()
            for i in range(n):
                client.publish(PublishRequest(channel=channel, data={
                    "channel": channel, "site": site, "message": f"message {i}"}))
            return time.perf_counter() - start

        def run_urllib3(channel: str) -> float:
            import urllib3

            pool = urllib3.PoolManager(maxsize=1, retries=False,
                                       timeout=urllib3.Timeout(connect=2.0, read=10.0))
            headers = {"X-API-Key": self.api_key, "Content-Type": "application/json"}
            url = f"{self.api_url}/publish"
            encoded = bodies(channel)
            start = time.perf_counter()
            for body in encoded:
                reply = pool.request("POST", url, body=body, headers=headers)
                if reply.status != 200 or "error" in json.loads(reply.data):
                    raise RuntimeError(f"HTTP {reply.status}: {reply.data[:200]!r}")
            elapsed = time.perf_counter() - start
            pool.clear()
            return elapsed

        def run_requests(channel: str) -> float:
            import requests

            session = requests.Session()
            headers = {"X-API-Key": self.api_key, "Content-Type": "application/json"}
            url = f"{self.api_url}/publish"
            encoded = bodies(channel)
            start = time.perf_counter()
            for body in encoded:
                reply = session.post(url, data=body, headers=headers, timeout=10)
                if reply.status_code != 200 or "error" in reply.json():
                    raise RuntimeError(reply.text)
            elapsed = time.perf_counter() - start
            session.close()
            return elapsed

        def run_http_client(channel: str) -> float:
            import http.client
            from urllib.parse import urlsplit

            url = urlsplit(self.api_url)
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
            headers = {"X-API-Key": self.api_key, "Content-Type": "application/json"}
            path = f"{url.path}/publish"
            encoded = bodies(channel)
            start = time.perf_counter()
            for body in encoded:
                conn.request("POST", path, body=body, headers=headers)
                reply = conn.getresponse()
                if reply.status != 200 or "error" in json.loads(reply.read()):
                    raise RuntimeError(f"HTTP {reply.status}")
            elapsed = time.perf_counter() - start
            conn.close()
            return elapsed

        def run_django_instant(channel: str) -> float:
            out = self.peer("s1", n=n, channel=channel)
            if out["errors"]:
                raise RuntimeError(f"{out['errors']} errors, first: {out['first_error']}")
            return out["seconds"]

        arms: dict[str, Callable[[str], float]] = {
            "instant_signals publish()": run_instant_signals,
            "cent 5 Client (reused)": run_cent5,
            "django-instant publish()": run_django_instant,
            "raw urllib3 pool floor": run_urllib3,
            "raw requests.Session floor": run_requests,
            "raw http.client keep-alive (stdlib)": run_http_client,
        }
        results = self.run_arms("s1", arms, lambda seconds: n / seconds, n)
        results["unit"] = "msg/s"
        results["n"] = n
        return results

    def run_arms(self, tag: str, arms: dict[str, Callable[[str], float]],
                 metric: Callable[[float], float], expected: int) -> dict[str, Any]:
        """Each arm once per round, into a fresh channel; counts what Centrifugo accepted."""
        raw: dict[str, dict[str, Any]] = {
            name: {"values": [], "delivered": [], "status": "ok", "error": None} for name in arms}
        rounds = self.rounds_for(tag)
        for r in range(rounds):
            for index, (name, fn) in rotated(arms, r):
                slot = raw[name]
                if slot["status"] != "ok":
                    continue
                if "django-instant" in name and self.peer_problem:
                    slot.update(status="unavailable", error=self.peer_problem)
                    continue
                channel = f"bench:{tag}-a{index}-r{r}"
                try:
                    seconds = fn(channel)
                except Unavailable as exc:
                    slot.update(status="unavailable", error=str(exc))
                    continue
                except Exception as exc:  # noqa: BLE001 - a failing arm is a result, not a crash
                    slot.update(status="failed", error=describe(exc))
                    log(f"{tag} {name}: FAILED {slot['error']}")
                    continue
                slot["values"].append(metric(seconds))
                slot["delivered"].append(self.offset(channel))
            log(f"{tag} round {r + 1}/{rounds} done")
        out: dict[str, Any] = {"arms": {}}
        for name, slot in raw.items():
            if slot["status"] != "ok":
                out["arms"][name] = failed_arm(slot["status"], slot["error"])
                continue
            out["arms"][name] = arm_result(
                slot["values"], expected=[expected] * len(slot["values"]),
                delivered=slot["delivered"])
        return out

    # -- scenario 2 -------------------------------------------------------------------------------
    def s2(self) -> dict[str, Any]:
        from instant_signals import disable_broadcasts

        n = self.sizes["s2"]
        base = 0

        def timed_saves(enabled: str) -> tuple[float, int]:
            nonlocal base
            clear_items()
            if enabled == "off":
                self.broadcast_off()
            else:
                self.broadcast_on()
            before = self.offset(ITEM_CHANNEL)
            gc.collect()
            start = time.perf_counter()
            if enabled == "disabled":
                with disable_broadcasts():
                    save_items(n, base)
            else:
                save_items(n, base)
            elapsed = time.perf_counter() - start
            base += n
            return elapsed, self.offset(ITEM_CHANNEL) - before

        arms = {
            "off (model not registered)": "off",
            "registered, disable_broadcasts()": "disabled",
            "@broadcast on": "on",
            "django-instant publish() in post_save": "peer",
        }
        expected = {"off": 0, "disabled": 0, "on": n, "peer": n}
        for mode in ("off", "disabled", "on"):  # warm caches and connections, untimed
            timed_saves(mode)
        raw = {name: {"values": [], "delivered": [], "status": "ok", "error": None}
               for name in arms}
        reps = 1 if self.args.quick else 3
        rounds = self.rounds_for("s2")
        for r in range(rounds):
            best: dict[str, list[tuple[float, int]]] = {"off": [], "disabled": [], "on": []}
            for _ in range(reps):
                for mode in best:
                    best[mode].append(timed_saves(mode))
            for name, mode in arms.items():
                slot = raw[name]
                if slot["status"] != "ok":
                    continue
                try:
                    if mode == "peer":
                        if self.peer_problem:
                            slot.update(status="unavailable", error=self.peer_problem)
                            continue
                        channel = f"bench:s2-peer-r{r}"
                        out = self.peer("s2", n=n, channel=channel)
                        if out["errors"]:
                            raise RuntimeError(
                                f"{out['errors']} errors, first: {out['first_error']}")
                        seconds, got = out["seconds"], self.offset(channel)
                    else:
                        # the best of REPS passes (off, disabled and on each run in every pass,
                        # so a burst of load from other processes cannot favour one of them)
                        seconds = min(t for t, _ in best[mode])
                        gots = [g for _, g in best[mode]]
                        got = next((g for g in gots if g != expected[mode]), gots[0])
                except Exception as exc:  # noqa: BLE001
                    slot.update(status="failed", error=describe(exc))
                    log(f"s2 {name}: FAILED {slot['error']}")
                    continue
                slot["values"].append(seconds * 1000)
                slot["delivered"].append(got)
            log(f"s2 round {r + 1}/{rounds} done")

        # One untimed pass through the counting proxy: HTTP requests and TCP connections.
        requests_sent: dict[str, Any] = {}
        for name, mode in arms.items():
            self.proxy.reset()
            try:
                if mode == "peer":
                    if self.peer_problem:
                        continue
                    self.peer("s2", n=n, channel="bench:s2-peer-count", port=self.proxy.port)
                else:
                    self.use_api(f"http://127.0.0.1:{self.proxy.port}/api")
                    try:
                        timed_saves(mode)
                    finally:
                        self.use_api(self.api_url)
            except Exception as exc:  # noqa: BLE001
                log(f"s2 count {name}: FAILED {exc}")
                continue
            requests_sent[name] = {"http_requests": self.proxy.requests,
                                   "tcp_connections": self.proxy.connections}
        self.broadcast_on()
        out: dict[str, Any] = {"arms": {}, "unit": "ms", "n": n}
        for name, slot in raw.items():
            mode = arms[name]
            counts = requests_sent.get(name, {"http_requests": None, "tcp_connections": None})
            if slot["status"] != "ok":
                out["arms"][name] = failed_arm(slot["status"], slot["error"], **counts)
                continue
            out["arms"][name] = arm_result(
                slot["values"], expected=[expected[mode]] * len(slot["values"]),
                delivered=slot["delivered"], **counts)
        off = out["arms"]["off (model not registered)"]
        on = out["arms"]["@broadcast on"]
        out["on_over_off"] = summary([a / b for a, b in zip(on["rounds"], off["rounds"])])
        return out

    # -- scenario 3 -------------------------------------------------------------------------------
    def s3(self) -> dict[str, Any]:
        from django.db import transaction

        from instant_signals.tokens import connection_token
        from subscriber import Subscriber

        n = self.sizes["s3"]
        Item = self.item_model()
        out: dict[str, Any] = {"arms": {}, "unit": "ms", "n": n}
        cent_client: Any = None

        def instant_signals_arm(sub: Subscriber, channel: str, r: int) -> list[float | None]:
            self.broadcast_on(channel)
            latencies = []
            for i in range(n):
                stamp: list[float] = []
                with transaction.atomic():
                    # runs first after COMMIT, before instant_signals' own hook: t0 = committed
                    transaction.on_commit(lambda: stamp.append(time.perf_counter()))
                    item = Item(**item_values(100000 + r * n + i))
                    item.save()
                    sub.expect(channel, item.pk)
                arrived = sub.wait(channel, item.pk)
                latencies.append(None if arrived is None else arrived - stamp[0])
            self.broadcast_on()
            return latencies

        def cent5_arm(sub: Subscriber, channel: str, r: int) -> list[float | None]:
            nonlocal cent_client
            Client, PublishRequest = cent5()
            cent_client = cent_client or Client(self.api_url, self.api_key)
            self.broadcast_off()
            latencies = []
            for i in range(n):
                stamp: list[float] = []
                with transaction.atomic():
                    transaction.on_commit(lambda: stamp.append(time.perf_counter()))
                    item = Item(**item_values(200000 + r * n + i))
                    item.save()
                    data = {"channel": channel, "site": "Bench site", "event_class": "created",
                            "bucket": "benchapp.item", "data": {"pk": item.pk, "title": item.title}}
                    transaction.on_commit(lambda data=data: cent_client.publish(
                        PublishRequest(channel=channel, data=data)))
                    sub.expect(channel, item.pk)
                arrived = sub.wait(channel, item.pk)
                latencies.append(None if arrived is None else arrived - stamp[0])
            self.broadcast_on()
            return latencies

        arms = {"@broadcast on (after commit)": instant_signals_arm,
                "cent 5 in transaction.on_commit": cent5_arm}
        # an anonymous connection token (sub ""), as get_token/ gives a visitor
        sub = Subscriber(self.server.ws_url, connection_token(None, lifetime=3600)).start()
        rounds = self.rounds_for("s3")
        raw = {name: {"p50": [], "p99": [], "delivered": [], "received": [], "status": "ok",
                      "error": None} for name in arms}
        try:
            for r in range(rounds):
                for index, (name, fn) in rotated(arms, r):
                    slot = raw[name]
                    if slot["status"] != "ok":
                        continue
                    channel = f"bench:s3-a{index}-r{r}"
                    sub.add(channel)
                    try:
                        latencies = fn(sub, channel, r)
                    except Unavailable as exc:
                        slot.update(status="unavailable", error=str(exc))
                        continue
                    except Exception as exc:  # noqa: BLE001
                        slot.update(status="failed", error=describe(exc))
                        log(f"s3 {name}: FAILED {slot['error']}")
                        continue
                    finally:
                        sub.remove(channel)
                    got = [x * 1000 for x in latencies if x is not None]
                    if got:
                        slot["p50"].append(percentile(got, 0.5))
                        slot["p99"].append(percentile(got, 0.99))
                    slot["received"].append(len(got))
                    slot["delivered"].append(self.offset(channel))
                log(f"s3 round {r + 1}/{rounds} done")
        finally:
            sub.close()
        for name, slot in raw.items():
            out["arms"][name] = latency_arm(slot, n)
        out["arms"]["django-instant publish() in post_save"] = {
            "status": "not applicable",
            "error": "publishes inside the transaction, before COMMIT: clients may see rows that "
                     "are then rolled back, so commit-to-receipt is undefined for it",
        }
        return out

    # -- scenario 4 -------------------------------------------------------------------------------
    def s4(self) -> dict[str, Any]:
        """CPU time (process_time: time spent descheduled by other users of the machine is left
        out) of n saves in one transaction inside capture_broadcasts, on minus off; each round
        takes the best of PAIRS alternating off/on blocks. A second, SQL-free measure sends the
        same signals by hand, so only Django's dispatch and instant_signals' hooks are timed.
        Then what previous values cost: django-model-utils' FieldTracker on the same model
        (per save and per loaded row), against the snapshot instant_signals takes (per loaded
        row; its per-save part is inside the hooks' cost)."""
        from django.db import transaction
        from django.db.models.signals import post_save

        from instant_signals.testing import capture_broadcasts

        n = self.sizes["s4"]
        pairs = 2 if self.args.quick else 4
        base = 300000
        Item = self.item_model()
        try:
            from benchproject.benchapp.models import TrackedItem
        except ImportError:
            TrackedItem = None

        def block(on: bool) -> tuple[float, int]:
            nonlocal base
            clear_items()
            (self.broadcast_on if on else self.broadcast_off)()
            gc.collect()
            start = time.process_time()
            with capture_broadcasts() as published:
                save_items(n, base)
            elapsed = time.process_time() - start
            base += n
            return elapsed, len(published)

        values = [item_values(i) for i in range(n)]

        def hooks_only(on: bool) -> float:
            (self.broadcast_on if on else self.broadcast_off)()
            gc.collect()
            start = time.process_time()
            with capture_broadcasts() as published, transaction.atomic():
                for i, v in enumerate(values):
                    item = Item(**v)  # post_init
                    item.pk = 900000 + i
                    post_save.send(sender=Item, instance=item, created=True, update_fields=None,
                                   raw=False, using="default")
            elapsed = time.process_time() - start
            if on and len(published) != n:
                raise RuntimeError(f"captured {len(published)} of {n}")
            return elapsed

        def plain_saves(model: Any) -> float:
            """n saves of new rows of ``model`` (not registered) plus one update each."""
            nonlocal base
            clear_table(model._meta.db_table)
            gc.collect()
            start = time.process_time()
            with transaction.atomic():
                for i in range(base, base + n):
                    row = model(**item_values(i))
                    row.save()
                    row.count += 1
                    row.save()
            elapsed = time.process_time() - start
            base += n
            return elapsed / 2  # per save

        def loads(model: Any) -> float:
            gc.collect()
            start = time.process_time()
            rows = list(model.objects.all())
            elapsed = time.process_time() - start
            if len(rows) != n:
                raise RuntimeError(f"loaded {len(rows)} of {n}")
            return elapsed

        def fill(model: Any) -> None:
            clear_table(model._meta.db_table)
            with transaction.atomic():
                model.objects.bulk_create([model(**item_values(i)) for i in range(n)])

        on_us, off_us, cost, captured, direct = [], [], [], [], []
        ft_save, ft_load, snap_load = [], [], []
        block(False), block(True), hooks_only(False), hooks_only(True)  # warm up, untimed
        rounds = self.rounds_for("s4")
        for r in range(rounds):
            offs, ons = [], []
            for _ in range(pairs):
                offs.append(block(False)[0])
                t, got = block(True)
                ons.append(t)
            captured.append(got)
            t_on, t_off = min(ons), min(offs)
            on_us.append(t_on / n * 1e6)
            off_us.append(t_off / n * 1e6)
            cost.append((t_on - t_off) / n * 1e6)
            d_offs, d_ons = [], []
            for _ in range(pairs * 3):  # cheap blocks: more of them, alternating, best of each
                d_offs.append(hooks_only(False))
                d_ons.append(hooks_only(True))
            direct.append((min(d_ons) - min(d_offs)) / n * 1e6)
            # previous values: FieldTracker against nothing, and our snapshot against nothing
            self.broadcast_off()
            if TrackedItem is not None:
                plain, tracked = [], []
                for _ in range(pairs):
                    plain.append(plain_saves(Item))
                    tracked.append(plain_saves(TrackedItem))
                ft_save.append((min(tracked) - min(plain)) / n * 1e6)
                fill(Item), fill(TrackedItem)
                plain, tracked = [], []
                for _ in range(pairs * 3):
                    plain.append(loads(Item))
                    tracked.append(loads(TrackedItem))
                ft_load.append((min(tracked) - min(plain)) / n * 1e6)
            fill(Item)
            plain, snap = [], []
            for _ in range(pairs * 3):
                self.broadcast_off()
                plain.append(loads(Item))
                self.broadcast_on()
                snap.append(loads(Item))
            snap_load.append((min(snap) - min(plain)) / n * 1e6)
            log(f"s4 round {r + 1}/{rounds} done")
        self.broadcast_on()
        tracker = (arm_result(ft_save), arm_result(ft_load)) if TrackedItem is not None else (
            failed_arm("unavailable", "django-model-utils is not installed in this venv"),) * 2
        return {"unit": "µs/save", "n": n, "clock": "process_time", "arms": {
            "hooks' own cost (on − off)": arm_result(cost, expected=[n] * len(captured),
                                                     delivered=captured),
            "save with @broadcast on (capture)": arm_result(on_us),
            "save, model not registered": arm_result(off_us),
            "hooks alone, signals sent without SQL (on − off)": arm_result(direct),
            "django-model-utils FieldTracker, per save (tracked − plain)": tracker[0],
            "django-model-utils FieldTracker, per loaded row (µs/row)": tracker[1],
            "instant_signals snapshot, per loaded row (µs/row)": arm_result(snap_load),
        }}

    # -- scenario 5 -------------------------------------------------------------------------------
    def s5(self) -> dict[str, Any]:
        n = self.sizes["s5"]
        base = 1_000_000
        rounds = self.rounds_for("s5")

        def peak(on: bool) -> tuple[float, int]:
            nonlocal base
            clear_items()
            (self.broadcast_on if on else self.broadcast_off)()
            before = self.offset(ITEM_CHANNEL)
            gc.collect()
            tracemalloc.start()
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            save_items(n, base)
            peak_bytes = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            base += n
            return (peak_bytes - baseline) / 1e6, self.offset(ITEM_CHANNEL) - before

        on_mb, off_mb, diff, delivered = [], [], [], []
        for r in range(rounds):
            off, _ = peak(False)
            on, got = peak(True)
            on_mb.append(on)
            off_mb.append(off)
            diff.append(on - off)
            delivered.append(got)
            log(f"s5 round {r + 1}/{rounds} done")
        self.broadcast_on()
        return {"unit": "MB", "n": n, "arms": {
            "@broadcast on, peak above baseline": arm_result(
                on_mb, expected=[n] * rounds, delivered=delivered),
            "model not registered, peak above baseline": arm_result(off_mb),
            "events' share (on − off)": arm_result(diff),
        }, "peers": "django-instant publishes at each save and collects nothing (see scenario 2)"}
