"""The targets a run is judged by, and the Markdown table ``benchmarks/run`` prints."""

from __future__ import annotations

from typing import Any

from common import REQUIRED_SQLITE

# -- targets and the table ------------------------------------------------------------------------
def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def arm(scenario: str, name: str) -> dict[str, Any]:
        return results["scenarios"].get(scenario, {}).get("arms", {}).get(name, {})

    def add(what: str, value: Any, target: str, ok: bool | None) -> None:
        rows.append({"target": what, "measured": value, "goal": target, "pass": ok})

    def ratio_row(what: str, a: Any, b: Any, goal: str, limit: float, higher: bool = True,
                  pct: bool = False) -> None:
        if a and b:
            value = a / b
            text = f"{value:.0%}" if pct else f"{value:.2f}×"
            add(what, text, goal, value >= limit if higher else value <= limit)
        else:
            add(what, None, goal, None)

    scenarios = results["scenarios"]
    if "s1" in scenarios:
        ours = arm("s1", "instant_signals publish()").get("median")
        ratio_row("S1 rate vs django-instant", ours,
                  arm("s1", "django-instant publish()").get("median"), "≥ 3×", 3)
        ratio_row("S1 rate vs cent 5", ours,
                  arm("s1", "cent 5 Client (reused)").get("median"), "≥ 1×", 1)
        ratio_row("S1 rate vs raw floor (urllib3 pool, the transport underneath)", ours,
                  arm("s1", "raw urllib3 pool floor").get("median"), "≥ 80%", 0.8, pct=True)
        ratio_row("S1 rate vs raw floor (requests.Session)", ours,
                  arm("s1", "raw requests.Session floor").get("median"), "≥ 80%", 0.8, pct=True)
    if "s2" in scenarios:
        s2 = scenarios["s2"]
        ratio = s2["on_over_off"]["median"]
        add("S2 on / off time", f"{ratio:.2f}×" if ratio else None, "≤ 1.5×",
            None if ratio is None else ratio <= 1.5)
        on = arm("s2", "@broadcast on").get("http_requests")
        add("S2 HTTP requests, @broadcast on", on, "≤ 10", None if on is None else on <= 10)
        di = arm("s2", "django-instant publish() in post_save").get("http_requests")
        add("S2 HTTP requests, django-instant style", di, f"= {s2['n']} (one per save)",
            None if di is None else di == s2["n"])
    if "s3" in scenarios:
        a = arm("s3", "@broadcast on (after commit)")
        p50 = a.get("p50", {}).get("median")
        p99 = a.get("p99", {}).get("median")
        add("S3 p50 commit→receipt", ms(p50), "< 5 ms", None if p50 is None else p50 < 5)
        add("S3 p99 commit→receipt", ms(p99), "< 20 ms", None if p99 is None else p99 < 20)
    if "s4" in scenarios:
        for name, what in (
                ("hooks' own cost (on − off)", "full saves, on − off"),
                ("hooks alone, signals sent without SQL (on − off)", "signals without SQL")):
            v = arm("s4", name).get("median")
            add(f"S4 hooks' cost per save ({what})", None if v is None else f"{v:.1f} µs",
                "< 50 µs", None if v is None else v < 50)
    if "s5" in scenarios:
        v = arm("s5", "@broadcast on, peak above baseline").get("median")
        add(f"S5 peak, {scenarios['s5']['n']:,} events in one transaction",
            None if v is None else f"{v:.1f} MB", "< 50 MB", None if v is None else v < 50)
    if "s6" in scenarios:
        for db in ("SQLite", "PostgreSQL"):
            v = scenarios["s6"].get("ratios", {}).get(db, {}).get("median")
            add(f"S6 outbox write cost, {db} (outbox / off)", None if v is None else f"{v:.2f}×",
                "≤ 1.3×", None if v is None else v <= 1.3)
    if "s6b" in scenarios:
        a = arm("s6b", REQUIRED_SQLITE)
        for key, what in (("lock_errors", "lock errors (writers + relay)"),
                          ("resent_batches", "re-sent batches"), ("lost", "events lost")):
            v = a.get(key)
            add(f"S6b {what}, recommended SQLite settings", v, "= 0",
                None if v is None else v == 0)
    if "s7" in scenarios:
        v = arm("s7", "relay_outbox --once, SQLite (WAL)").get("median")
        add("S7 relay drain rate, SQLite", None if v is None else f"{v:,.0f}/s", "≥ 10,000/s",
            None if v is None else v >= 10000)
        v = arm("s7", "relay_outbox --once, PostgreSQL").get("median")
        add("S7 relay drain rate, PostgreSQL", None if v is None else f"{v:,.0f}/s", "≥ 10,000/s",
            None if v is None else v >= 10000)
    if "s8" in scenarios:
        for name in scenarios["s8"]["arms"]:
            v = arm("s8", name).get("p99", {}).get("median")
            add(f"S8 p99 commit→receipt, {name}", ms(v), "< 50 ms", None if v is None else v < 50)
    if "s9" in scenarios:
        for layout in ("8 threads", "4 processes"):
            ours = arm("s9", f"instant_signals publish(), {layout}").get("median")
            ratio_row(f"S9 {layout}: publish() vs raw urllib3 pool", ours,
                      arm("s9", f"raw urllib3 pool, {layout}").get("median"), "≥ 0.9×", 0.9)
            ratio_row(f"S9 {layout}: publish() vs cent 5", ours,
                      arm("s9", f"cent 5 Client, {layout}").get("median"), "(reported)", 0)
    if "s10" in scenarios:
        ours = arm("s10", "instant_signals apublish()")
        ratio_row("S10 apublish() vs cent 5 AsyncClient", ours.get("median"),
                  arm("s10", "cent 5 AsyncClient").get("median"), "≥ 1.0×", 1.0)
        lag = ours.get("loop_lag_max_ms", {})
        add("S10 event-loop stall, apublish() (median of each round's longest)",
            ms(lag.get("median")), "≤ 5 ms",
            None if lag.get("median") is None else lag["median"] <= 5)
        add("S10 event-loop stall, apublish() (longest in any round)", ms(lag.get("max")),
            "≤ 5 ms", None if lag.get("max") is None else lag["max"] <= 5)
        busy = ours.get("loop_busy_max_ms", {}).get("max")
        add("S10 longest stretch of the loop's thread running, apublish()", ms(busy), "≤ 5 ms",
            None if busy is None else busy <= 5)
    if "fanout" in scenarios:
        rows.extend(fanout_targets(scenarios["fanout"]))
    return rows


