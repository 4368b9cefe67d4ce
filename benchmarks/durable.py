"""Durable mode (``DELIVERY="outbox"``): scenarios 6, 6b, 7 and 8; and scenario 11, the default
mode with Centrifugo hung (SIGSTOP) then resumed.

Databases (see benchproject/settings.py): ``wal`` is SQLite with the settings the docs require,
``plain`` SQLite with Django's defaults, ``pg`` and ``pgc`` two databases of a throwaway
PostgreSQL cluster (fsync off, like SQLite on tmpfs); ``pgc`` is the one Centrifugo's own outbox
consumer drains (a second Centrifugo, started with ``consumers`` in its config). Relays run as
the real ``manage.py relay_outbox`` command in worker processes (worker.py).
"""

from __future__ import annotations

import gc
import os
import signal
import time
from typing import TYPE_CHECKING, Any, Callable

from common import (
    REQUIRED_SQLITE, arm_result, describe, failed_arm, latency_arm, log, percentile, rotated,
    summary,
)
from workloads import clear_items, clear_table, item_values, save_items

if TYPE_CHECKING:
    from bench import Bench

OUTBOX = "instant_signals_outbox"
SEED_CHANNEL = "bench:s7seed"



def subscriber_of(server: Any, subs: dict[int, Any], token: str) -> Any:
    """The subscriber on the Centrifugo an arm publishes through (one per server, reused)."""
    from subscriber import Subscriber

    if server.port not in subs:
        subs[server.port] = Subscriber(server.ws_url, token).start()
    return subs[server.port]

def count_rows(alias: str, table: str = OUTBOX) -> int:
    from django.db import connections

    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {table}")
        return int(cursor.fetchone()[0])


def clear(alias: str) -> None:
    clear_items(alias)
    clear_table(OUTBOX, alias)


def pg_missing(bench: Bench, alias: str) -> str | None:
    if alias in ("pg", "pgc") and bench.pg is None:
        return bench.pg_problem or "PostgreSQL is not available"
    return None


# -- scenario 6: what writing the outbox costs a transaction --------------------------------------
def s6(bench: Bench) -> dict[str, Any]:
    """Wall time of n saves of new rows in one transaction (COMMIT included), the model
    registered with ``DELIVERY="outbox"`` against the model not registered, on SQLite (the
    required settings) and on PostgreSQL. Each round takes the best of REPS alternating passes
    (as scenario 2); the target is the median of the per-round outbox/off ratios."""
    n = bench.sizes["s6"]
    arms = {
        "SQLite (WAL), broadcasting off": ("SQLite", "wal", False),
        'SQLite (WAL), DELIVERY="outbox"': ("SQLite", "wal", True),
        "PostgreSQL, broadcasting off": ("PostgreSQL", "pg", False),
        'PostgreSQL, DELIVERY="outbox"': ("PostgreSQL", "pg", True),
    }
    base = 2_000_000

    def timed(alias: str, outbox: bool) -> tuple[float, int]:
        nonlocal base
        clear(alias)
        if outbox:
            bench.broadcast_on("bench:s6")
        else:
            bench.broadcast_off()
        with bench.app_settings(DELIVERY="outbox"):
            gc.collect()
            start = time.perf_counter()
            save_items(n, base, using=alias)
            elapsed = time.perf_counter() - start
        base += n
        return elapsed, count_rows(alias)

    raw = {name: {"values": [], "rows": [], "status": "ok", "error": None} for name in arms}
    for name, (_, alias, _) in arms.items():
        problem = pg_missing(bench, alias)
        if problem:
            raw[name].update(status="unavailable", error=problem)
    live = [name for name in arms if raw[name]["status"] == "ok"]
    for name in live:  # warm up, untimed
        timed(arms[name][1], arms[name][2])
    reps = 1 if bench.args.quick else 3
    rounds = bench.rounds_for("s6")
    for r in range(rounds):
        best: dict[str, list[tuple[float, int]]] = {name: [] for name in live}
        for _ in range(reps):
            for name in live:
                try:
                    best[name].append(timed(arms[name][1], arms[name][2]))
                except Exception as exc:  # noqa: BLE001
                    raw[name].update(status="failed", error=describe(exc))
        for name in live:
            if raw[name]["status"] == "ok" and best[name]:
                raw[name]["values"].append(min(t for t, _ in best[name]) * 1000)
                raw[name]["rows"].append(max(rows for _, rows in best[name]))
        log(f"s6 round {r + 1}/{rounds} done")
    for alias in ("wal", "pg"):
        if not pg_missing(bench, alias):
            clear(alias)
    bench.broadcast_on()
    out: dict[str, Any] = {"unit": "ms", "n": n, "arms": {}, "ratios": {}}
    for name, (_, _, outbox) in arms.items():
        slot = raw[name]
        if slot["status"] != "ok":
            out["arms"][name] = failed_arm(slot["status"], slot["error"])
            continue
        want = n if outbox else 0
        arm = arm_result(slot["values"], outbox_rows_per_round=slot["rows"], expected_rows=want)
        if any(rows != want for rows in slot["rows"]):
            arm.update(status="lost", error=f"outbox rows {slot['rows']}, expected {want}")
        out["arms"][name] = arm
    for db in ("SQLite", "PostgreSQL"):
        off = out["arms"][next(k for k, v in arms.items() if v[0] == db and not v[2])]
        on = out["arms"][next(k for k, v in arms.items() if v[0] == db and v[2])]
        if on.get("rounds") and off.get("rounds"):
            out["ratios"][db] = summary([a / b for a, b in zip(on["rounds"], off["rounds"])])
    return out


