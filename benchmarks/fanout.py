"""The fan-out scenario: 1,000, 5,000 and 10,000 connected clients over two Centrifugo nodes
sharing Redis, each client in 1-3 projects of ~100 members plus its own personal channel, and a
steady stream of changes each visible to ~100 users, stepped up until it saturates.

Processes, all on loopback: ``redis-server``; two Centrifugo nodes with the Redis engine (the
config ``generate_config(redis=[...])`` writes, history and recovery on every namespace, as
``installws`` would); the client fleet (``fleet/main.go``, centrifuge-go, built here with ``go
build`` into a cache directory, rebuilt only when its sources change), clients alternating
between the nodes; the publisher (``fanout_publisher.py``: Django, ``@broadcast`` after commit,
publishing through node A). Tokens are made by the Django side (``instant_signals.tokens``,
after ``access.can_read``) and handed to the fleet in its plan file.

Per arm and client count the rate goes up a ladder of steps; a step is good when every delivery
arrived once, the publisher kept its schedule (achieved ≥ 95 % of the rate) and p95
commit→last-reader < 100 ms; the first bad step ends the ladder; the last good one is
"where it saturates". CPU comes from /proc (utime + stime) over each step; memory per
connection is each node's RSS after connecting minus before, divided by its clients.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import describe, log, percentile

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLEET_SRC = HERE / "fleet"
ARMS = {
    "project": "channel per project ($project:{project_id}), callable rule",
    "row": "channel per row ($task:{pk}), callable rule",
}
P95_LIMIT_MS = 100.0
RATE_KEPT = 0.95
SUPABASE = {
    "clients": 4000, "changes_per_s": 5, "messages_per_s": 4000, "p95_ms": 918,
    "setup": "Postgres Changes with row-level security, largest compute add-on",
    "source": "https://supabase.com/docs/guides/realtime/benchmarks",
}
FULL = {"clients": [1000, 5000, 10000], "rates": [50, 100, 200, 300, 400, 500, 650, 800, 1000,
                                                  1300, 1600], "seconds": 10}
QUICK = {"clients": [1000], "rates": [20, 100], "seconds": 4}
TICK = os.sysconf("SC_CLK_TCK")


# -- the fleet binary -----------------------------------------------------------------------------
def fleet_binary() -> Path:
    """``go build`` of fleet/ into ~/.cache/instant_signals/fleet/<hash of its sources>/."""
    digest = hashlib.sha256()
    for name in ("main.go", "go.mod", "go.sum"):
        digest.update((FLEET_SRC / name).read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    target = cache / "instant_signals" / "fleet" / digest.hexdigest()[:16] / "fleet"
    if target.exists():
        return target
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the fan-out scenario needs Go (https://go.dev/dl) to build its "
                           "client fleet (centrifuge-go)")
    log(f"building the client fleet (centrifuge-go) into {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([go, "build", "-o", str(target), "."], cwd=FLEET_SRC,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"go build of benchmarks/fleet failed: {done.stderr[-2000:]}")
    return target


# -- /proc ----------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def raise_nofile() -> dict[str, int]:
    """The soft RLIMIT_NOFILE raised to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return {"soft_before": soft, "hard": hard,
            "soft_now": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}


