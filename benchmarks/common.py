"""What every scenario module shares: sizes, channel names, the per-round statistics and the
shape of an arm's result, logging, and the cent 5 client. Imports nothing of the benchmarks
(the scenario modules, ``bench`` and ``report`` import it; it imports none of them)."""

from __future__ import annotations

import statistics
import sys
from typing import Any


SCENARIOS = ["s1", "s2", "s3", "s4", "s5", "s6", "s6b", "s7", "s8", "s9", "s10", "s11"]
# Run only when asked for (``--scenarios fanout``): thousands of sockets, minutes of load.
OPT_IN = ["fanout"]


def scenario_keys(text: str) -> tuple[list[str], list[str]]:
    """``--scenarios`` as typed (``s1,S2, s6B``: the docs and the table say S2) → (known keys
    in the order given, each once; unknown ones as typed)."""
    chosen, unknown = [], []
    for word in text.split(","):
        key = word.strip().lower()
        if key in SCENARIOS or key in OPT_IN:
            if key not in chosen:
                chosen.append(key)
        elif key:
            unknown.append(word.strip())
    return chosen, unknown
FULL = {"s1": 2000, "s2": 1000, "s3": 1000, "s4": 1000, "s5": 10000, "s6": 1000, "s6b": 250,
        "s7": 20000, "s8": 1000, "s9": 1000, "s10": 2000, "s11": 10, "fanout": 10000}
# --quick: every arm of every scenario, small sizes, one round. Scenario 2 keeps its 1,000
# saves: its request counts (<= 10 against one per save) are what a user checks.
QUICK = {"s1": 40, "s2": 1000, "s3": 30, "s4": 30, "s5": 200, "s6": 30, "s6b": 20, "s7": 400,
         "s8": 20, "s9": 30, "s10": 100, "s11": 3, "fanout": 1000}
MAX_ROUNDS = {"s5": 3, "s6b": 3, "s7": 3, "s8": 3, "s9": 3, "s11": 1}
ITEM_CHANNEL = "bench:items"
QUEUE_MAX_SIZE = 64 * 1024 * 1024  # a subscriber may fall 64 MB behind a 20,000-event drain
REQUIRED_SQLITE = "WAL + IMMEDIATE + timeout 20 s (what the docs require)"

# -- helpers --------------------------------------------------------------------------------------
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


def rotated(arms: dict[str, Any], r: int) -> list[tuple[int, tuple[str, Any]]]:
    """The arms of round ``r`` (index, (name, arm)), starting one further each round, so no
    arm always runs first, or always right after the same neighbour."""
    items = list(enumerate(arms.items()))
    shift = r % len(items) if items else 0
    return items[shift:] + items[:shift]


def arm_result(values: list[float], *, status: str = "ok", error: str | None = None,
               expected: list[int] | None = None, delivered: list[int] | None = None,
               **extra: Any) -> dict[str, Any]:
    """One arm: the summary of its values, and (delivering arms) what Centrifugo accepted of
    what was expected, per round; a round that lost or duplicated a message marks it "lost"."""
    out: dict[str, Any] = {"status": status, "error": error, **summary(values)}
    if expected is not None:
        out["expected_per_round"] = expected
        out["delivered_per_round"] = delivered or []
        if status == "ok" and (not delivered or list(delivered) != list(expected)):
            out["status"] = "lost"
    out.update(extra)
    return out


def failed_arm(status: str, error: str | None, **extra: Any) -> dict[str, Any]:
    return {"status": status, "error": error, **summary([]), **extra}


def cent5() -> tuple[Any, Any]:
    """cent 5's Client and PublishRequest (the venv of benchmarks/run has it; others may not)."""
    try:
        from cent import Client, PublishRequest  # PublishRequest exists from cent 5 on
    except ImportError:
        raise Unavailable("cent>=5 is not installed in this venv") from None
    return Client, PublishRequest


class Unavailable(RuntimeError):
    """An arm that cannot run here (a peer library or server missing): a result, not a crash."""


def log(message: str) -> None:
    print(f"   {message}", file=sys.stderr, flush=True)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]




def latency_arm(slot: dict[str, Any], n: int, **extra: Any) -> dict[str, Any]:
    """p50/p99 (ms) per round of a latency arm; what Centrifugo accepted (``delivered``) and
    what the subscriber got in time (``received``) per round must both be ``n``."""
    if slot["status"] != "ok":
        return {"status": slot["status"], "error": slot["error"], "p50": summary([]),
                "p99": summary([]), **extra}
    expected = [n] * len(slot["delivered"])
    ok = slot["delivered"] == expected and slot.get("received", expected) == expected
    return {"status": "ok" if ok else "lost", "error": None, "p50": summary(slot["p50"]),
            "p99": summary(slot["p99"]), "expected_per_round": expected,
            "delivered_per_round": slot["delivered"],
            "received_per_round": slot.get("received", expected), **extra}