# -- scenario 6b: SQLite writers and the relay at once --------------------------------------------
def s6b(bench: Bench) -> dict[str, Any]:
    """4 writer processes commit transactions shaped like a web request (read a row, update
    it, create another: 2 events each) while ``relay_outbox`` drains the same SQLite file.
    Counted: lock errors in the writers (each failed attempt, retried like a job queue would)
    and in the relay (its log), batches the relay sent that held a row it had sent before
    (recorded by row id around ``Relay._send``), duplicates and losses at a subscribed client
    (by event id). The value is committed transactions per second across the writers."""
    n = bench.sizes["s6b"]
    writers = 4
    arms = {REQUIRED_SQLITE: "wal", "Django defaults (rollback journal, deferred, 5 s)": "plain"}
    from instant_signals.tokens import connection_token
    from subscriber import Subscriber

    sub = Subscriber(bench.server.ws_url, connection_token(None, lifetime=3600)).start()
    keys = ("writer_lock_errors", "relay_lock_errors", "other_errors", "resent_batches",
            "resent_rows", "duplicates", "lost", "committed", "batches")
    raw: dict[str, dict[str, Any]] = {
        name: {"values": [], "expected": [], "delivered": [], "status": "ok", "error": None,
               **{k: 0 for k in keys}, "first_error": None} for name in arms}
    rounds = bench.rounds_for("s6b")
    try:
        for r in range(rounds):
            for index, (name, alias) in rotated(arms, r):
                slot = raw[name]
                if slot["status"] != "ok":
                    continue
                channel = f"bench:s6b-a{index}-r{r}"
                stream = sub.add(channel, keep=True)
                relay = None
                procs: list[Any] = []
                try:
                    clear(alias)
                    relay = bench.spawn("relay", alias)
                    procs = [bench.spawn("writer", alias, channel, str(n), "--index", str(i),
                                         wait=False) for i in range(writers)]
                    for proc in procs:
                        bench.ready(proc)
                    for proc in procs:
                        bench.go(proc)
                    done = [bench.collect(proc) for proc in procs]
                    expected = sum(d["events"] for d in done)
                    sub.wait_count(channel, expected, timeout=120, idle=15)
                    deadline = time.monotonic() + 30
                    while count_rows(alias) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    time.sleep(0.2)  # a late duplicate would arrive now
                    relay.send_signal(signal.SIGTERM)
                    relayed = bench.collect(relay)
                except Exception as exc:  # noqa: BLE001
                    slot.update(status="failed", error=describe(exc))
                    log(f"s6b {name}: FAILED {slot['error']}")
                    for proc in [relay, *procs]:
                        if proc is not None and proc.poll() is None:
                            proc.kill()
                    continue
                finally:
                    sub.remove(channel)
                ids = [event[0] for event in stream.events]
                unique = len(set(ids))
                slot["values"].append(sum(d["committed"] for d in done) /
                                      (max(d["t1"] for d in done) - min(d["t0"] for d in done)))
                slot["expected"].append(expected)
                slot["delivered"].append(bench.offset(channel))
                slot["writer_lock_errors"] += sum(d["lock_errors"] for d in done)
                slot["relay_lock_errors"] += relayed["lock_errors"]
                slot["other_errors"] += (sum(d["other_errors"] for d in done)
                                         + relayed["other_errors"])
                slot["resent_batches"] += relayed["resent_batches"]
                slot["resent_rows"] += relayed["resent_rows"]
                slot["batches"] += relayed["batches"]
                slot["duplicates"] += len(ids) - unique
                slot["lost"] += max(0, expected - unique)
                slot["committed"] += sum(d["committed"] for d in done)
                slot["first_error"] = slot["first_error"] or next(
                    (d["first_error"] for d in done if d["first_error"]), None) or \
                    relayed["first_error"]
            log(f"s6b round {r + 1}/{rounds} done")
    finally:
        sub.close()
    out: dict[str, Any] = {"unit": "transactions/s", "n": n, "writers": writers, "arms": {}}
    for name, slot in raw.items():
        if slot["status"] != "ok":
            out["arms"][name] = failed_arm(slot["status"], slot["error"])
            continue
        counts = {k: slot[k] for k in keys}
        counts["lock_errors"] = slot["writer_lock_errors"] + slot["relay_lock_errors"]
        arm = arm_result(slot["values"], expected=slot["expected"], delivered=slot["delivered"],
                         first_error=slot["first_error"], **counts)
        arm["note"] = (f"lock errors: writers {slot['writer_lock_errors']}, relay "
                       f"{slot['relay_lock_errors']}; re-sent batches {slot['resent_batches']} "
                       f"of {slot['batches']}; duplicates {slot['duplicates']}; lost "
                       f"{slot['lost']}")
        out["arms"][name] = arm
    return out


