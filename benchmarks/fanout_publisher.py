"""The Django side of the fan-out scenario (``fanout.py`` starts it, one process per arm).

Its own process, so that its CPU time is the publisher's alone (Django CPU per change). It
makes the users, projects (~100 members each, every user in 1-3) and tasks in a fresh SQLite
file, registers the arm's ``@broadcast`` declaration, signs every client's tokens after
``access.can_read`` said yes (the authorization a user's ``subscribe/`` runs), writes the fleet's
plan, prints one JSON line, and then answers JSON commands on stdin, one JSON line each:

  {"cmd": "run", "point": P, "rate": R, "seconds": S}
      R changes/s for S s, paced on a fixed schedule (change i at start + i/R): each change one
      transaction saving one task (seq, point, stamp = time.time() just before COMMIT), published
      after commit by @broadcast. Answers the seq range, the changes made, the rate achieved and
      the process CPU time they took.
  {"cmd": "quit"}

Arms (``--arm``):
  project  "$project:{project_id}", a callable rule (is the user a member of the project?)
  row      "$task:{pk}", a callable rule (is the user a member of the task's project?); each
           client subscribes to every task of its projects
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from workloads import setup_django  # noqa: E402

MEMBERS_PER_PROJECT = 100
TASKS_PER_PROJECT = 4
TOKEN_LIFETIME = 3 * 3600  # no refresh during a run


def member_of_project(user: Any, project_id: str) -> bool:
    from benchproject.benchapp.models import FanMember

    return FanMember.objects.filter(project_id=project_id, user_id=user.pk).exists()


def member_of_tasks_project(user: Any, pk: str) -> bool:
    from benchproject.benchapp.models import FanTask

    return FanTask.objects.filter(pk=pk, project__members__pk=user.pk).exists()


def memberships(n_users: int, seed: int = 22) -> tuple[int, list[list[int]]]:
    """(number of projects, each user's project indexes): user i is in 1 + i % 3 projects,
    chosen at random, so that projects have ~MEMBERS_PER_PROJECT members."""
    rng = random.Random(seed)
    wanted = [1 + i % 3 for i in range(n_users)]
    n_projects = max(1, round(sum(wanted) / MEMBERS_PER_PROJECT))
    return n_projects, [rng.sample(range(n_projects), min(k, n_projects)) for k in wanted]


def setup(args: argparse.Namespace) -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.db import transaction

    from benchproject.benchapp.models import FanInbox, FanMember, FanProject, FanTask
    from instant_signals import access, broadcast_registry, tokens

    started = time.perf_counter()
    n_projects, chosen = memberships(args.clients)
    with transaction.atomic():
        User.objects.bulk_create([User(username=f"fan{i}", password="!") for i in range(args.clients)])
        users = list(User.objects.order_by("pk"))
        FanProject.objects.bulk_create([FanProject(name=f"p{i}") for i in range(n_projects)])
        projects = list(FanProject.objects.order_by("pk"))
        FanMember.objects.bulk_create([FanMember(project_id=projects[p].pk, user_id=u.pk)
                                     for u, ps in zip(users, chosen) for p in ps])
        FanTask.objects.bulk_create([FanTask(project=p, title=f"task {j} of {p.name}")
                                     for j in range(TASKS_PER_PROJECT) for p in projects])
        FanInbox.objects.bulk_create([FanInbox(owner=u) for u in users])
    created = time.perf_counter() - started

    broadcast_registry.register(FanInbox, channels=["$user:{owner_id}"], authorize="owner",
                                fields=["id"])
    if args.arm == "project":
        broadcast_registry.register(FanTask, channels=["$project:{project_id}"],
                                    authorize=member_of_project,
                                    fields=["id", "title", "seq", "point", "stamp"])
    else:
        broadcast_registry.register(FanTask, channels=["$task:{pk}"],
                                    authorize=member_of_tasks_project,
                                    fields=["id", "title", "seq", "point", "stamp"])
    tasks = list(FanTask.objects.order_by("pk"))
    tasks_of: dict[int, list[int]] = {}
    for task in tasks:
        tasks_of.setdefault(task.project_id, []).append(task.pk)

    # Every client's tokens, signed after the access check a subscribe/ request runs.
    started = time.perf_counter()
    cpu = time.process_time()
    nodes = args.nodes.split(",")
    clients, subscribers = [], {}
    refused = 0
    for i, (user, ps) in enumerate(zip(users, chosen)):
        names = [f"$user:{user.pk}"]
        for p in ps:
            project = projects[p]
            if args.arm == "project":
                names.append(f"$project:{project.pk}")
            else:
                names.extend(f"$task:{pk}" for pk in tasks_of[project.pk])
        subs = []
        for name in names:
            if not access.can_read(user, name):
                refused += 1
                continue
            subs.append({"channel": name, "token": tokens.subscription_token(
                user, name, lifetime=TOKEN_LIFETIME)})
            subscribers[name] = subscribers.get(name, 0) + 1
        clients.append({"node": i % len(nodes),
                        "token": tokens.connection_token(user, lifetime=TOKEN_LIFETIME),
                        "subs": subs})
    authorize_cpu = time.process_time() - cpu
    authorize_s = time.perf_counter() - started
    n_subs = sum(len(c["subs"]) for c in clients)
    Path(args.plan).write_text(json.dumps({"nodes": nodes, "max_seq": args.max_seq,
                                           "clients": clients}))
    # The order changes go in: round-robin over projects, so consecutive changes hit different
    # projects (and, in the row arm, different channels).
    by_project = [tasks_of[p.pk] for p in projects]
    order = [by_project[k % len(projects)][(k // len(projects)) % TASKS_PER_PROJECT]
             for k in range(len(tasks))]
    channel_of = ({t.pk: f"$project:{t.project_id}" for t in tasks} if args.arm == "project"
                  else {t.pk: f"$task:{t.pk}" for t in tasks})
    expected_of = {pk: subscribers.get(channel_of[pk], 0) for pk in order}
    return {"order": order, "expected_of": expected_of, "tasks": {t.pk: t for t in tasks},
            "summary": {
                "users": len(users), "projects": n_projects, "tasks": len(tasks),
                "memberships": sum(len(ps) for ps in chosen),
                "members_per_project": {"min": min(map(len, _members(chosen, n_projects))),
                                        "max": max(map(len, _members(chosen, n_projects)))},
                "subscriptions": n_subs, "refused": refused,
                "setup_seconds": round(created, 2),
                "authorize_and_sign_seconds": round(authorize_s, 2),
                "authorize_and_sign_cpu_us_per_subscription":
                    round(authorize_cpu / max(1, n_subs) * 1e6, 1)}}


def _members(chosen: list[list[int]], n_projects: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(n_projects)]
    for user, ps in enumerate(chosen):
        for p in ps:
            out[p].append(user)
    return out


def run(state: dict[str, Any], command: dict[str, Any]) -> dict[str, Any]:
    from django.db import transaction

    order, tasks, expected_of = state["order"], state["tasks"], state["expected_of"]
    rate, seconds, point = float(command["rate"]), float(command["seconds"]), int(command["point"])
    n = max(1, int(rate * seconds))
    first = state["seq"]
    expected = 0
    late_max = 0.0
    cpu = time.process_time()
    started = time.perf_counter()
    for i in range(n):
        due = started + i / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        else:
            late_max = max(late_max, now - due)
        seq = first + i
        task = tasks[order[seq % len(order)]]
        task.seq, task.point = seq, point
        with transaction.atomic():
            task.stamp = time.time()
            task.save(update_fields=["seq", "point", "stamp"])
        expected += expected_of[task.pk]
    elapsed = time.perf_counter() - started
    used = time.process_time() - cpu
    state["seq"] = first + n
    return {"point": point, "rate": rate, "from": first, "to": first + n, "changes": n,
            "expected_deliveries": expected, "seconds": round(elapsed, 3),
            "achieved_rate": round(n / elapsed, 1), "late_max_ms": round(late_max * 1e3, 1),
            "cpu_seconds": round(used, 4), "cpu_ms_per_change": round(used / n * 1e3, 4)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arm", choices=["project", "row"], required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--nodes", required=True, help="comma-separated websocket URLs")
    parser.add_argument("--plan", required=True)
    parser.add_argument("--db-dir", required=True)
    parser.add_argument("--max-seq", type=int, default=2_000_000)
    args = parser.parse_args()
    setup_django(args.db_dir)
    state = setup(args)
    state["seq"] = 0
    print(json.dumps({"ready": True, **state["summary"]}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        print(json.dumps(run(state, command)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
