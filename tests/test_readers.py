"""Readers declared by relation: ``@broadcast(channels=["$project:{project_id}"],
readers="project__members", ...)``.

* Registration: a path that does not lead to the user model, or that the channel's
  placeholders cannot start from, and ``readers=`` with ``authorize``/``level``, are refused with
  an ``ImproperlyConfigured`` naming the problem (also for decorators, checked at startup).
* Granting: ``subscribe/``, ``get_token/`` and ``collection/`` grant a channel to exactly the
  members, with one membership lookup (counted), whatever the channel holds.
* Revocation: every write that can take access away (an m2m remove/clear from either side, a
  membership row deleted or moved, a user deactivated or deleted, the group deleted) sends
  Centrifugo ``unsubscribe`` for exactly the users who lost access, after commit; nothing for a
  rolled-back transaction or a member removed and added back.
* Live: a real centrifuge-python client of a removed member is unsubscribed after commit and
  receives nothing of the transaction that removed it, a new member subscribes at once, presence
  follows; the revocation window (commit -> unsubscribe received) is measured.
* Property: generated memberships and histories (joins, leaves from either side, clears,
  deactivations, membership rows moved, changes; committed, rolled back, in savepoints) judged by
  an oracle written here: no delivery to a user who was not a reader when the change committed,
  every continuing reader gets every change, and subscribe/ answers as the oracle says.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from instant_signals import BroadcastRegistry, broadcast_registry, streams
from instant_signals.access import can_read
from instant_signals.capture import memberships
from instant_signals.tokens import connection_token
from tests.conftest import ARTIFACTS
from tests.testapp.models import (Doc, Membership, Project, ProjectTask, Task, Team, TeamNote)

User = get_user_model()


# -- registration --------------------------------------------------------------------------------

REFUSED = [
    ({"channels": ["$project:{project_id}"], "readers": "project"},
     r"leads to testapp.Project, not to the user model \(auth.User\)"),
    ({"channels": ["$project:{project_id}"], "readers": "project__tasks"},
     r"leads to testapp.ProjectTask, not to the user model"),
    ({"channels": ["$project:{project_id}"], "readers": "project__name"},
     r"'project__name' is the field testapp.Project.name, not a relation"),
    ({"channels": ["$project:{project_id}"], "readers": "project__owners"},
     r"testapp.Project has no relation 'owners' \(its relations: members, tasks\)"),
    ({"channels": ["$project:{project_id}"], "readers": "project____members"},
     r"readers must be a relation path to the user model"),
    ({"channels": ["$project:{project_id}"], "readers": ""},
     r"readers must be a relation path"),
    ({"channels": ["$project:{project_id}"], "readers": "project__members",
      "authorize": "project"}, r"drop authorize= \(give one of readers=, authorize=, level=\)"),
    ({"channels": ["$project:{project_id}"], "readers": "project__members", "level": "users"},
     r"drop level="),
    ({"channels": ["$projects"], "readers": "project__members"},
     r"'\$projects' is a static name"),
    ({"channels": ["project:{project_id}"], "readers": "project__members"},
     r"'project:\{project_id\}' is not private \(no \$\)"),
    ({"channels": lambda instance, event: ["$x"], "readers": "project__members"},
     r"readers= needs channel templates"),
    ({"channels": ["$bytitle:{title}"], "readers": "project__members"},
     r"neither name the path's first foreign key .* nor identify one row"),
    ({"channels": ["$project:{project_id}:{done}"], "readers": "project__members"},
     r"the channel may only carry \{project_id\}"),
]


@pytest.mark.parametrize("options, message", REFUSED)
def test_a_path_that_does_not_lead_to_users_is_refused_at_registration(options, message):
    with pytest.raises(ImproperlyConfigured, match=r"@broadcast on testapp.projecttask: .*" + message):
        BroadcastRegistry().register(ProjectTask, fields=["id"], **options)


def test_accepted_paths_forward_reverse_and_through_rows():
    registry = BroadcastRegistry()
    registry.register(ProjectTask, channels=["$p2:{project_id}"], readers="project__members",
                      fields=["id"])
    registry.register(Project, channels=["$p3:{pk}"], readers="members", fields=["id"])
    registry.register(TeamNote, channels=["$t2:{team_id}"], readers="team__memberships__user",
                      fields=["id"])
    registry.register(Membership, channels=["$m:{pk}"], readers="user", fields=["id"])
    registry.register(Doc, channels=["$doc:{slug}"], readers="owner", fields=["id"])
    assert len(registry.declarations()) == 5
    for declaration in registry.declarations():
        registry.unregister(declaration.model)


def test_a_decorators_bad_path_fails_at_startup(monkeypatch):
    """While models load, relations cannot be followed: the path is checked when the app
    registry is ready (``AppConfig.ready`` calls ``check_readers``), naming the problem."""
    registry = BroadcastRegistry()
    monkeypatch.setattr(apps, "models_ready", False)
    registry.register(ProjectTask, channels=["$p4:{project_id}"], readers="project__tasks",
                      fields=["id"])  # accepted for now
    monkeypatch.setattr(apps, "models_ready", True)
    with pytest.raises(ImproperlyConfigured, match="leads to testapp.ProjectTask, not to the user"):
        registry.check_readers()
    registry.unregister(ProjectTask)


def test_readers_from_settings_is_a_value(settings):
    settings.INSTANT_SIGNALS = {"MODELS": {"testapp.teamnote": {
        "channels": ["$t3:{team_id}"], "readers": "team__memberships__user", "fields": ["id"]}}}
    registry = BroadcastRegistry()
    registry.register_from_settings()
    (declaration,) = registry.declarations(TeamNote)
    assert declaration.readers.path == "team__memberships__user"
    registry.unregister(TeamNote)


# -- granting ------------------------------------------------------------------------------------

@pytest.fixture
def org(django_user_model):
    alice = django_user_model.objects.create_user("alice")
    bob = django_user_model.objects.create_user("bob")
    carol = django_user_model.objects.create_user("carol")
    apollo, zeus = Project.objects.create(name="apollo"), Project.objects.create(name="zeus")
    apollo.members.add(alice, bob)
    zeus.members.add(bob)
    red = Team.objects.create(name="red")
    Membership.objects.create(team=red, user=alice)
    return {"alice": alice, "bob": bob, "carol": carol, "apollo": apollo, "zeus": zeus,
            "red": red}


def browser_of(user) -> Client:
    browser = Client()
    if user is not None:
        browser.force_login(user)
    return browser


def may_subscribe(user, channel: str) -> bool:
    answer = browser_of(user).post("/instant/subscribe/", {"channel": channel},
                                   content_type="application/json")
    assert answer.status_code in (200, 403), answer.content
    return answer.status_code == 200


def membership_queries(queries) -> list[str]:
    return [q["sql"] for q in queries if "testapp_" in q["sql"]]


@pytest.mark.django_db
def test_subscribe_grants_the_members_only_with_one_lookup(org):
    apollo = org["apollo"]
    channel = f"$project:{apollo.pk}"  # before the project has any task
    verdicts = {name: may_subscribe(org[name], channel) for name in ("alice", "bob", "carol")}
    assert verdicts == {"alice": True, "bob": True, "carol": False}
    assert not may_subscribe(None, channel)
    assert not may_subscribe(org["carol"], "$project:abc")  # not a pk: refused, no query
    assert may_subscribe(org["alice"], f"$team:{org['red'].pk}")
    assert not may_subscribe(org["bob"], f"$team:{org['red'].pk}")

    browser = browser_of(org["alice"])
    with CaptureQueriesContext(connection) as queries:
        answer = browser.post("/instant/subscribe/", {"channel": channel},
                              content_type="application/json")
    assert answer.status_code == 200
    assert len(membership_queries(queries)) == 1, membership_queries(queries)

    # a new member can subscribe at once; an inactive member cannot
    apollo.members.add(org["carol"])
    assert may_subscribe(org["carol"], channel)
    assert may_subscribe(org["bob"], channel)
    User.objects.filter(pk=org["bob"].pk).update(is_active=False)
    stale = org["bob"]  # still is_active=True in memory: the lookup reads the database
    assert stale.is_active and not can_read(stale, channel)
    assert not can_read(User.objects.get(pk=stale.pk), channel)


@pytest.mark.django_db
def test_a_row_channel_is_granted_to_the_members_of_its_rows_project(org):
    task = ProjectTask.objects.create(project=org["zeus"], title="t")
    assert may_subscribe(org["bob"], f"$ptask:{task.pk}")
    assert not may_subscribe(org["alice"], f"$ptask:{task.pk}")
    assert not may_subscribe(org["bob"], "$ptask:999999")


@pytest.mark.django_db
def test_get_token_lists_the_users_group_channels(org):
    answer = browser_of(org["bob"]).get("/instant/get_token/").json()
    names = {c["name"]: c["level"] for c in answer["channels"]}
    assert {n: lv for n, lv in names.items() if lv == "readers"} == {
        f"$project:{org['apollo'].pk}": "readers", f"$project:{org['zeus'].pk}": "readers"}
    assert all(c["token"] for c in answer["channels"])
    carol = browser_of(org["carol"]).get("/instant/get_token/").json()
    assert [c for c in carol["channels"] if c["level"] == "readers"] == []
    alice = browser_of(org["alice"]).get("/instant/get_token/").json()
    assert f"$team:{org['red'].pk}" in {c["name"] for c in alice["channels"]}


@pytest.mark.django_db(transaction=True)
def test_collection_lists_rows_to_members_with_one_lookup_whatever_the_row_count(org, centrifugo):
    apollo = org["apollo"]
    channel = f"$project:{apollo.pk}"
    browser = browser_of(org["alice"])
    counts = []
    for total in (1, 30):
        while ProjectTask.objects.filter(project=apollo).count() < total:
            ProjectTask.objects.create(project=apollo, title="t")
        with CaptureQueriesContext(connection) as queries:
            answer = browser.get("/instant/collection/", {"channel": channel})
        assert answer.status_code == 200, answer.content
        assert len(answer.json()["rows"]) == total
        counts.append(len(membership_queries(queries)))
    assert counts == [2, 2]  # the membership lookup, the rows
    assert browser_of(org["carol"]).get("/instant/collection/",
                                        {"channel": channel}).status_code == 403


# -- revocation, as sent to Centrifugo -------------------------------------------------------------

@pytest.fixture
def unsubscribes(monkeypatch):
    """The (channel, user id) of every ``unsubscribe`` the package sends, in order."""
    sent: list[tuple[str, str]] = []

    def record(commands):
        for command in commands:
            assert command.method == "unsubscribe"
            sent.append((command.params["channel"], command.params["user"]))

    monkeypatch.setattr(memberships, "send", record)
    return sent


def ids(*pairs) -> list[tuple[str, str]]:
    return sorted((channel, str(user.pk)) for channel, user in pairs)


@pytest.mark.django_db(transaction=True)
def test_every_write_that_takes_access_away_unsubscribes_exactly_who_lost_it(org, unsubscribes):
    alice, bob, carol = org["alice"], org["bob"], org["carol"]
    apollo, zeus, red = org["apollo"], org["zeus"], org["red"]
    task = ProjectTask.objects.create(project=apollo, title="t")
    p, ptask = f"$project:{apollo.pk}", f"$ptask:{task.pk}"

    def sent() -> list[tuple[str, str]]:
        out = sorted(unsubscribes)
        unsubscribes.clear()
        return out

    apollo.members.remove(bob)  # the project's side
    assert sent() == ids((p, bob), (ptask, bob))
    apollo.members.add(bob)
    assert sent() == []  # adding takes nothing away
    bob.projects.remove(apollo)  # the user's side
    assert sent() == ids((p, bob), (ptask, bob))
    apollo.members.add(bob, carol)
    apollo.members.clear()
    assert sent() == ids((p, alice), (p, bob), (p, carol), (ptask, alice), (ptask, bob),
                         (ptask, carol))
    apollo.members.add(alice, bob)
    bob.projects.clear()  # bob leaves apollo and zeus
    assert sent() == ids((p, bob), (ptask, bob), (f"$project:{zeus.pk}", bob))

    # membership rows: deleted, moved to another user or team; a role change takes nothing
    row = Membership.objects.get(team=red, user=alice)
    t = f"$team:{red.pk}"
    row.role = "admin"
    row.save()
    assert sent() == []
    row.user = bob
    row.save()
    assert sent() == ids((t, alice))
    blue = Team.objects.create(name="blue")
    row.team = blue
    row.save(update_fields=["team"])
    assert sent() == ids((t, bob))
    row.delete()
    assert sent() == ids((f"$team:{blue.pk}", bob))

    # a user deactivated (a save that does not name is_active costs no membership query)
    with CaptureQueriesContext(connection) as queries:
        alice.last_name = "A."
        alice.save(update_fields=["last_name"])
    assert membership_queries(queries) == []
    alice.is_active = False
    alice.save()
    assert sent() == ids((p, alice), (ptask, alice))
    alice.is_active = True
    alice.save()
    assert sent() == []

    # the group deleted; a user deleted
    zeus.members.add(carol)
    zeus_channel, carol_id = f"$project:{zeus.pk}", str(carol.pk)
    carol.delete()
    assert sent() == [(zeus_channel, carol_id)]
    zeus.members.add(alice)
    zeus.delete()
    assert sent() == ids((zeus_channel, alice))


@pytest.mark.django_db(transaction=True)
def test_revocation_waits_for_commit_and_judges_the_committed_state(org, unsubscribes):
    apollo, bob = org["apollo"], org["bob"]
    p = f"$project:{apollo.pk}"
    with transaction.atomic():
        apollo.members.remove(bob)
        assert unsubscribes == []  # not before commit
    assert unsubscribes == [(p, str(bob.pk))]
    unsubscribes.clear()
    apollo.members.add(bob)

    with pytest.raises(RuntimeError), transaction.atomic():
        apollo.members.remove(bob)
        raise RuntimeError("rolled back")
    assert unsubscribes == [] and apollo.members.filter(pk=bob.pk).exists()

    with transaction.atomic():  # removed and added back: still a reader when it commits
        apollo.members.remove(bob)
        apollo.members.add(bob)
    assert unsubscribes == []

    with transaction.atomic():  # a rolled-back savepoint's removal is forgotten
        try:
            with transaction.atomic():
                apollo.members.remove(bob)
                raise RuntimeError
        except RuntimeError:
            pass
        apollo.members.remove(org["alice"])
    assert unsubscribes == [(p, str(org["alice"].pk))]


@pytest.mark.django_db(transaction=True)
def test_centrifugo_unreachable_never_breaks_the_membership_change(org, settings, caplog):
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"
    settings.CENTRIFUGO_API_KEY = "k"
    from instant_signals import client as http_client

    http_client.close_session()
    with transaction.atomic():
        org["apollo"].members.remove(org["bob"])
    assert not org["apollo"].members.filter(pk=org["bob"].pk).exists()
    http_client.close_session()


# -- live: a real Centrifugo, real centrifuge-python clients ----------------------------------------

def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return condition()


def token_for(user, channel: str) -> str:
    answer = browser_of(user).post("/instant/subscribe/", {"channel": channel},
                                   content_type="application/json")
    assert answer.status_code == 200, answer.content
    return answer.json()["token"]


def titles(live, channel: str) -> list[str]:
    with live.lock:
        return [d["data"]["fields"]["title"] for c, d in live.received
                if c == channel and d.get("data", {}).get("fields")]


RUNS = 20  # revocation window samples


@pytest.mark.django_db(transaction=True)
def test_a_removed_member_is_unsubscribed_after_commit_and_stops_receiving(org, live_client):
    alice, bob, carol, apollo = org["alice"], org["bob"], org["carol"], org["apollo"]
    task = ProjectTask.objects.create(project=apollo, title="before")
    channel = f"$project:{apollo.pk}"
    clients = {}
    for user in (alice, bob):
        clients[user.username] = live = live_client(connection_token(user))
        live.subscribe(channel, token=token_for(user, channel))
    watcher, leaver = clients["alice"], clients["bob"]
    assert wait_until(lambda: {p["user"] for p in streams.presence(channel)} ==
                      {str(alice.pk), str(bob.pk)})

    # One transaction: a change, then bob's removal. He is not a reader when it commits: he is
    # unsubscribed before its publication reaches Centrifugo, and never receives it.
    with transaction.atomic():
        task.title = "committed with bob's removal"
        task.save()
        apollo.members.remove(bob)
        time.sleep(0.05)
        assert leaver.is_subscribed(channel)  # nothing before commit
    assert wait_until(lambda: channel in leaver.unsubscribed), "bob still reads the project"
    assert leaver.unsubscribed[channel][0] == 2000  # a server-side unsubscribe: terminal
    assert wait_until(lambda: "committed with bob's removal" in titles(watcher, channel))
    task.title = "later"
    task.save()
    assert wait_until(lambda: "later" in titles(watcher, channel))
    assert titles(leaver, channel) == []
    assert wait_until(lambda: {p["user"] for p in streams.presence(channel)} == {str(alice.pk)})
    assert not may_subscribe(bob, channel)  # and his next token request is refused

    # a new member subscribes at once and receives the next change
    apollo.members.add(carol)
    newcomer = live_client(connection_token(carol))
    newcomer.subscribe(channel, token=token_for(carol, channel))
    task.title = "welcome"
    task.save()
    assert wait_until(lambda: titles(newcomer, channel) == ["welcome"])

    # the window, commit -> the client's unsubscribe, over RUNS removals
    windows = []
    for _ in range(RUNS):
        apollo.members.add(bob)
        leaver.subscribe(channel, token=token_for(bob, channel))
        with transaction.atomic():
            apollo.members.remove(bob)
            committing = time.monotonic()  # COMMIT runs as the block exits
        assert wait_until(lambda: channel in leaver.unsubscribed)
        windows.append((leaver.unsubscribed_at[channel] - committing) * 1000)
    measured = {"runs": RUNS, "p50_ms": round(statistics.median(windows), 2),
                "max_ms": round(max(windows), 2), "min_ms": round(min(windows), 2),
                "what": "COMMIT of a members.remove() -> centrifuge-python's on_unsubscribed, "
                        "one Centrifugo on loopback"}
    print(f"\nreaders revocation window over {RUNS} runs: p50 {measured['p50_ms']} ms, "
          f"max {measured['max_ms']} ms")
    (ARTIFACTS / "readers-revocation.json").write_text(json.dumps(measured, indent=2))


# -- property: an oracle over generated memberships and histories -----------------------------------
#
# Three users, two projects (members: an auto-created many-to-many) and one team (membership
# rows). The oracle below knows nothing of the package: it replays each operation on plain sets,
# with the transaction semantics (a rolled-back block or savepoint leaves no trace), and says
# who reads each channel. After every commit point the harness (as a client would) subscribes
# every reader that is not subscribed, through subscribe/; it is judged there and at the end:
#
# 1. subscribe/ grants a channel to exactly the oracle's readers;
# 2. no subscription outlives access: after the commit point, everyone still subscribed is a
#    reader (the unsubscribes arrived);
# 3. a change is delivered only to users who were readers when it committed, never a change
#    that was rolled back; and to every user who was a reader before and after its commit.
#
# Two tiers: a simulated Centrifugo fed by the server API commands as sent (many cases), and a
# real Centrifugo with one centrifuge-python client per user (fewer).

from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from itertools import count  # noqa: E402

from hypothesis import HealthCheck, given, settings as hsettings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from instant_signals import client as http_client  # noqa: E402
from instant_signals.tokens import subscription_token  # noqa: E402

N_USERS, N_PROJECTS = 3, 2
TEAM = N_PROJECTS  # channel index of the team
CHANNELS = N_PROJECTS + 1
PROFILE = dict(deadline=None, database=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                      HealthCheck.data_too_large])
PROPERTY_COUNTS: Counter = Counter()
_nonces = count(1)

user_index = st.integers(0, N_USERS - 1)
project_index = st.integers(0, N_PROJECTS - 1)
MEMBERSHIP_CHANGES = [
    st.tuples(st.just("join"), user_index, project_index),
    st.tuples(st.just("leave"), user_index, project_index, st.booleans()),
    st.tuples(st.just("clear_project"), project_index),
    st.tuples(st.just("clear_user"), user_index),
    st.tuples(st.just("active"), user_index, st.booleans()),
    st.tuples(st.just("tjoin"), user_index),
    st.tuples(st.just("tleave"), st.integers(0, 3)),
    st.tuples(st.just("tmove"), st.integers(0, 3), user_index),
]
CHANGE = st.tuples(st.just("change"), st.integers(0, CHANNELS - 1))
# about as many changes as membership operations, so a change often shares a transaction with
# the membership operation that takes its channel away
OPERATION = st.booleans().flatmap(lambda change: CHANGE if change else
                                  st.one_of(MEMBERSHIP_CHANGES))
HISTORY = st.lists(st.tuples(st.sampled_from(["auto", "commit", "rollback", "savepoint"]),
                             st.lists(OPERATION, min_size=1, max_size=6)),
                   min_size=1, max_size=5)
INITIAL = st.tuples(st.lists(st.sets(user_index), min_size=N_PROJECTS, max_size=N_PROJECTS),
                    st.lists(user_index, max_size=3))


@dataclass
class Oracle:
    members: list[set[int]]
    rows: dict[int, int]  # membership row id -> user
    active: list[bool] = field(default_factory=lambda: [True] * N_USERS)

    def copy(self) -> Oracle:
        return Oracle([set(m) for m in self.members], dict(self.rows), list(self.active))

    def readers(self, channel: int) -> set[int]:
        who = self.members[channel] if channel < N_PROJECTS else set(self.rows.values())
        return {u for u in who if self.active[u]}


class Rollback(Exception):
    pass


class World:
    """The rows of one example, and the clients' side (simulated or live)."""

    def __init__(self, initial, live_factory=None):
        nonce = next(_nonces)
        self.users = [User.objects.create_user(f"r{nonce}u{i}") for i in range(N_USERS)]
        self.projects = [Project.objects.create(name=f"p{i}") for i in range(N_PROJECTS)]
        self.team = Team.objects.create(name="t")
        members, team_rows = initial
        rows = {}
        for project, who in zip(self.projects, members):
            project.members.add(*(self.users[u] for u in who))
        for u in team_rows:
            rows[Membership.objects.create(team=self.team, user=self.users[u]).pk] = u
        self.tasks = [ProjectTask.objects.create(project=p, title="-") for p in self.projects]
        self.note = TeamNote.objects.create(team=self.team, text="-")
        self.names = [f"$project:{p.pk}" for p in self.projects] + [f"$team:{self.team.pk}"]
        self.state = Oracle([set(m) for m in members], rows)
        self.markers = count(1)
        self.delivered: dict[int, list[str]] = {u: [] for u in range(N_USERS)}  # sim tier
        self.subscribed: set[tuple[int, int]] = set()  # sim tier: (channel, user)
        self.judged: dict[str, tuple[int, set[int], set[int]]] = {}  # marker -> (c, may, must)
        self.rolled_back: set[str] = set()
        self.live = None
        if live_factory is not None:
            self.probe = f"$probe{nonce}"
            self.probes = 0
            self.live = [live_factory(connection_token(u)) for u in self.users]
            for user, live in zip(self.users, self.live):
                live.subscribe(self.probe, token=subscription_token(user, self.probe))
        self.previous = self.state.copy()
        self.commit_point([])  # the initial readers subscribe

    # -- the simulated Centrifugo: the server API commands as sent, in order ----------------
    def batch(self, commands: list[str]) -> list[dict[str, Any]]:
        for text in commands:
            ((method, params),) = json.loads(text).items()
            channel = self.names.index(params["channel"]) if params["channel"] in self.names \
                else None
            if channel is None:
                continue
            if method == "unsubscribe":
                user = [str(u.pk) for u in self.users].index(params["user"])
                self.subscribed.discard((channel, user))
            elif method == "publish":
                marker = _marker(params["data"])
                for c, u in self.subscribed:
                    if c == channel and marker:
                        self.delivered[u].append(marker)
        return [{"result": {}} for _ in commands]

    # -- operations, on the database and on the oracle's state ----------------------------------
    def apply(self, op: tuple, state: Oracle, pending: list[str]) -> None:
        kind = op[0]
        PROPERTY_COUNTS[kind] += 1
        if kind == "join":
            self.projects[op[2]].members.add(self.users[op[1]])
            state.members[op[2]].add(op[1])
        elif kind == "leave":
            user, project = self.users[op[1]], self.projects[op[2]]
            if op[3]:
                project.members.remove(user)
            else:
                user.projects.remove(project)
            state.members[op[2]].discard(op[1])
        elif kind == "clear_project":
            self.projects[op[1]].members.clear()
            state.members[op[1]] = set()
        elif kind == "clear_user":
            self.users[op[1]].projects.clear()
            for members in state.members:
                members.discard(op[1])
        elif kind == "active":
            user = self.users[op[1]]
            user.is_active = op[2]
            user.save()
            state.active[op[1]] = op[2]
        elif kind == "tjoin":
            row = Membership.objects.create(team=self.team, user=self.users[op[1]])
            state.rows[row.pk] = op[1]
        elif kind in ("tleave", "tmove"):
            if not state.rows:
                return
            row_id = sorted(state.rows)[op[1] % len(state.rows)]
            row = Membership.objects.get(pk=row_id)
            if kind == "tleave":
                row.delete()
                del state.rows[row_id]
            else:
                row.user = self.users[op[2]]
                row.save()
                state.rows[row_id] = op[2]
        elif kind == "change":
            marker = f"m{next(self.markers)}"
            if op[1] < N_PROJECTS:
                task = self.tasks[op[1]]
                task.title = marker
                task.save()
            else:
                self.note.text = marker
                self.note.save()
            pending.append(f"{op[1]}:{marker}")

    def run(self, mode: str, ops: list[tuple]) -> None:
        if mode == "auto":
            for op in ops:
                pending: list[str] = []
                self.apply(op, self.state, pending)
                self.commit_point(pending)
            return
        work, pending = self.state.copy(), []
        try:
            with transaction.atomic():
                if mode == "savepoint":
                    half = len(ops) // 2
                    for op in ops[:half]:
                        self.apply(op, work, pending)
                    inner, inner_pending = work.copy(), []
                    try:
                        with transaction.atomic():
                            for op in ops[half:]:
                                self.apply(op, inner, inner_pending)
                            raise Rollback
                    except Rollback:
                        self.rolled_back |= {p.split(":")[1] for p in inner_pending}
                else:
                    for op in ops:
                        self.apply(op, work, pending)
                if mode == "rollback":
                    raise Rollback
        except Rollback:
            self.rolled_back |= {p.split(":")[1] for p in pending}
            self.commit_point([])
            return
        self.state = work
        self.commit_point(pending)

    # -- after each commit point ----------------------------------------------------------------
    def commit_point(self, pending: list[str]) -> None:
        PROPERTY_COUNTS["commit points"] += 1
        last: dict[int, str] = {}
        for item in pending:  # a transaction's changes of one row coalesce into its last one
            channel, marker = item.split(":")
            c = int(channel)
            may = self.state.readers(c)
            self.judged[marker] = (c, may, set())
            last[c] = marker
        for c, marker in last.items():
            self.judged[marker] = (c, self.judged[marker][1],
                                   self.previous.readers(c) & self.judged[marker][1])
        self.flush()
        users = [User.objects.get(pk=u.pk) for u in self.users]  # as a request loads them
        for c in range(CHANNELS):
            readers = self.state.readers(c)
            for u in range(N_USERS):
                # 2. no subscription outlives access
                if self.is_subscribed(c, u):
                    assert u in readers, f"user {u} still subscribed to {self.names[c]}"
                # 1. subscribe/'s rule grants exactly the readers (the endpoint itself is asked
                # for every new subscription below)
                assert can_read(users[u], self.names[c]) == (u in readers), (
                    u, self.names[c], readers)
                PROPERTY_COUNTS["grants judged"] += 1
                if u in readers and not self.is_subscribed(c, u):
                    self.subscribe(c, u, token_for(self.users[u], self.names[c]))
                    PROPERTY_COUNTS["subscribe/ answers judged"] += 1
        self.previous = self.state.copy()

    def is_subscribed(self, c: int, u: int) -> bool:
        if self.live is None:
            return (c, u) in self.subscribed
        return self.live[u].is_subscribed(self.names[c])

    def subscribe(self, c: int, u: int, token: str) -> None:
        if self.live is None:
            self.subscribed.add((c, u))
        else:
            self.live[u].subscribe(self.names[c], token=token)

    def flush(self) -> None:
        """Live: a probe published after everything the app sent; once every client has it,
        everything sent before it has arrived (one connection delivers in order)."""
        if self.live is None:
            return
        self.probes += 1
        http_client.call("publish", {"channel": self.probe, "data": {"probe": self.probes}})
        for live in self.live:
            assert wait_until(lambda: any(c == self.probe and d == {"probe": self.probes}
                                          for c, d in list(live.received)))

    def deliveries(self) -> dict[int, list[tuple[int, str]]]:
        out: dict[int, list[tuple[int, str]]] = {}
        for u in range(N_USERS):
            if self.live is None:
                out[u] = [(self.judged[m][0] if m in self.judged else -1, m)
                          for m in self.delivered[u]]
            else:
                with self.live[u].lock:
                    got = list(self.live[u].received)
                out[u] = [(self.names.index(c), _marker(d)) for c, d in got
                          if c in self.names and _marker(d)]
        return out

    # 3. deliveries
    def judge(self) -> None:
        self.flush()
        delivered = self.deliveries()
        for u, got in delivered.items():
            for c, marker in got:
                assert marker not in self.rolled_back, f"user {u} got rolled-back {marker}"
                assert marker in self.judged, marker
                channel, may, _ = self.judged[marker]
                assert channel == c
                assert u in may, f"user {u} got {marker} on {self.names[c]} but was not a reader"
            PROPERTY_COUNTS["deliveries judged"] += len(got)
        for marker, (c, _, must) in self.judged.items():
            for u in must:
                assert (c, marker) in delivered[u], f"user {u} never got {marker}"
            PROPERTY_COUNTS["changes judged"] += 1

    def clean(self) -> None:
        for u in self.users:
            u.delete()
        for p in self.projects:
            p.delete()
        self.team.delete()