# -- scenario 7: drain rate -----------------------------------------------------------------------
def seed(bench: Bench, alias: str, n: int) -> None:
    """n outbox rows written by the real backend (n saves, ``DELIVERY="outbox"``), kept in
    ``bench_outbox_seed``; each round copies them into the outbox with its own channel (so
    Centrifugo's per-channel idempotency keys never hide a round's publications)."""
    from django.db import connections, transaction

    clear(alias)
    bench.broadcast_on(SEED_CHANNEL)
    with bench.app_settings(DELIVERY="outbox"), transaction.atomic(using=alias):
        save_items(n, 3_000_000, using=alias)
        with connections[alias].cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS bench_outbox_seed")
            cursor.execute(f"CREATE TABLE bench_outbox_seed AS SELECT id AS seq, method, "
                           f"payload, partition FROM {OUTBOX}")
            cursor.execute(f"DELETE FROM {OUTBOX}")  # before COMMIT: no consumer sees them
    clear_items(alias)
    bench.broadcast_on()


def copy_seed(alias: str, channel: str) -> float:
    """Commit the seeded rows for ``channel``; the time of the COMMIT."""
    from django.db import connections, transaction

    conn = connections[alias]
    payload = "replace(payload::text, %s, %s)::jsonb" if conn.vendor == "postgresql" else \
        "replace(payload, %s, %s)"
    with transaction.atomic(using=alias):
        with conn.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {OUTBOX} (method, payload, partition, created_at) "
                f"SELECT method, {payload}, partition, %s FROM bench_outbox_seed ORDER BY seq",
                [f'"{SEED_CHANNEL}"', f'"{channel}"', _now()])
    return time.perf_counter()


def _now() -> Any:
    from django.utils import timezone

    return timezone.now()