def fanout_targets(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 22's goal: >= 50,000 deliveries/s at p95 < 100 ms with 10,000 clients (the largest
    client count run is judged; a smaller run says so in the row)."""
    rows = []
    n = max(scenario["clients"])
    for run in scenario["runs"]:
        if run["clients"] != n:
            continue
        good = run.get("last_good")
        value = good["deliveries_per_s"] if good else None
        rows.append({"target": f"Fan-out {run['arm']}, {n:,} clients: deliveries/s at p95 "
                               f"commit→last-reader < 100 ms, nothing lost",
                     "measured": None if value is None else f"{value:,.0f}/s",
                     "goal": "≥ 50,000/s with 10,000 clients",
                     "pass": None if value is None or n < 10000 else value >= 50000})
    return rows


def fanout_table(scenario: dict[str, Any]) -> str:
    """Every step of every fan-out run, then Supabase's published figures with their source."""
    lines = ["", "| Fan-out run | Changes/s (achieved) | Deliveries/s | Commit→last-reader "
             "p50/p95/p99 ms | Commit→each delivery p50/p95/p99 ms | Missing | Django CPU "
             "ms/change | CPU % of a core (node A, node B, Redis, fleet, publisher) | Node RSS MB "
             "(A, B) | Step |", "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for run in scenario["runs"]:
        name = f"{run['arm']}, {run['clients']:,} clients"
        if run.get("status") == "error":
            lines.append(f"| {name} | - | - | - | - | - | - | - | - | error: {run['error']} |")
            continue
        mem = run["memory"]["kb_per_connection"]
        name += (f" ({run['setup']['subscriptions']:,} subscriptions; {mem['a']:.0f}/{mem['b']:.0f}"
                 f" KB per connection on node A/B)")
        for step in run["steps"]:
            lr, pd, cpu = step["last_reader_ms"], step["per_delivery_ms"], step["cpu_percent_of_a_core"]
            lines.append(
                f"| {name} | {step['rate']} ({step['achieved_rate']:.0f}) | "
                f"{step['deliveries_per_s']:,.0f} | {lr['p50']}/{lr['p95']}/{lr['p99']} | "
                f"{pd['p50']}/{pd['p95']}/{pd['p99']} | {step['missing']} | "
                f"{step['django_cpu_ms_per_change']:.2f} | {cpu['centrifugo_a']:.0f}, "
                f"{cpu['centrifugo_b']:.0f}, {cpu['redis']:.0f}, {cpu['fleet']:.0f}, "
                f"{cpu['publisher']:.0f} | {step['rss_mb']['centrifugo_a']:.0f}, "
                f"{step['rss_mb']['centrifugo_b']:.0f} | "
                f"{'good' if step['good'] else 'saturated: ' + step['why']} |")
    sb = scenario["supabase"]
    lines.append(f"| Supabase Realtime (published): {sb['setup']}, {sb['clients']:,} clients | "
                 f"{sb['changes_per_s']} | ~{sb['messages_per_s']:,} | -/{sb['p95_ms']}/- | - | - | "
                 f"- | - | - | source: {sb['source']} |")
    nofile = scenario["limits"]["nofile"]
    lines.append(f"\nRLIMIT_NOFILE raised from {nofile['soft_before']} to {nofile['soft_now']} "
                 f"(hard limit {nofile['hard']}); {scenario['step_seconds']} s of steady load "
                 f"per step; a step is good when: {scenario['criteria']}.")
    return "\n".join(lines)




def ms(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f} ms"


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


TITLES = {
    "s1": "1. sequential publish(), {n} messages (msg/s)",
    "s2": "2. {n} saves in one transaction (ms)",
    "s3": "3. commit → subscriber, {n} events (ms)",
    "s4": "4. hooks' own cost, capture mode, {n} saves (µs/save)",
    "s5": "5. peak memory, {n} events in one transaction (MB)",
    "s6": "6. outbox write, {n} saves in one transaction (ms)",
    "s6b": "6b. SQLite, 4 writers × {n} transactions while the relay drains (transactions/s)",
    "s7": "7. drain {n} committed outbox rows to a subscriber (events/s)",
    "s8": "8. durable commit → subscriber, {n} events (ms)",
    "s9": "9. publish() × {n} per thread/process (msg/s, total)",
    "s10": "10. {n} async publishes, 100 in flight (msg/s)",
    "s11": "11. Centrifugo hung (SIGSTOP) {n} updates, then resumed",
    "fanout": "fan-out, 2 Centrifugo nodes + Redis, up to {n} clients (deliveries/s at the "
              "last good step)",
}


def notes_of(arm: dict[str, Any]) -> str:
    status = arm.get("status")
    notes = [] if status == "ok" else [f"{status}: {arm.get('error') or ''}"]
    if arm.get("http_requests") is not None:
        notes.insert(0, f"{arm['http_requests']} HTTP requests, {arm['tcp_connections']} TCP "
                        f"connections")
    for key in ("note",):
        if arm.get(key):
            notes.append(str(arm[key]))
    return "; ".join(notes)


def delivered_of(arm: dict[str, Any]) -> str:
    expected, delivered = arm.get("expected_per_round"), arm.get("delivered_per_round")
    if not expected:
        return "-"
    if len(set(expected)) == 1 and delivered:
        return f"{min(delivered)}/{expected[0]}"
    return f"{sum(delivered or [])}/{sum(expected)}"


def table(results: dict[str, Any]) -> str:
    lines = ["| Scenario | Arm | Median | Spread (min..max) | Delivered | Notes |",
             "|---|---|---:|---:|---|---|"]
    for key, scenario in results["scenarios"].items():
        title = TITLES[key].format(n=f"{scenario['n']:,}")
        for name, arm in scenario["arms"].items():
            delivered, notes = delivered_of(arm), notes_of(arm)
            if "p50" in arm:
                for q in ("p50", "p99"):
                    s = arm[q]
                    lines.append(f"| {title} | {name} {q} | {fmt(s['median'])} | "
                                 f"{fmt(s['min'])}..{fmt(s['max'])} | {delivered} | "
                                 f"{notes if q == 'p50' else ''} |")
                continue
            if arm.get("median") is None and not arm.get("rounds"):
                lines.append(f"| {title} | {name} | - | - | {delivered} | {notes} |")
                continue
            lines.append(f"| {title} | {name} | {fmt(arm['median'])} | "
                         f"{fmt(arm['min'])}..{fmt(arm['max'])} | {delivered} | {notes} |")
    if "fanout" in results["scenarios"]:
        lines.append(fanout_table(results["scenarios"]["fanout"]))
    lines += ["", "| Target | Measured | Goal | Result |", "|---|---:|---|---|"]
    for row in results["targets"]:
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[row["pass"]]
        lines.append(f"| {row['target']} | {fmt(row['measured'])} | {row['goal']} | {verdict} |")
    return "\n".join(lines)