def _marker(data: Any) -> str | None:
    fields = (data or {}).get("data", {}).get("fields") or {}
    value = fields.get("title") or fields.get("text")
    return value if isinstance(value, str) and value.startswith("m") else None


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@hsettings(max_examples=150, **PROFILE)
@given(initial=INITIAL, history=HISTORY)
def test_property_no_delivery_to_a_user_who_was_not_a_reader_at_commit(initial, history,
                                                                       monkeypatch):
    world = World(initial)
    monkeypatch.setattr(http_client, "batch", world.batch)
    try:
        for mode, ops in history:
            world.run(mode, ops)
        world.judge()
        PROPERTY_COUNTS["simulated examples"] += 1
    finally:
        world.clean()
        monkeypatch.undo()
    _write_counts()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@hsettings(max_examples=8, **PROFILE)
@given(initial=INITIAL, history=HISTORY)
def test_property_live_no_delivery_to_a_user_who_was_not_a_reader(initial, history,
                                                                  centrifugo, live_client):
    world = World(initial, live_factory=live_client)
    try:
        for mode, ops in history:
            world.run(mode, ops)
        world.judge()
        PROPERTY_COUNTS["live examples"] += 1
    finally:
        for live in world.live:
            live.close()
        world.clean()
    _write_counts()


def _write_counts() -> None:
    (ARTIFACTS / "readers-properties.json").write_text(json.dumps(PROPERTY_COUNTS, indent=2))