class Line:
    """A child process spoken to in JSON lines (stdin/stdout), its stderr kept in a file."""

    def __init__(self, cmd: list[str], env: dict[str, str], workdir: Path, name: str):
        self.errors = open(workdir / f"{name}.stderr", "w+")
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.errors, text=True, env=env)

    def read(self) -> dict[str, Any]:
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            self.process.wait(10)
            self.errors.seek(0)
            raise RuntimeError(f"{self.process.args[:2]} exited {self.process.returncode}: "
                               f"{self.errors.read()[-2000:]}")
        return json.loads(line)

    def send(self, text: str) -> dict[str, Any]:
        self.process.stdin.write(text + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        return self.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.errors.close()


# -- the scenario ---------------------------------------------------------------------------------
def fanout(bench: Any) -> dict[str, Any]:
    from instant_signals.centrifugo_config import generate_config, write_config
    from support.processes import CentrifugoProcess, free_port
    from support.services import RedisServer

    sizes = QUICK if bench.args.quick else FULL
    clients_list = ([int(c) for c in bench.args.fanout_clients.split(",")]
                    if getattr(bench.args, "fanout_clients", None) else sizes["clients"])
    seconds = getattr(bench.args, "fanout_seconds", None) or sizes["seconds"]
    limits = raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="instant-fanout-", dir=bench.tmp))
    redis_binary = shutil.which("redis-server")
    if redis_binary is None:
        raise RuntimeError("the fan-out scenario needs redis-server")
    binary = fleet_binary()
    redis = RedisServer(redis_binary, workdir / "redis").start()
    nodes: list[Any] = []
    out: dict[str, Any] = {
        "n": max(clients_list), "clients": clients_list, "step_seconds": seconds,
        "rates": sizes["rates"], "limits": {"nofile": limits}, "supabase": SUPABASE,
        "criteria": f"every delivery once, publisher kept ≥ {RATE_KEPT:.0%} of the rate, p95 "
                    f"commit→last-reader < {P95_LIMIT_MS:.0f} ms",
        "arms": {}, "runs": [],
    }
    try:
        namespaces = {"project": {}, "task": {}, "user": {}}
        first = generate_config(namespaces=namespaces, redis=[redis.address])
        for name in ("a", "b"):
            config = generate_config(port=free_port(), namespaces=namespaces,
                                     redis=[redis.address], api_key=first["http_api"]["key"],
                                     hmac_key=first["client"]["token"]["hmac_secret_key"])
            config["log"]["level"] = "error"
            path = write_config(workdir / f"node-{name}.json", config)
            nodes.append(CentrifugoProcess(bench.binary, path).start())
        for n_clients in clients_list:
            for arm in ARMS:
                log(f"fan-out: {n_clients:,} clients, arm {arm}")
                try:
                    run = one_run(bench, binary, nodes, redis, workdir, arm, n_clients,
                                  sizes["rates"], seconds)
                except Exception as exc:  # noqa: BLE001 - a failed run is a result
                    run = {"arm": ARMS[arm], "clients": n_clients, "status": "error",
                           "error": describe(exc)}
                out["runs"].append(run)
        out["ephemeral_ports"] = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    finally:
        for node in nodes:
            node.stop()
        redis.stop()
    for run in out["runs"]:
        name = f"{run['arm']}, {run['clients']:,} clients"
        out["arms"][name] = summarize(run)
    return out


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    """The arm's entry in the main table: the last good step (or the error)."""
    if run.get("status") == "error":
        return {"status": "error", "error": run["error"], "rounds": [], "median": None,
                "min": None, "max": None}
    good = run.get("last_good")
    value = good["deliveries_per_s"] if good else None
    note = (f"last good {good['rate']:.0f} changes/s: p50/p95/p99 commit→last-reader "
            f"{good['last_reader_ms']['p50']:.1f}/{good['last_reader_ms']['p95']:.1f}/"
            f"{good['last_reader_ms']['p99']:.1f} ms" if good else "no good step")
    if run.get("saturated_by"):
        note += f"; next step failed: {run['saturated_by']}"
    return {"status": "ok" if good else "saturated", "error": None,
            "rounds": [value] if value else [], "median": value, "min": value, "max": value,
            "note": note}


