"""Rendering cost of HTML fragments against JSON events (issue 14), against a real Centrifugo v6.

Standalone: ``.venv-django5.2/bin/python benchmarks/html_render.py [--rounds 9] [--saves 1000]``
(any virtualenv with the project, django-model-utils and centrifuge-python).

One arm = 1,000 ``Model.objects.create()`` in one transaction of a model declared with
``@broadcast(channels=[...], fields=["id", "name", "code"])`` (JSON) or the same declaration with
``template="..."`` (HTML: each row's fragment rendered after commit as a Turbo Stream action, a
realistic ~300-byte card template with a filter, a condition and escaping). Timed: from
``transaction.atomic()`` to the return of the commit, i.e. the saves, the after-commit rendering
or serialization, and the ``/batch`` requests to Centrifugo. The arms alternate inside every
round (the order flips each round) so that noise from a shared machine falls on both alike.
A centrifuge-python client subscribed to both channels checks that every publication arrived.

Also measured, without the database and the network: building the 1,000 publications alone
(``commands_for`` over the transaction's changes), which isolates the per-event render cost.
Prints the median and the spread (min..max) over rounds, the ratio HTML / JSON, and writes
``benchmarks/results/html_render.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))  # benchproject

CARD = """<li id="{{ dom_id }}" class="card{% if card.code > 5 %} hot{% endif %}">
  <span class="title">{{ card.name }}</span> · <span class="votes">{{ card.code }}</span>
  vote{{ card.code|pluralize }}
  <form method="post" action="/cards/{{ pk }}/vote/"><button class="vote">+1</button></form>