def s7(bench: Bench) -> dict[str, Any]:
    """n committed outbox rows drained to a subscribed client: events/s from the start of the
    drain (the relay process handed "go"; for Centrifugo's consumer, the COMMIT that made the
    rows visible, which its NOTIFY trigger announces) to the last publication's arrival. The
    relay is ``manage.py relay_outbox --once`` in its own process (start-up not counted)."""
    from instant_signals.tokens import connection_token
    from subscriber import Subscriber

    n = bench.sizes["s7"]
    arms = {
        "relay_outbox --once, SQLite (WAL)": ("relay", "wal"),
        "relay_outbox --once, PostgreSQL": ("relay", "pg"),
        "Centrifugo PostgreSQL consumer (NOTIFY trigger)": ("consumer", "pgc"),
    }
    raw = {name: {"values": [], "expected": [], "delivered": [], "relay_rate": [],
                  "status": "ok", "error": None} for name in arms}
    subs: dict[str, Any] = {}
    token = connection_token(None, lifetime=3600)
    for name, (kind, alias) in arms.items():
        problem = pg_missing(bench, alias)
        if problem:
            raw[name].update(status="unavailable", error=problem)
            continue
        try:
            seed(bench, alias, n)
        except Exception as exc:  # noqa: BLE001
            raw[name].update(status="failed", error=describe(exc))
    rounds = bench.rounds_for("s7")
    try:
        for r in range(rounds):
            for index, (name, (kind, alias)) in rotated(arms, r):
                slot = raw[name]
                if slot["status"] != "ok":
                    continue
                server = bench.consumer if kind == "consumer" else bench.server
                sub = subscriber_of(server, subs, token)
                channel = f"bench:s7-a{index}-r{r}"
                sub.add(channel)
                try:
                    worker = bench.spawn("relay-once", alias) if kind == "relay" else None
                    committed = copy_seed(alias, channel)
                    if worker is not None:
                        bench.go(worker)
                        relayed = bench.collect(worker)
                        t0 = relayed["t0"]
                        slot["relay_rate"].append(n / (relayed["t1"] - relayed["t0"]))
                    else:
                        t0 = committed
                    stream = sub.wait_count(channel, n, timeout=120, idle=10)
                    if stream.count < n:
                        raise RuntimeError(f"the subscriber got {stream.count} of {n}; outbox "
                                           f"holds {count_rows(alias)}")
                    slot["values"].append(n / (stream.last - t0))
                    slot["expected"].append(n)
                    slot["delivered"].append(bench.offset(channel, server))
                except Exception as exc:  # noqa: BLE001
                    slot.update(status="failed", error=describe(exc))
                    log(f"s7 {name}: FAILED {slot['error']}")
                finally:
                    sub.remove(channel)
                    clear_table(OUTBOX, alias)
            log(f"s7 round {r + 1}/{rounds} done")
    finally:
        for sub in subs.values():
            sub.close()
    out: dict[str, Any] = {"unit": "events/s", "n": n, "arms": {}, "consumer_settings": None}
    if bench.consumer is not None:
        out["consumer_settings"] = bench.consumer.config["consumers"][0]["postgresql"].copy()
        out["consumer_settings"].pop("dsn", None)
    for name, slot in raw.items():
        if slot["status"] != "ok":
            out["arms"][name] = failed_arm(slot["status"], slot["error"])
            continue
        extra: dict[str, Any] = {}
        if slot["relay_rate"]:
            extra["relay_rate"] = summary(slot["relay_rate"])
            extra["note"] = (f"relay alone (rows sent and deleted): "
                             f"{extra['relay_rate']['median']:,.0f}/s")
        else:
            settings = out["consumer_settings"] or {}
            extra["note"] = (f"num_partitions {settings.get('num_partitions')}, "
                             f"partition_select_limit {settings.get('partition_select_limit')}, "
                             f"partition_poll_interval {settings.get('partition_poll_interval')}, "
                             f"NOTIFY trigger on insert")
        out["arms"][name] = arm_result(slot["values"], expected=slot["expected"],
                                       delivered=slot["delivered"], **extra)
    return out


