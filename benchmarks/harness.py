"""Benchmarks of instant_signals side by side with its peers, against a real Centrifugo v6.

Run through ``benchmarks/run`` (which builds the two venvs); this file runs in ``.venv-bench``
(the project + ``cent>=5`` + ``centrifuge-python`` + ``psycopg`` + ``django-model-utils``) and
starts django-instant's side in ``--peer-python`` (a venv with ``django-instant==4.2.0`` and
``cent<5``) as subprocesses, and worker processes (``worker.py``) for the multi-process arms.

Every arm of a scenario runs once per round, arms interleaved inside a round so that noise
from a shared machine falls on all of them alike; the table gives the median over rounds and the
spread (min..max). Correctness is checked on the server: each arm publishes into channels of the
``bench`` namespace, which has history on, and the stream's top offset tells how many
publications Centrifugo accepted ("Delivered" = accepted / expected, every round).

This file parses the arguments, runs the chosen scenarios (``RUNNERS``) and writes the results.
Scenarios 1-5 (default mode) are methods of the session, ``bench.Bench``; 6-8 and 6b (durable
mode) and 11 (a hung Centrifugo) are in ``durable.py``; 9 and 10 (threads, processes, async) in
``concurrency.py``. What they share is ``common.py``; the targets and the table ``report.py``.
Imports go one way: harness -> bench, durable, concurrency, report -> common, workloads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


import concurrency  # noqa: E402
import durable  # noqa: E402
import fanout  # noqa: E402
from bench import Bench  # noqa: E402
from common import OPT_IN, SCENARIOS, log, scenario_keys  # noqa: E402
from report import table, targets  # noqa: E402
from workloads import clear_items, save_items  # noqa: E402

#: What each scenario key runs (scenarios 1-5 are methods of the session).
RUNNERS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "s1": Bench.s1, "s2": Bench.s2, "s3": Bench.s3, "s4": Bench.s4, "s5": Bench.s5,
    "s6": durable.s6, "s6b": durable.s6b, "s7": durable.s7, "s8": durable.s8,
    "s9": concurrency.s9, "s10": concurrency.s10, "s11": durable.s11,
    "fanout": fanout.fanout,
}


# -- profiling ------------------------------------------------------------------------------------
def profile(bench: Bench, out_dir: Path) -> None:
    """cProfile of the instant_signals paths: S2 (real send), S4 (capture), S5 (10k), S6 (outbox
    write), S7 (relay drain, in this process), S10 (apublish)."""
    import cProfile
    import io
    import pstats

    import concurrency
    import durable
    from instant_signals.testing import capture_broadcasts

    bench.broadcast_on()
    jobs: dict[str, Callable[[], Any]] = {
        "s2": lambda: save_items(bench.sizes["s2"], 5_000_000),
        "s4": lambda: _captured(capture_broadcasts, bench.sizes["s4"], 6_000_000),
        "s5": lambda: save_items(bench.sizes["s5"], 7_000_000),
        "s1": lambda: concurrency.publish_loop(bench, bench.sizes["s1"]),
    }
    jobs.update(durable.profile_jobs(bench))
    jobs.update(concurrency.profile_jobs(bench))
    for name, job in jobs.items():
        clear_items()
        prepare = getattr(job, "prepare", None)
        if prepare is not None:
            prepare()
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


def versions(bench: Bench) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {}
    for name in ("Django", "urllib3", "cent", "centrifuge-python", "psycopg",
                 "django-model-utils", "aiohttp", "asgiref"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    import sqlite3

    out["sqlite"] = sqlite3.sqlite_version
    out["postgresql"] = getattr(bench, "pg_version", None)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="every arm of every scenario, small sizes, one round (< 2 minutes)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds per arm (default 5, quick 1)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated scenarios, any case (s1,s2 or S1,S2; default: "
                             f"all, {','.join(SCENARIOS)}; {','.join(OPT_IN)} only when "
                             "named)")
    parser.add_argument("--fanout-clients", default="",
                        help="fanout: comma-separated client counts (default 1000,5000,10000; "
                             "quick 1000)")
    parser.add_argument("--fanout-seconds", type=float, default=0,
                        help="fanout: seconds of steady load per step (default 10, quick 4)")
    parser.add_argument("--peer-python",
                        default=str(ROOT / ".venv-peer-instant" / "bin" / "python"))
    parser.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    parser.add_argument("--profile", action="store_true", help="also write cProfile reports")
    args = parser.parse_args(argv)
    chosen, unknown = scenario_keys(args.scenarios)
    if unknown or not chosen:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS + OPT_IN)} (any case)")

    # a plain `kill` still stops the servers and removes the temporary files (finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(args)
    started = time.time()
    print(f"== starting Centrifugo, PostgreSQL and the benchmark project in {bench.tmp}",
          file=sys.stderr)
    results: dict[str, Any] = {"meta": {}, "scenarios": {}}
    try:
        bench.start()
        for key in chosen:
            print(f"== scenario {key}", file=sys.stderr, flush=True)
            t = time.time()
            results["scenarios"][key] = RUNNERS[key](bench)
            results["scenarios"][key]["seconds"] = round(time.time() - t, 1)
        if args.profile:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            profile(bench, Path(args.out).parent)
        meta_versions = versions(bench)
    finally:
        bench.stop()
    import django

    results["meta"] = {
        "command": " ".join(["benchmarks/run",
                             *_user_args(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "rounds": bench.rounds,
        "sizes": {k: bench.sizes[k] for k in chosen},
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "centrifugo": bench.binary_version(),
        "versions": meta_versions,
        "peer": bench.peer_versions,
        "peer_problem": bench.peer_problem,
        "postgres_problem": bench.pg_problem,
        "load_average": os.getloadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
    }
    results["targets"] = targets(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(table(results))
    print(f"\n{'quick run' if args.quick else 'full run'} in {results['meta']['seconds']} s; "
          f"JSON written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
