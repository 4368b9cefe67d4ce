"""The django-instant 4.2.0 side of the benchmarks, run inside its own venv (cent<5).

Usage (by harness.py): python peer_instant.py SCENARIO --n N --channel CH --db-dir DIR
Centrifugo's port and API key come in BENCH_CENTRIFUGO_PORT / BENCH_CENTRIFUGO_API_KEY (read by
benchproject.settings, which django-instant reads at import). Prints one JSON object.

- ``s1``: ``instant.producers.publish(channel, message)`` N times, the way its README shows.
- ``s2``: N saves of the 10-field model in one transaction with a ``post_save`` handler that
  calls django-instant's ``publish()`` with the row's fields, the usual django-instant pattern.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workloads import clear_items, setup_django, save_items  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["s1", "s2", "version"])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--channel", default="bench:peer")
    parser.add_argument("--db-dir", default=None)
    args = parser.parse_args()
    setup_django(args.db_dir, peer=True)

    from importlib.metadata import version

    from instant.producers import publish

    out = {"django_instant": version("django-instant"), "cent": version("cent"), "errors": 0}
    if args.scenario == "version":
        print(json.dumps(out))
        return 0
    if args.scenario == "s1":
        errors = []
        start = time.perf_counter()
        for i in range(args.n):
            try:
                publish(args.channel, f"message {i}")
            except Exception as exc:  # noqa: BLE001 - recorded, not hidden
                errors.append(repr(exc))
        out["seconds"] = time.perf_counter() - start
    else:
        from django.core.serializers.json import DjangoJSONEncoder
        from django.db.models.signals import post_save
        from django.forms.models import model_to_dict

        from benchproject.benchapp.models import Item

        errors = []

        def on_save(sender, instance, created, **kwargs):
            fields = json.loads(json.dumps(model_to_dict(instance), cls=DjangoJSONEncoder))
            try:
                publish(args.channel, "created" if created else "updated",
                        event_class="created" if created else "updated",
                        data=fields, bucket="benchapp.item")
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))

        post_save.connect(on_save, sender=Item, weak=False)
        clear_items()
        start = time.perf_counter()
        save_items(args.n)
        out["seconds"] = time.perf_counter() - start
    out["errors"] = len(errors)
    out["first_error"] = errors[0] if errors else None
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