# -- scenario 8: durable end to end ---------------------------------------------------------------
def s8(bench: Bench) -> dict[str, Any]:
    """n transactions of one save each with ``DELIVERY="outbox"``; the clock starts in an
    ``on_commit`` callback registered before the save (right after COMMIT) and stops when the
    subscribed client's handler runs. Relays: ``relay_outbox`` (default interval) in its own
    process for the whole scenario; it wakes on new rows (SQLite: ``PRAGMA data_version``;
    PostgreSQL: LISTEN on the trigger's channel). Centrifugo's consumer: NOTIFY trigger."""
    from django.db import transaction

    from instant_signals.tokens import connection_token
    from subscriber import Subscriber

    n = bench.sizes["s8"]
    arms = {
        "relay_outbox, SQLite (WAL)": ("relay", "wal"),
        "relay_outbox, PostgreSQL (LISTEN)": ("relay", "pg"),
        "Centrifugo PostgreSQL consumer (NOTIFY trigger)": ("consumer", "pgc"),
    }
    Item = bench.item_model()
    raw = {name: {"p50": [], "p99": [], "delivered": [], "received": [], "status": "ok",
                  "error": None} for name in arms}
    relays: dict[str, Any] = {}
    subs: dict[int, Any] = {}
    token = connection_token(None, lifetime=3600)
    for name, (kind, alias) in arms.items():
        problem = pg_missing(bench, alias)
        if problem:
            raw[name].update(status="unavailable", error=problem)
            continue
        clear(alias)
        if kind == "relay":
            try:
                relays[name] = bench.spawn("relay", alias)
            except Exception as exc:  # noqa: BLE001
                raw[name].update(status="failed", error=describe(exc))
    rounds = bench.rounds_for("s8")
    base = 4_000_000
    try:
        for r in range(rounds):
            for index, (name, (kind, alias)) in rotated(arms, r):
                slot = raw[name]
                if slot["status"] != "ok":
                    continue
                server = bench.consumer if kind == "consumer" else bench.server
                sub = subscriber_of(server, subs, token)
                channel = f"bench:s8-a{index}-r{r}"
                sub.add(channel)
                bench.broadcast_on(channel)
                latencies: list[float] = []
                missing = 0
                try:
                    with bench.app_settings(DELIVERY="outbox"):
                        for i in range(n):
                            stamp: list[float] = []
                            with transaction.atomic(using=alias):
                                transaction.on_commit(
                                    lambda: stamp.append(time.perf_counter()), using=alias)
                                item = Item(**item_values(base + i))
                                item.save(using=alias)
                                sub.expect(channel, item.pk)
                            arrived = sub.wait(channel, item.pk, timeout=5)
                            if arrived is None:
                                missing += 1
                                if missing > 5:
                                    raise RuntimeError(f"{missing} events did not arrive in 5 s")
                            else:
                                latencies.append((arrived - stamp[0]) * 1000)
                    base += n
                except Exception as exc:  # noqa: BLE001
                    slot.update(status="failed", error=describe(exc))
                    log(f"s8 {name}: FAILED {slot['error']}")
                    continue
                finally:
                    sub.remove(channel)
                    bench.broadcast_on()
                slot["p50"].append(percentile(latencies, 0.5))
                slot["p99"].append(percentile(latencies, 0.99))
                slot["received"].append(len(latencies))
                slot["delivered"].append(bench.offset(channel, server))
            log(f"s8 round {r + 1}/{rounds} done")
    finally:
        for sub in subs.values():
            sub.close()
        relayed: dict[str, Any] = {}
        for name, process in relays.items():
            process.send_signal(signal.SIGTERM)
            try:
                relayed[name] = bench.collect(process, timeout=30)
            except Exception as exc:  # noqa: BLE001
                relayed[name] = {"error": describe(exc)}
    out: dict[str, Any] = {"unit": "ms", "n": n, "arms": {}}
    for name, slot in raw.items():
        extra = {}
        if name in relayed:
            extra = {"relay": relayed[name]}
        out["arms"][name] = latency_arm(slot, n, **extra)
    return out