</li>"""
JSON_CHANNEL, HTML_CHANNEL = "bench_json", "bench_html"
FIELDS = ["id", "name", "code"]


def setup(db_path: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="bench", USE_TZ=True, DEBUG=False,
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes",
                        "django.contrib.sessions", "django.contrib.messages",
                        "django.contrib.admin", "instant_signals", "benchproject.benchapp"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db_path}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates",
                    "OPTIONS": {"loaders": [("django.template.loaders.locmem.Loader",
                                             {"bench/_card.html": CARD})]}}],
        INSTANT_SIGNALS={"TIMEOUT": (2.0, 10.0)},
        SITE_NAME="bench",
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)


def start_centrifugo(workdir: Path):
    from django.conf import settings

    from instant_signals import client, installer
    from instant_signals.centrifugo_config import generate_config, write_config
    from support.processes import CentrifugoProcess, free_port

    config = generate_config(port=free_port(), namespaces={"": {"public": True}})
    path = write_config(workdir / "centrifugo.json", config)
    server = CentrifugoProcess(installer.find_or_install(download=False, build=False),
                               path).start()
    settings.CENTRIFUGO_API_URL = server.api_url
    settings.CENTRIFUGO_WS_URL = server.ws_url
    settings.CENTRIFUGO_API_KEY = server.api_key
    settings.CENTRIFUGO_HMAC_KEY = server.hmac_key
    client.close_session()
    return server


def declare(kind: str) -> None:
    from instant_signals.registry import broadcast_registry
    from benchproject.benchapp.models import Card

    broadcast_registry.unregister(Card)
    if kind == "json":
        broadcast_registry.register(Card, channels=[JSON_CHANNEL], fields=FIELDS)
    else:
        broadcast_registry.register(Card, channels=[HTML_CHANNEL], fields=FIELDS,
                                    template="bench/_card.html")


def one_batch(kind: str, saves: int) -> float:
    """Seconds for ``saves`` creates in one transaction, commit and publication included."""
    from django.db import transaction

    from instant_signals import disable_broadcasts
    from benchproject.benchapp.models import Card

    declare(kind)
    start = time.perf_counter()
    with transaction.atomic():
        for i in range(saves):
            Card.objects.create(name=f"Card <{i}> & co", code=i % 10)
    elapsed = time.perf_counter() - start
    with disable_broadcasts():  # clean up, untimed and unpublished
        Card.objects.all().delete()
    return elapsed


def build_only(kind: str, saves: int) -> tuple[float, int]:
    """Seconds to build the publications of ``saves`` changes (no database, no network), and
    the bytes of one publication."""
    from instant_signals.declarations import Change
    from instant_signals.delivery.commands import commands_for
    from instant_signals.envelope import CREATED
    from instant_signals.registry import broadcast_registry
    from benchproject.benchapp.models import Card

    declare(kind)
    declaration = broadcast_registry.declarations(Card)[0]
    changes = []
    for i in range(saves):
        row = Card(pk=i + 1, name=f"Card <{i}> & co", code=i % 10)
        changes.append(Change(declaration, i + 1, None, declaration.seen(row, CREATED), i))
    start = time.perf_counter()
    commands = list(commands_for(changes))
    elapsed = time.perf_counter() - start
    assert len(commands) == saves
    return elapsed, len(commands[0].text)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--saves", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "html_render.json")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="html-render-"))
    setup(str(workdir / "bench.sqlite3"))
    server = start_centrifugo(workdir)
    from instant_signals.reporting import stats
    from instant_signals.tokens import connection_token
    from support.live import LiveClient

    reader = LiveClient(server.ws_url, token=connection_token(None))
    try:
        reader.connect()
        reader.subscribe(JSON_CHANNEL)
        reader.subscribe(HTML_CHANNEL)
        for kind in ("json", "html"):  # warm-up: imports, template compilation, connections
            one_batch(kind, 50)
        reader.wait_for(100, timeout=10)
        timings: dict[str, list[float]] = {"json": [], "html": []}
        builds: dict[str, list[float]] = {"json": [], "html": []}
        sizes: dict[str, int] = {}
        failed_before = stats["failed"]
        expected = 100
        for round_ in range(args.rounds):
            order = ("json", "html") if round_ % 2 == 0 else ("html", "json")
            for kind in order:
                timings[kind].append(one_batch(kind, args.saves))
                expected += args.saves
            for kind in order:
                seconds, sizes[kind] = build_only(kind, args.saves)
                builds[kind].append(seconds)
        got = reader.wait_for(expected, timeout=60)
        delivered = {kind: sum(1 for p in got if p["channel"] == channel)
                     for kind, channel in (("json", JSON_CHANNEL), ("html", HTML_CHANNEL))}
        assert stats["failed"] == failed_before, "publications failed"
        assert len(got) == expected, f"{len(got)} of {expected} publications arrived"
    finally:
        reader.close()
        server.stop()

    per_event = {kind: {k: v / args.saves * 1e6 for k, v in summary(values).items()}
                 for kind, values in timings.items()}
    build_per_event = {kind: {k: v / args.saves * 1e6 for k, v in summary(values).items()}
                       for kind, values in builds.items()}
    ratios = [h / j for h, j in zip(timings["html"], timings["json"])]
    result = {
        "saves_per_transaction": args.saves, "rounds": args.rounds,
        "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "load_average": os.getloadavg(),
        "batch_us_per_event": per_event, "build_us_per_event": build_per_event,
        "ratio_html_over_json": {**summary(ratios)},
        "render_us_per_event": statistics.median(builds["html"]) / args.saves * 1e6
        - statistics.median(builds["json"]) / args.saves * 1e6,
        "publication_bytes": sizes, "delivered": delivered,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))

    print(f"{args.saves} creates in one transaction, real Centrifugo, {args.rounds} interleaved "
          f"rounds (median, min..max), per event:")
    for kind in ("json", "html"):
        b, p = per_event[kind], build_per_event[kind]
        print(f"  {kind.upper():4}  whole batch {b['median']:7.1f} us "
              f"({b['min']:.1f}..{b['max']:.1f})   publications alone {p['median']:6.1f} us "
              f"({p['min']:.1f}..{p['max']:.1f})   {sizes[kind]} bytes")
    r = result["ratio_html_over_json"]
    print(f"  ratio HTML / JSON (whole batch): {r['median']:.2f}x "
          f"({r['min']:.2f}..{r['max']:.2f}), target <= 2x")
    print(f"  fragment rendering alone: {result['render_us_per_event']:.1f} us per event")
    print(f"  delivered: {delivered}; results in {args.out}")
    return 0 if r["median"] <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
