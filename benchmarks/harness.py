"""Benchmarks of instant_signals side by side with its peers, against a real Centrifugo v6.

Run through ``benchmarks/run`` (which builds the two venvs); this file runs in ``.venv-bench``
(the project + ``cent>=5`` + ``centrifuge-python``) and starts django-instant's side in
``--peer-python`` (a venv with ``django-instant==4.2.0`` and ``cent<5``) as subprocesses.

Every arm of every scenario runs once per round, arms interleaved inside a round so that noise
from a shared machine falls on all of them alike; the table gives the median over rounds and the
spread (min..max). Correctness is checked on the server: each arm publishes into channels of the
``bench`` namespace, which has history on, and the stream's top offset tells how many
publications Centrifugo accepted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from workloads import (  # noqa: E402
    CountingProxy, clear_items, dump, history_offset, item_values, save_items, setup_django,
)

FULL = {"s1": 2000, "s2": 1000, "s3": 1000, "s4": 1000, "s5": 10000}
QUICK = {"s1": 40, "s2": 30, "s3": 30, "s4": 30, "s5": 200}
ITEM_CHANNEL = "bench:items"


# -- helpers ---------------------------------------------------------------------------------
def summary(values: list[float]) -> dict[str, Any]:
    return {
        "rounds": values,
        "median": statistics.median(values) if values else None,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (values must not be empty)."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def cent5() -> tuple[Any, Any]:
    """cent 5's Client and PublishRequest (the venv of benchmarks/run has it; others may not)."""
    try:
        from cent import Client, PublishRequest  # PublishRequest exists from cent 5 on
    except ImportError:
        raise Unavailable("cent>=5 is not installed in this venv") from None
    return Client, PublishRequest


class Unavailable(RuntimeError):
    """An arm that cannot run here (a peer library missing): a result, not a failure."""


def log(message: str) -> None:
    print(f"   {message}", file=sys.stderr, flush=True)