def one_run(bench: Any, binary: Path, nodes: list[Any], redis: Any, workdir: Path, arm: str,
            n_clients: int, rates: list[int], seconds: float) -> dict[str, Any]:
    run_dir = workdir / f"{arm}-{n_clients}"
    run_dir.mkdir()
    (run_dir / "db").mkdir()
    plan = run_dir / "plan.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
           "BENCH_CENTRIFUGO_PORT": str(nodes[0].port),
           "BENCH_CENTRIFUGO_API_KEY": nodes[0].api_key,
           "BENCH_CENTRIFUGO_HMAC_KEY": nodes[0].hmac_key}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    publisher = Line([sys.executable, str(HERE / "fanout_publisher.py"), "--arm", arm,
                      "--clients", str(n_clients), "--nodes",
                      ",".join(n.ws_url for n in nodes), "--plan", str(plan), "--db-dir",
                      str(run_dir / "db")], env, run_dir, "publisher")
    fleet = None
    try:
        setup = publisher.read()
        before = {name: rss_mb(n.process.pid) for name, n in zip("ab", nodes)}
        fleet = Line([str(binary), str(plan), "100"], dict(os.environ), run_dir, "fleet")
        ready = fleet.read()
        plan.unlink()
        time.sleep(1.0)  # let the nodes settle their after-connect work before measuring RSS
        after = {name: rss_mb(n.process.pid) for name, n in zip("ab", nodes)}
        per_node = {"a": (n_clients + 1) // 2, "b": n_clients // 2}
        memory = {
            "node_rss_mb_before": before, "node_rss_mb_after": after,
            "kb_per_connection": {k: round((after[k] - before[k]) * 1024 / max(1, per_node[k]), 1)
                                  for k in before},
            "fleet_rss_mb": round(ready["rss_bytes"] / 2**20, 1),
            "fleet_kb_per_client": round(ready["rss_bytes"] / 1024 / n_clients, 1),
        }
        if ready["connected"] < n_clients or ready["subscribed"] < ready["subscriptions_wanted"]:
            raise RuntimeError(f"fleet did not get every client in: {ready}")
        steps, last_good, saturated_by = [], None, None
        procs = {"centrifugo_a": nodes[0].process.pid, "centrifugo_b": nodes[1].process.pid,
                 "redis": redis.process.pid, "fleet": fleet.process.pid,
                 "publisher": publisher.process.pid}
        for point, rate in enumerate(rates):
            cpu0 = {k: cpu_seconds(pid) for k, pid in procs.items()}
            wall0 = time.perf_counter()
            sent = publisher.send(json.dumps({"cmd": "run", "point": point, "rate": rate,
                                              "seconds": seconds}))
            wall = time.perf_counter() - wall0
            cpu1 = {k: cpu_seconds(pid) for k, pid in procs.items()}
            got = fleet.send(f"report {point} {sent['from']} {sent['to']} "
                             f"{sent['expected_deliveries']}")
            step = judge(sent, got, cpu0, cpu1, wall,
                         {k: round(rss_mb(pid), 1) for k, pid in procs.items()})
            steps.append(step)
            log(f"  {rate}/s: {step['deliveries_per_s']:,.0f} deliveries/s, last reader p95 "
                f"{step['last_reader_ms']['p95']} ms, missing {step['missing']}, "
                f"{'ok' if step['good'] else 'saturated: ' + step['why']}")
            if not step["good"]:
                saturated_by = step["why"]
                break
            last_good = step
        totals = fleet.send("totals")
        return {"arm": ARMS[arm], "key": arm, "clients": n_clients, "status": "ok",
                "setup": setup, "fleet_ready": {k: ready[k] for k in (
                    "connected", "subscribed", "subscriptions_wanted", "connect_seconds")},
                "memory": memory, "steps": steps, "last_good": last_good,
                "saturated_by": saturated_by, "fleet_totals": totals}
    finally:
        if fleet is not None:
            try:
                fleet.send("quit")
            except Exception:  # noqa: BLE001
                pass
            fleet.stop()
        try:
            publisher.send(json.dumps({"cmd": "quit"}))
        except Exception:  # noqa: BLE001
            pass
        publisher.stop()


def judge(sent: dict[str, Any], got: dict[str, Any], cpu0: dict[str, float],
          cpu1: dict[str, float], wall: float, rss: dict[str, float]) -> dict[str, Any]:
    counts, last = got["counts"], [v for v in got["last_reader_ms"] if v >= 0]
    delivered = sum(counts)
    expected = sent["expected_deliveries"]
    q = {k: round(percentile(last, p), 2) if last else None
         for k, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))}
    per = got["per_delivery"]
    step = {
        "rate": sent["rate"], "changes": sent["changes"], "achieved_rate": sent["achieved_rate"],
        "expected_deliveries": expected, "delivered": delivered,
        "missing": max(0, expected - delivered), "extra": max(0, delivered - expected),
        "changes_never_received": sum(1 for c in counts if c == 0),
        "deliveries_per_s": round(delivered / sent["seconds"], 1),
        "last_reader_ms": q,
        "per_delivery_ms": {k: round(per[f"{k}_ms"], 2) for k in ("p50", "p95", "p99", "max")},
        "django_cpu_ms_per_change": sent["cpu_ms_per_change"],
        "publisher_late_max_ms": sent["late_max_ms"],
        "cpu_percent_of_a_core": {k: round((cpu1[k] - cpu0[k]) / wall * 100, 1) for k in cpu0},
        "rss_mb": rss,
    }
    why = []
    if not expected:
        why.append("no client was subscribed to the changed rows' channels")
    if step["missing"] or step["extra"]:
        why.append(f"{step['missing']} missing, {step['extra']} extra deliveries")
    if sent["achieved_rate"] < RATE_KEPT * sent["rate"]:
        why.append(f"publisher reached {sent['achieved_rate']:.0f}/s of {sent['rate']}/s")
    if q["p95"] is None or q["p95"] >= P95_LIMIT_MS:
        why.append(f"p95 commit→last-reader {q['p95']} ms")
    step["good"], step["why"] = not why, "; ".join(why)
    return step