# -- scenario 11: default mode, Centrifugo hung then resumed --------------------------------------
def s11(bench: Bench) -> dict[str, Any]:
    """One row saved, then updated k times outside a transaction (each update is published at
    once) while Centrifugo is stopped with SIGSTOP, with a 0.3 s read timeout; then SIGCONT.
    Counted: updates reported failed (``stats["failed"]``), those delivered anyway after the
    resume, arrivals older than one that came before them (by ``data.version``), and which
    state a client ends in if it keeps the last arrival, or the highest version."""
    from instant_signals.reporting import stats
    from instant_signals.tokens import connection_token
    from subscriber import Subscriber

    k = bench.sizes["s11"]
    Item = bench.item_model()
    name = "default mode (after commit), read timeout 0.3 s"
    try:
        hung = bench.centrifugo("hung")
    except Exception as exc:  # noqa: BLE001
        return {"unit": "events", "n": k, "arms": {name: failed_arm("failed", describe(exc))}}
    channel = "bench:s11"
    sub = Subscriber(hung.ws_url, connection_token(None, lifetime=3600)).start()
    stream = sub.add(channel, keep=True)
    bench.broadcast_on(channel)
    bench.use_api(hung.api_url)
    result: dict[str, Any]
    try:
        with bench.app_settings(TIMEOUT=(1.0, 0.3)):
            item = Item(**item_values(5_000_000))
            item.save()
            sub.wait_count(channel, 1, timeout=5)
            failed_before = stats["failed"]
            os.kill(hung.process.pid, signal.SIGSTOP)
            try:
                for i in range(k):
                    item.count = i + 1
                    item.save()
                failed = stats["failed"] - failed_before
            finally:
                os.kill(hung.process.pid, signal.SIGCONT)
            sub.wait_count(channel, 1 + k, timeout=15, idle=3)
        events = stream.events[1:]
        versions = [event[2] for event in events]
        late, top = 0, None
        for version in versions:
            if top is not None and version < top:
                late += 1
            top = version if top is None else max(top, version)

        def count_of(event: Any) -> Any:
            return event[4]["data"]["fields"]["count"]

        by_version = [count_of(e) for e in sorted(events, key=lambda e: e[2])]
        last_wins = bool(events) and count_of(events[-1]) == k
        newest_wins = bool(events) and count_of(max(events, key=lambda e: e[2])) == k
        result = arm_result(
            [float(len(events))], updates=k, reported_failed=failed,
            delivered_after_resume=len(events), arrived_out_of_order=late,
            last_arrival_is_final_state=last_wins, highest_version_is_final_state=newest_wins,
            version_order_is_update_order=by_version == sorted(by_version))
        result["note"] = (f"{failed} of {k} updates reported failed; {len(events)} delivered "
                          f"after the resume, {late} of them after a newer one; a client that "
                          f"keeps the last arrival ends {'current' if last_wins else 'STALE'}, "
                          f"one that drops lower data.version ends "
                          f"{'current' if newest_wins else 'STALE'}")
    except Exception as exc:  # noqa: BLE001
        result = failed_arm("failed", describe(exc))
    finally:
        bench.use_api(bench.api_url)
        bench.broadcast_on()
        sub.close()
        hung.stop()
    return {"unit": "events delivered after the resume", "n": k, "arms": {name: result}}


# -- profiles -------------------------------------------------------------------------------------
class Job:
    def __init__(self, run: Callable[[], Any], prepare: Callable[[], Any] | None = None):
        self.run, self.prepare = run, prepare

    def __call__(self) -> Any:
        return self.run()


def profile_jobs(bench: Bench) -> dict[str, Any]:
    """S6 (outbox writes, SQLite) and S7 (the relay draining SQLite, in this process)."""
    from instant_signals.delivery.outbox import Relay

    n6, n7 = bench.sizes["s6"], bench.sizes["s7"]

    def write() -> None:
        with bench.app_settings(DELIVERY="outbox"):
            save_items(n6, 8_000_000, using="wal")

    def prepare_write() -> None:
        clear("wal")
        bench.broadcast_on("bench:s6-profile")

    def prepare_drain() -> None:
        seed(bench, "wal", n7)
        copy_seed("wal", "bench:s7-profile")

    def drain() -> None:
        result = Relay("wal").run_once()
        if result.sent != n7:
            raise RuntimeError(f"relay sent {result.sent} of {n7}")

    return {"s6-outbox-sqlite": Job(write, prepare_write),
            "s7-relay-sqlite": Job(drain, prepare_drain)}