class Bench:
    """The running Centrifugo, the Django project and the peer's interpreter."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.rounds = args.rounds or (1 if args.quick else 5)
        self.tmp = Path(tempfile.mkdtemp(prefix="instant-bench-"))
        self.peer_python = args.peer_python
        self.peer_problem: str | None = None
        # SQLite files on tmpfs when there is one: the disk's fsync at COMMIT (noise from other
        # users of a shared machine) stays out of the numbers, SQLite itself stays in.
        shm = Path("/dev/shm")
        self.db_dir = Path(tempfile.mkdtemp(prefix="instant-bench-db-", dir=shm if shm.is_dir() else None))

    # -- setup ---------------------------------------------------------------------------------
    def start(self) -> None:
        from instant_signals import installer
        from instant_signals.server import CentrifugoProcess, free_port, generate_config, write_config

        self.binary = installer.find_or_install()
        config = generate_config(port=free_port(), namespaces=["bench"], history_size=10)
        path = write_config(self.tmp / "centrifugo.json", config)
        config["log"]["level"] = "error"
        write_config(path, config)
        self.server = CentrifugoProcess(self.binary, path).start()
        self.api_url, self.api_key = self.server.api_url, self.server.api_key
        os.environ["BENCH_CENTRIFUGO_PORT"] = str(self.server.port)
        os.environ["BENCH_CENTRIFUGO_API_KEY"] = self.api_key
        os.environ["BENCH_CENTRIFUGO_HMAC_KEY"] = self.server.hmac_key
        setup_django(str(self.db_dir / "bench.sqlite3"))
        from django.conf import settings

        settings.CENTRIFUGO_API_URL = self.api_url
        self.proxy = CountingProxy(self.server.port)
        self.peer_versions = self.check_peer()

    def binary_version(self) -> str | None:
        from instant_signals.installer import binary_version

        return binary_version(self.binary)

    def stop(self) -> None:
        import shutil

        if getattr(self, "proxy", None) is not None:
            self.proxy.close()
        if getattr(self, "server", None) is not None:
            self.server.stop()
        shutil.rmtree(self.db_dir, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def check_peer(self) -> dict[str, Any] | None:
        if not self.peer_python or not Path(self.peer_python).exists():
            self.peer_problem = "no django-instant venv (pass --peer-python; benchmarks/run makes one)"
            return None
        try:
            return self.peer("version")
        except RuntimeError as exc:
            self.peer_problem = f"django-instant venv does not run: {exc}"
            return None

    def peer(self, scenario: str, *, n: int = 0, channel: str = "", port: int | None = None) -> dict:
        env = dict(os.environ)
        if port is not None:
            env["BENCH_CENTRIFUGO_PORT"] = str(port)
        env.pop("PYTHONPATH", None)
        db = self.db_dir / "peer.sqlite3"
        cmd = [self.peer_python, str(HERE / "peer_instant.py"), scenario, "--n", str(n),
               "--channel", channel or "bench:peer", "--db", str(db)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip()[-2000:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    def offset(self, channel: str) -> int:
        return history_offset(self.api_url, self.api_key, channel)

    def use_api(self, url: str) -> None:
        from django.conf import settings

        from instant_signals import client

        settings.CENTRIFUGO_API_URL = url
        client.close_session()

    @staticmethod
    def item_model():
        from benchproject.benchapp.models import Item

        return Item

    def broadcast_on(self) -> None:
        from instant_signals.registry import registry

        Item = self.item_model()
        if not registry.is_registered(Item):
            registry.register(Item, channels=[ITEM_CHANNEL])

    def broadcast_off(self) -> None:
        from instant_signals.registry import registry

        registry.unregister(self.item_model())

    # -- scenario 1 ----------------------------------------------------------------------------
    def s1(self) -> dict[str, Any]:
        from instant_signals import publish
        from instant_signals.publishing import envelope

        n = self.sizes["s1"]
        site = "Bench site"

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
                client.publish(PublishRequest(
                    channel=channel, data={"channel": channel, "site": site, "message": f"message {i}"}))
            return time.perf_counter() - start

        def run_raw(channel: str) -> float:
            session = requests.Session()
            headers = {"X-API-Key": self.api_key, "Content-Type": "application/json"}
            url = f"{self.api_url}/publish"
            bodies = [dump({"channel": channel, "data": envelope(channel, f"message {i}")})
                      for i in range(n)]
            start = time.perf_counter()
            for body in bodies:
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
            bodies = [dump({"channel": channel, "data": envelope(channel, f"message {i}")}).encode()
                      for i in range(n)]
            start = time.perf_counter()
            for body in bodies:
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
            "raw requests.Session floor": run_raw,
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
            name: {"values": [], "received": [], "status": "ok", "error": None} for name in arms}
        for r in range(self.rounds):
            for index, (name, fn) in enumerate(arms.items()):
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
                except Exception as exc:  # noqa: BLE001 - a failing peer is a result, not a crash
                    slot.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
                    log(f"{tag} {name}: FAILED {slot['error']}")
                    continue
                slot["values"].append(metric(seconds))
                slot["received"].append(self.offset(channel))
            log(f"{tag} round {r + 1}/{self.rounds} done")
        out: dict[str, Any] = {"arms": {}}
        for name, slot in raw.items():
            arm = {"status": slot["status"], "error": slot["error"], **summary(slot["values"]),
                   "sent_per_round": expected, "received_per_round": slot["received"]}
            if slot["status"] == "ok" and any(got != expected for got in slot["received"]):
                arm["status"] = "lost"
            out["arms"][name] = arm
        return out

    # -- scenario 2 ----------------------------------------------------------------------------
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
        raw = {name: {"values": [], "received": [], "status": "ok", "error": None} for name in arms}
        reps = 1 if self.args.quick else 3
        for r in range(self.rounds):
            best: dict[str, list[tuple[float, int]]] = {"off": [], "disabled": [], "on": []}
            for _ in range(reps):
                for mode in best:
                    best[mode].append(timed_saves(mode))
            for index, (name, mode) in enumerate(arms.items()):
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
                            raise RuntimeError(f"{out['errors']} errors, first: {out['first_error']}")
                        seconds, got = out["seconds"], self.offset(channel)
                    else:
                        # the best of REPS passes (off, disabled and on each run in every pass,
                        # so a burst of load from other processes cannot favour one of them)
                        seconds = min(t for t, _ in best[mode])
                        gots = [g for _, g in best[mode]]
                        got = next((g for g in gots if g != expected[mode]), gots[0])
                except Exception as exc:  # noqa: BLE001
                    slot.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
                    log(f"s2 {name}: FAILED {slot['error']}")
                    continue
                slot["values"].append(seconds * 1000)
                slot["received"].append(got)
            log(f"s2 round {r + 1}/{self.rounds} done")

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
            arm = {"status": slot["status"], "error": slot["error"], **summary(slot["values"]),
                   "sent_per_round": expected[mode], "received_per_round": slot["received"],
                   **requests_sent.get(name, {"http_requests": None, "tcp_connections": None})}
            if slot["status"] == "ok" and any(got != expected[mode] for got in slot["received"]):
                arm["status"] = "lost"
            out["arms"][name] = arm
        off = out["arms"]["off (model not registered)"]
        on = out["arms"]["@broadcast on"]
        ratios = [a / b for a, b in zip(on["rounds"], off["rounds"])]
        out["on_over_off"] = summary(ratios)
        return out

    # -- scenario 3 ----------------------------------------------------------------------------
    def s3(self) -> dict[str, Any]:
        from django.db import transaction

        from subscriber import Subscriber

        from instant_signals.tokens import connection_token

        n = self.sizes["s3"]
        Item = self.item_model()
        out: dict[str, Any] = {"arms": {}, "unit": "ms", "n": n}
        cent_client: Any = None

        def instant_signals_arm(sub: Subscriber, r: int) -> list[float | None]:
            self.broadcast_on()
            latencies = []
            for i in range(n):
                stamp: list[float] = []
                with transaction.atomic():
                    # runs first after COMMIT, before instant_signals' own hook: t0 = committed
                    transaction.on_commit(lambda: stamp.append(time.perf_counter()))
                    item = Item(**item_values(100000 + r * n + i))
                    item.save()
                    sub.expect(str(item.pk))
                arrived = sub.wait(str(item.pk))
                latencies.append(None if arrived is None else arrived - stamp[0])
            return latencies

        def cent5_arm(sub: Subscriber, r: int) -> list[float | None]:
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
                    key = str(item.pk)
                    data = {"channel": sub.channel, "site": "Bench site", "event_class": "created",
                            "bucket": "benchapp.item", "data": {"pk": item.pk, "title": item.title}}
                    transaction.on_commit(lambda data=data: cent_client.publish(
                        PublishRequest(channel=sub.channel, data=data)))
                    sub.expect(key)
                arrived = sub.wait(key)
                latencies.append(None if arrived is None else arrived - stamp[0])
            self.broadcast_on()
            return latencies

        arms = {"@broadcast on (after commit)": (instant_signals_arm, ITEM_CHANNEL),
                "cent 5 in transaction.on_commit": (cent5_arm, "bench:s3-cent")}
        for name, (fn, channel) in arms.items():
            p50s, p99s, lost, status, error = [], [], [], "ok", None
            # an anonymous connection token (sub ""), as get_token/ gives a visitor
            sub = Subscriber(self.server.ws_url, channel, connection_token(None, lifetime=3600))
            try:
                sub.start()
                for r in range(self.rounds):
                    latencies = fn(sub, r)
                    got = [x * 1000 for x in latencies if x is not None]
                    lost.append(n - len(got))
                    if got:
                        p50s.append(percentile(got, 0.5))
                        p99s.append(percentile(got, 0.99))
                log(f"s3 {name} done")
            except Unavailable as exc:
                status, error = "unavailable", str(exc)
            except Exception as exc:  # noqa: BLE001
                status, error = "failed", f"{type(exc).__name__}: {exc}"[:500]
                log(f"s3 {name}: FAILED {error}")
            finally:
                sub.close()
            out["arms"][name] = {
                "status": "lost" if status == "ok" and any(lost) else status, "error": error,
                "p50": summary(p50s), "p99": summary(p99s), "sent_per_round": n,
                "received_per_round": [n - x for x in lost],
            }
        out["arms"]["django-instant publish() in post_save"] = {
            "status": "not applicable",
            "error": "publishes inside the transaction, before COMMIT: clients may see rows that "
                     "are then rolled back, so commit-to-receipt is undefined for it",
        }
        return out

    # -- scenario 4 ----------------------------------------------------------------------------
    def s4(self) -> dict[str, Any]:
        """CPU time (process_time: time spent descheduled by other users of the machine is left
        out) of n saves in one transaction inside capture_broadcasts, on minus off; each round
        takes the best of PAIRS alternating off/on blocks. A second, SQL-free measure sends the
        same signals by hand, so only Django's dispatch and instant_signals' hooks are timed."""
        from django.db import transaction
        from django.db.models.signals import post_save

        from instant_signals.testing import capture_broadcasts

        n = self.sizes["s4"]
        pairs = 2 if self.args.quick else 4
        base = 300000
        Item = self.item_model()

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

        on_us, off_us, cost, captured, direct = [], [], [], [], []
        block(False), block(True), hooks_only(False), hooks_only(True)  # warm up, untimed
        for r in range(self.rounds):
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
            d_off, d_on = min(d_offs), min(d_ons)
            direct.append((d_on - d_off) / n * 1e6)
            log(f"s4 round {r + 1}/{self.rounds} done")
        self.broadcast_on()
        status = "ok" if all(c == n for c in captured) else "lost"
        return {"unit": "µs/save", "n": n, "clock": "process_time", "arms": {
            "hooks' own cost (on − off)": {"status": status, "error": None, **summary(cost),
                                           "sent_per_round": n, "received_per_round": captured},
            "save with @broadcast on (capture)": {"status": "ok", "error": None, **summary(on_us)},
            "save, model not registered": {"status": "ok", "error": None, **summary(off_us)},
            "hooks alone, signals sent without SQL (on − off)": {
                "status": "ok", "error": None, **summary(direct)},
        }}

    # -- scenario 5 ----------------------------------------------------------------------------
    def s5(self) -> dict[str, Any]:
        n = self.sizes["s5"]
        base = 1_000_000
        rounds = min(self.rounds, 3)

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

        on_mb, off_mb, diff, received = [], [], [], []
        for r in range(rounds):
            off, _ = peak(False)
            on, got = peak(True)
            on_mb.append(on)
            off_mb.append(off)
            diff.append(on - off)
            received.append(got)
            log(f"s5 round {r + 1}/{rounds} done")
        self.broadcast_on()
        status = "ok" if all(g == n for g in received) else "lost"
        return {"unit": "MB", "n": n, "arms": {
            "@broadcast on, peak above baseline": {"status": status, "error": None, **summary(on_mb),
                                                   "sent_per_round": n, "received_per_round": received},
            "model not registered, peak above baseline": {"status": "ok", "error": None,
                                                          **summary(off_mb)},
            "events' share (on − off)": {"status": "ok", "error": None, **summary(diff)},
        }, "peers": "django-instant publishes at each save and collects nothing (see scenario 2)"}


# -- targets and the table -----------------------------------------------------------------------
def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def arm(scenario: str, name: str) -> dict[str, Any]:
        return results["scenarios"].get(scenario, {}).get("arms", {}).get(name, {})

    def add(what: str, value: Any, target: str, ok: bool | None) -> None:
        rows.append({"target": what, "measured": value, "goal": target, "pass": ok})

    s1 = results["scenarios"].get("s1")
    if s1:
        ours = arm("s1", "instant_signals publish()").get("median")
        di = arm("s1", "django-instant publish()")
        cent = arm("s1", "cent 5 Client (reused)").get("median")
        raw = arm("s1", "raw requests.Session floor").get("median")
        if ours and di.get("median"):
            add("S1 rate vs django-instant", f"{ours / di['median']:.2f}×", "≥ 3×", ours >= 3 * di["median"])
        else:
            add("S1 rate vs django-instant", di.get("status"), "≥ 3×", None)
        if ours and cent:
            add("S1 rate vs cent 5", f"{ours / cent:.2f}×", "≥ 1×", ours >= cent)
        if ours and raw:
            add("S1 rate vs raw floor", f"{ours / raw:.0%}", "≥ 80%", ours >= 0.8 * raw)
    s2 = results["scenarios"].get("s2")
    if s2:
        ratio = s2["on_over_off"]["median"]
        add("S2 on / off time", f"{ratio:.2f}×" if ratio else None, "≤ 1.5×",
            ratio is not None and ratio <= 1.5)
        on = arm("s2", "@broadcast on")
        add("S2 HTTP requests, @broadcast on", on.get("http_requests"), "≤ 10",
            on.get("http_requests") is not None and on["http_requests"] <= 10)
        di = arm("s2", "django-instant publish() in post_save")
        add("S2 HTTP requests, django-instant style", di.get("http_requests"), f"= {s2['n']} (one per save)",
            None if di.get("http_requests") is None else di["http_requests"] == s2["n"])
    s3 = results["scenarios"].get("s3")
    if s3:
        a = arm("s3", "@broadcast on (after commit)")
        p50 = a.get("p50", {}).get("median")
        p99 = a.get("p99", {}).get("median")
        add("S3 p50 commit→receipt", f"{p50:.2f} ms" if p50 else None, "< 5 ms", p50 is not None and p50 < 5)
        add("S3 p99 commit→receipt", f"{p99:.2f} ms" if p99 else None, "< 20 ms", p99 is not None and p99 < 20)
    s4 = results["scenarios"].get("s4")
    if s4:
        v = arm("s4", "hooks' own cost (on − off)").get("median")
        add("S4 hooks' cost per save (full saves, on − off)", f"{v:.1f} µs", "< 50 µs",
            v is not None and v < 50)
        v = arm("s4", "hooks alone, signals sent without SQL (on − off)").get("median")
        add("S4 hooks' cost per save (signals without SQL)", f"{v:.1f} µs", "< 50 µs",
            v is not None and v < 50)
    s5 = results["scenarios"].get("s5")
    if s5:
        v = arm("s5", "@broadcast on, peak above baseline").get("median")
        add(f"S5 peak, {s5['n']} events in one transaction", f"{v:.1f} MB", "< 50 MB",
            v is not None and v < 50)
    return rows


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    else:
        text = str(value)
    return text


def table(results: dict[str, Any]) -> str:
    lines = ["| Scenario | Arm | Median | Spread (min..max) | Delivered | Notes |",
             "|---|---|---:|---:|---|---|"]
    titles = {"s1": "1. sequential publish(), {n} messages (msg/s)",
              "s2": "2. {n} saves in one transaction (ms)",
              "s3": "3. commit → subscriber, {n} events (ms)",
              "s4": "4. hooks' own cost, capture mode, {n} saves (µs/save)",
              "s5": "5. peak memory, {n} events in one transaction (MB)"}
    for key, scenario in results["scenarios"].items():
        title = titles[key].format(n=f"{scenario['n']:,}")
        for name, arm in scenario["arms"].items():
            status = arm.get("status")
            delivered = "-"
            if arm.get("received_per_round"):
                delivered = f"{min(arm['received_per_round'], default=0)}/{arm['sent_per_round']}"
            notes = "" if status == "ok" else f"{status}: {arm.get('error') or ''}"
            if "http_requests" in arm and arm["http_requests"] is not None:
                notes = (f"{arm['http_requests']} HTTP requests, {arm['tcp_connections']} TCP "
                         f"connections " + notes).strip()
            if "p50" in arm:
                p50, p99 = arm["p50"], arm["p99"]
                lines.append(f"| {title} | {name} p50 | {fmt(p50['median'])} | "
                             f"{fmt(p50['min'])}..{fmt(p50['max'])} | {delivered} | {notes} |")
                lines.append(f"| {title} | {name} p99 | {fmt(p99['median'])} | "
                             f"{fmt(p99['min'])}..{fmt(p99['max'])} | {delivered} | |")
                continue
            if "median" not in arm:
                lines.append(f"| {title} | {name} | - | - | - | {notes} |")
                continue
            lines.append(f"| {title} | {name} | {fmt(arm['median'])} | "
                         f"{fmt(arm['min'])}..{fmt(arm['max'])} | {delivered} | {notes} |")
            title = titles[key].format(n=f"{scenario['n']:,}")
    lines += ["", "| Target | Measured | Goal | Result |", "|---|---:|---|---|"]
    for row in results["targets"]:
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[row["pass"]]
        lines.append(f"| {row['target']} | {fmt(row['measured'])} | {row['goal']} | {verdict} |")
    return "\n".join(lines)


# -- profiling -------------------------------------------------------------------------------
def profile(bench: Bench, out_dir: Path) -> None:
    """cProfile of the instant_signals paths of S2 (real send), S4 (capture) and S5 (10k)."""
    import cProfile
    import io
    import pstats

    from instant_signals.testing import capture_broadcasts

    bench.broadcast_on()
    jobs = {
        "s2": lambda: save_items(bench.sizes["s2"], 5_000_000),
        "s4": lambda: _captured(capture_broadcasts, bench.sizes["s4"], 6_000_000),
        "s5": lambda: save_items(bench.sizes["s5"], 7_000_000),
    }
    for name, job in jobs.items():
        clear_items()
        prof = cProfile.Profile()
        prof.enable()
        job()
        prof.disable()
        text = io.StringIO()
        stats = pstats.Stats(prof, stream=text).strip_dirs()
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)
        path = out_dir / f"profile-{name}.txt"
        path.write_text(text.getvalue())
        log(f"profile of {name} written to {path}")


def _captured(capture_broadcasts: Any, n: int, start: int) -> None:
    with capture_broadcasts():
        save_items(n, start)


def _user_args(argv: list[str]) -> list[str]:
    """The arguments as given to benchmarks/run (without the --peer-python it adds)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--peer-python":
            skip = True
        elif not arg.startswith("--peer-python="):
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few dozen events, one round")
    parser.add_argument("--rounds", type=int, default=0, help="rounds per arm (default 5, quick 1)")
    parser.add_argument("--scenarios", default="s1,s2,s3,s4,s5")
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-peer-instant" / "bin" / "python"))
    parser.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    parser.add_argument("--profile", action="store_true", help="also write cProfile reports")
    args = parser.parse_args(argv)

    # a plain `kill` still stops Centrifugo and removes the temporary files (finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(args)
    started = time.time()
    print(f"== starting Centrifugo and the benchmark project in {bench.tmp}", file=sys.stderr)
    results: dict[str, Any] = {"meta": {}, "scenarios": {}}
    try:
        bench.start()
        for key in [k for k in args.scenarios.split(",") if k]:
            print(f"== scenario {key}", file=sys.stderr, flush=True)
            results["scenarios"][key] = getattr(bench, key)()
        if args.profile:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            profile(bench, Path(args.out).parent)
    finally:
        bench.stop()
    import django

    results["meta"] = {
        "command": " ".join(["benchmarks/run", *_user_args(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "rounds": bench.rounds,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "centrifugo": bench.binary_version(),
        "peer": bench.peer_versions,
        "peer_problem": bench.peer_problem,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
    }
    results["targets"] = targets(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(table(results))
    print(f"\n{args.quick and 'quick run' or 'full run'} in {results['meta']['seconds']} s; "
          f"JSON written to {out}", file=sys.stderr)
    return 0

if __name__ == "__main__":
    sys.exit(main())
