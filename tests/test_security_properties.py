"""A channel receives only its own view: property-based tests with an oracle written here.

Hypothesis generates ``@broadcast`` declarations of ``testapp.Doc`` (fields, exclude,
``"__all__"``, serializers, conditions, static and per-instance routing, callable routing,
events) and histories of creates, updates that move rows between channels, condition flips and
deletes, in autocommit, in transactions that commit or roll back, and in savepoints inside them.
The same ``Doc`` instance is saved again after a rollback, as user code does.

The oracle below knows nothing of the package: it replays the history on plain dicts, keeps
every state each row had in work that was not rolled back, and computes each channel's view of
each state from the generated declaration. Every publication is then judged:

1. every value in ``fields`` and ``changed`` is a value of that channel's view of a state in
   which the row was visible in that channel; a row that left a channel is announced there with
   its pk only; a secret-looking field never appears unless a declaration lists it;
2. replaying each channel's events (created inserts, updated updates, deleted removes) ends with
   exactly the rows visible in it at the end, as its view shows them: nothing lost, nothing
   extra, created only for rows new to the channel.

Three tiers: publications captured as they are sent (many cases), the same received by a real
centrifuge-python client per example from a real Centrifugo, and durable (outbox) mode drained
by the relay into a real Centrifugo. Case counts go to ``test-artifacts/security-properties.json``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from instant_signals import BroadcastRegistry, publish, reporting
from instant_signals.delivery.outbox import Relay
from instant_signals.models import OutboxEntry
from instant_signals.tokens import connection_token, subscription_token
from tests.conftest import ARTIFACTS, start_centrifugo, use_server
from support.live import LiveClient
from tests.testapp.models import Doc

pytestmark = pytest.mark.django_db(transaction=True)

COUNTS: Counter = Counter()
PROFILE = dict(deadline=None, database=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow, HealthCheck.data_too_large])

# -- the model as the oracle knows it ----------------------------------------------------------

ATTNAMES = ["id", "title", "body", "status", "score", "published", "pin", "slug", "owner_id"]
SECRET = {"pin"}  # what "__all__" and exclude=[...] must leave out of Doc
NAME_OF = {"owner_id": "owner"}  # field names the declarations use


def view_upper(state: dict) -> dict:
    return {"t": state["title"].upper(), "s": state["score"]}


def view_card(state: dict) -> dict:
    return {"id": state["id"], "who": state["owner_id"], "hot": state["score"] > 1}


SERIALIZERS = {"upper": view_upper, "card": view_card}
CONDITIONS = {
    "published": lambda s: s["published"],
    "score>0": lambda s: s["score"] > 0,
    "status=a": lambda s: s["status"] == "a",
}


def state_of(instance: Doc) -> dict:
    return {a: getattr(instance, a) for a in ATTNAMES}


@dataclass(frozen=True)
class Spec:
    """One generated declaration, as plain data."""

    view: tuple  # ("fields", names) | ("all",) | ("exclude", names) | ("serializer", kind)
    routes: tuple[str, ...]  # some of pub, priv, own, st, cb
    condition: str | None
    events: frozenset

    def view_of(self, state: dict) -> dict:
        kind = self.view[0]
        if kind == "serializer":
            return SERIALIZERS[self.view[1]](state)
        if kind == "fields":
            names = [a for a in ATTNAMES if NAME_OF.get(a, a) in self.view[1]]
        else:
            excluded = set(self.view[1]) if kind == "exclude" else set()
            names = [a for a in ATTNAMES if NAME_OF.get(a, a) not in excluded and a not in SECRET]
        return {a: state[a] for a in names}

    def channels_of(self, state: dict, nonce: str) -> list[str]:
        if self.condition and not CONDITIONS[self.condition](state):
            return []
        out = []
        for route in self.routes:
            if route == "pub":
                out.append(f"pub{nonce}")
            elif route == "priv":
                out.append(f"$priv{nonce}")
            elif route == "own" and state["owner_id"] is not None:
                out.append(f"$own:e{nonce}_{state['owner_id']}")
            elif route == "st":
                out.append(f"st:e{nonce}_{state['status']}")
            elif route == "cb":
                out.append(f"cb:e{nonce}_{'hi' if state['score'] > 1 else 'lo'}")
        return out

    def options(self, nonce: str) -> list[dict]:
        """The @broadcast options (a route list splits when a callable router is involved)."""
        base: dict[str, Any] = {"events": sorted(self.events)}
        kind = self.view[0]
        if kind == "fields":
            base["fields"] = list(self.view[1])
        elif kind == "all":
            base["fields"] = "__all__"
        elif kind == "exclude":
            base["exclude"] = list(self.view[1])
        else:
            func = SERIALIZERS[self.view[1]]
            base["serializer"] = lambda instance, func=func: func(state_of(instance))
        if self.condition:
            test = CONDITIONS[self.condition]
            base["condition"] = lambda instance, event, test=test: test(state_of(instance))
        declarations = []
        public = [{"pub": f"pub{nonce}", "st": f"st:e{nonce}_{{status}}"}[r]
                  for r in self.routes if r in ("pub", "st")]
        if public:
            declarations.append({**base, "channels": public})
        if "priv" in self.routes:
            declarations.append({**base, "channels": [f"$priv{nonce}"], "level": "users"})
        if "own" in self.routes:
            declarations.append({**base, "channels": [f"$own:e{nonce}_{{owner_id}}"],
                                 "authorize": "owner"})
        if "cb" in self.routes:
            declarations.append({**base, "channels": lambda instance, event, n=nonce: [
                f"cb:e{n}_{'hi' if instance.score > 1 else 'lo'}"]})
        return declarations


def candidate_channels(nonce: str, users: list) -> list[str]:
    return ([f"pub{nonce}", f"$priv{nonce}"] + [f"$own:e{nonce}_{u.pk}" for u in users]
            + [f"st:e{nonce}_{s}" for s in "ab"] + [f"cb:e{nonce}_{h}" for h in ("hi", "lo")])


# -- strategies ----------------------------------------------------------------------------------

FIELD_NAMES = ["id", "title", "body", "status", "score", "published", "pin", "slug", "owner"]


@st.composite
def specs(draw) -> list[Spec]:
    count = draw(st.integers(1, 3))
    routes = draw(st.permutations(["pub", "priv", "own", "st", "cb"]))
    # each route kind belongs to one declaration, so each channel has one view
    cuts = sorted(draw(st.lists(st.integers(1, 4), min_size=count - 1, max_size=count - 1,
                                unique=True)))
    groups = [tuple(routes[a:b]) for a, b in zip([0, *cuts], [*cuts, draw(st.integers(
        max([0, *cuts]) + 1, 5))])]
    out = []
    for group in groups:
        if not group:
            continue
        view = draw(st.one_of(
            st.tuples(st.just("fields"), st.lists(st.sampled_from(FIELD_NAMES), min_size=1,
                                                   max_size=5, unique=True).map(tuple)),
            st.just(("all",)),
            st.tuples(st.just("exclude"), st.lists(st.sampled_from(FIELD_NAMES[1:]), min_size=1,
                                                    max_size=3, unique=True).map(tuple)),
            st.tuples(st.just("serializer"), st.sampled_from(sorted(SERIALIZERS))),
        ))
        condition = draw(st.none() | st.sampled_from(sorted(CONDITIONS)))
        events = draw(st.sampled_from([frozenset({"created", "updated", "deleted"})] * 4 + [
            frozenset({"updated", "deleted"}), frozenset({"created"})]))
        out.append(Spec(view, group, condition, events))
    return out


VALUES = {
    "title": st.sampled_from(["x", "y"]), "body": st.sampled_from(["", "b"]),
    "status": st.sampled_from(["a", "b"]), "score": st.integers(0, 2),
    "published": st.booleans(), "pin": st.sampled_from(["PIN-1", "PIN-2"]),
    "slug": st.sampled_from([None, "s"]), "owner": st.sampled_from([None, 0, 1]),
}


@st.composite
def histories(draw) -> list:
    """Blocks of operations that are valid against a simulated database."""
    exists = [False, False, False]
    blocks = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["auto", "commit", "commit", "rollback"]))
        items: list = []
        saved = list(exists)
        for _ in range(draw(st.integers(1, 4))):
            if kind != "auto" and draw(st.integers(0, 3)) == 0:
                sp_kind = draw(st.sampled_from(["commit", "rollback"]))
                before = list(exists)
                ops = [draw(operation(exists)) for _ in range(draw(st.integers(1, 2)))]
                if sp_kind == "rollback":
                    exists[:] = before
                items.append(("savepoint", sp_kind, ops))
            else:
                items.append(draw(operation(exists)))
        if kind == "rollback":
            exists[:] = saved
        blocks.append((kind, items))
    return blocks


@st.composite
def operation(draw, exists: list) -> tuple:
    row = draw(st.integers(0, 2))
    if not exists[row]:
        exists[row] = True
        values = {k: draw(v) for k, v in VALUES.items()}
        return ("create", row, values)
    if draw(st.integers(0, 4)) == 0:
        exists[row] = False
        return ("delete", row)
    names = draw(st.lists(st.sampled_from(sorted(VALUES)), min_size=1, max_size=3, unique=True))
    return ("update", row, {k: draw(VALUES[k]) for k in names})


# -- running a history, and the oracle -----------------------------------------------------------

class RolledBack(Exception):
    pass


@dataclass
class Oracle:
    """The history replayed on dicts: the committed rows (row index -> state) and every state
    each row had in work that was not rolled back (pk -> states)."""

    db: dict = field(default_factory=dict)
    states: dict = field(default_factory=lambda: defaultdict(list))


def run_history(blocks: list, users: list, oracle: Oracle) -> None:
    """Run the history with one ``Doc`` object per row, as user code would: after a rollback the
    object keeps its rolled-back values and is saved again later (a full save writes them)."""
    instances: dict[int, Doc | None] = {}

    def values_for(row: int, values: dict) -> dict:
        out = dict(values)
        if "title" in out:
            out["title"] = f"r{row}{out['title']}"  # (status, title) stays unique across rows
        if out.get("slug"):
            out["slug"] = f"s{row}"
        if "owner" in out:
            owner = out.pop("owner")
            out["owner_id"] = None if owner is None else users[owner].pk
        return out

    def do(op: tuple, log: list) -> None:
        kind, row = op[0], op[1]
        if kind == "create":
            instance = Doc.objects.create(**values_for(row, op[2]))
            instances[row] = instance
        elif kind == "update":
            instance = instances[row]
            for name, value in values_for(row, op[2]).items():
                setattr(instance, name, value)
            instance.save()  # every field: what the object holds is what the row becomes
        else:
            instance = instances[row]
            pk = instance.pk
            instance.delete()
            instance.pk = pk  # Django clears it; if the delete rolls back the object lives on
        log.append((row, kind, None if kind == "delete" else state_of(instance), instance.pk))

    def pk_now(row: int, live: list) -> int | None:
        """The pk of the row the database holds for ``row`` now (None: no such row)."""
        for logged_row, kind, state, _ in reversed(live):
            if logged_row == row:
                return None if kind == "delete" else state["id"]
        return oracle.db[row]["id"] if row in oracle.db else None

    def rolled_back(log: list, live: list) -> None:
        for row in {entry[0] for entry in log}:
            pk = pk_now(row, live)
            if pk is None:
                instances[row] = None  # created in the rolled-back work: gone
            elif instances.get(row) is None or instances[row].pk != pk:
                # the variable points at an object of the rolled-back work: load the real row
                instances[row] = Doc.objects.get(pk=pk)

    def commit(log: list) -> None:
        for row, kind, state, pk in log:
            if kind == "delete":
                oracle.db.pop(row, None)
            else:
                oracle.db[row] = state
                oracle.states[pk].append(state)

    for kind, items in blocks:
        if kind == "auto":
            for op in items:
                log: list = []
                do(op, log)
                commit(log)
            continue
        outer: list = []
        try:
            with transaction.atomic():
                for item in items:
                    if item[0] != "savepoint":
                        do(item, outer)
                        continue
                    inner: list = []
                    try:
                        with transaction.atomic():
                            for op in item[2]:
                                do(op, inner)
                            if item[1] == "rollback":
                                raise RolledBack
                        outer.extend(inner)
                    except RolledBack:
                        rolled_back(inner, outer)
                if kind == "rollback":
                    raise RolledBack
            commit(outer)
        except RolledBack:
            rolled_back(outer, [])


# -- judging publications ----------------------------------------------------------------------

def route_of(channel: str) -> str:
    for prefix, route in (("pub", "pub"), ("$priv", "priv"), ("$own:", "own"), ("st:", "st"),
                          ("cb:", "cb")):
        if channel.startswith(prefix):
            return route
    raise AssertionError(f"unexpected channel {channel!r}")


def judge(specs_: list[Spec], nonce: str, oracle: Oracle, published: list[dict]) -> None:
    channel_spec = {route: spec for spec in specs_ for route in spec.routes}
    allowed: dict[str, set] = defaultdict(set)  # channel -> {(pk, key, json value)}
    for pk, states in oracle.states.items():
        for state in states:
            for spec in specs_:
                for channel in spec.channels_of(state, nonce):
                    for key, value in spec.view_of(state).items():
                        allowed[channel].add((pk, key, json.dumps(value)))
    replay: dict[str, dict] = defaultdict(dict)
    strict = all(len(spec.events) == 3 for spec in specs_)
    for envelope in published:
        channel, data = envelope["channel"], envelope["data"]
        pk, event = data["pk"], data["event"]
        COUNTS[f"publications: {event}"] += 1
        assert envelope["bucket"] == "testapp.doc" and channel in candidate_channels(nonce, USERS)
        text = json.dumps(envelope)
        for secret in ("PIN-1", "PIN-2"):
            if secret in text:  # only a declaration that lists "pin" may publish it
                spec = channel_spec.get(route_of(channel))
                assert spec is not None and spec.view[0] == "fields" and "pin" in spec.view[1], (
                    channel, envelope)
        for part in ("fields", "changed"):
            for key, value in (data.get(part) or {}).items():
                assert (pk, key, json.dumps(value)) in allowed[channel], (
                    f"{channel} got {part}.{key}={value!r} of row {pk}, never in its view of a "
                    f"state visible to it")
        rows = replay[channel]
        if event == "deleted":
            if strict:
                assert pk in rows, f"{channel}: deleted for a row it never had"
            rows.pop(pk, None)
        else:
            assert "fields" in data
            if strict:
                assert (pk in rows) == (event == "updated"), (
                    f"{channel}: {event} for row {pk} while it {'had' if pk in rows else 'lacked'}"
                    f" it")
            rows[pk] = data["fields"]
    if strict:
        expected: dict[str, dict] = defaultdict(dict)
        for state in oracle.db.values():
            for spec in specs_:
                for channel in spec.channels_of(state, nonce):
                    expected[channel][state["id"]] = json.loads(json.dumps(spec.view_of(state)))
        for channel in set(expected) | set(replay):
            assert replay[channel] == expected[channel], (
                f"{channel}: replayed {replay[channel]} but the database shows "
                f"{expected[channel]}")
    COUNTS["examples judged"] += 1


USERS: list = []


@pytest.fixture
def users(django_user_model):
    USERS[:] = [django_user_model.objects.get_or_create(username=f"prop{n}")[0] for n in range(2)]
    return USERS


_nonces = iter(range(10 ** 9))


class declared:
    """The generated declarations in a registry of their own, for one example."""

    def __init__(self, specs_: list[Spec], nonce: str):
        self.specs, self.nonce = specs_, nonce

    def __enter__(self) -> BroadcastRegistry:
        self.registry = BroadcastRegistry()
        try:
            for spec in self.specs:
                for options in spec.options(self.nonce):
                    self.registry.register(Doc, **options)
        except BaseException:
            self.registry.unregister(Doc)
            raise
        return self.registry

    def __exit__(self, *exc: object) -> None:
        self.registry.unregister(Doc)


@pytest.fixture(scope="module", autouse=True)
def write_counts():
    yield
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "security-properties.json").write_text(
        json.dumps(dict(COUNTS), indent=2, sort_keys=True))


# -- tier 1: publications as they are sent ------------------------------------------------------

# Settings are changed once per test function in fixtures, never per generated example: each
# change through the ``settings`` fixture stacks an override that lives until the test ends.

@pytest.fixture
def nowhere(settings):
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"  # nothing may be sent for real


@hsettings(max_examples=1500, **PROFILE)
@given(specs_=specs(), blocks=histories())
def test_each_channel_gets_only_its_view(users, nowhere, specs_, blocks):
    Doc.objects.all().delete()
    nonce = str(next(_nonces))
    published: list[dict] = []
    oracle = Oracle()
    with declared(specs_, nonce):
        token = reporting.start_capture(published)
        try:
            run_history(blocks, users, oracle)
        finally:
            reporting.stop_capture(token)
    judge(specs_, nonce, oracle, published)
    COUNTS["tier 1 (captured): examples"] += 1
    COUNTS["tier 1 (captured): operations"] += sum(
        len(item[2]) if item[0] == "savepoint" else 1 for _, items in blocks for item in items)


# -- tiers 2 and 3: received from a real Centrifugo ---------------------------------------------

NAMESPACES = {"own": {"public": False}, "st": {"public": True}, "cb": {"public": True},
              "": {"public": True}}


@pytest.fixture(scope="module")
def property_centrifugo(centrifugo_binary, tmp_path_factory):
    server = start_centrifugo(centrifugo_binary, tmp_path_factory.mktemp("props"),
                              namespaces=NAMESPACES)
    yield server
    server.stop()


def receive(server, nonce: str, users: list, work) -> list[dict]:
    """Subscribe a real client to every channel the example can use, run ``work``, then wait
    for a marker published after it into each channel (each channel's order is kept)."""
    live = LiveClient(server.ws_url, token=connection_token(None))
    channels = candidate_channels(nonce, users)
    try:
        live.connect()
        for channel in channels:
            live.subscribe(channel, token=subscription_token(None, channel))
        work()
        for channel in channels:
            publish(channel, "marker")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with live.lock:
                done = {c for c, d in live.received if d.get("message") == "marker"}
            if done == set(channels):
                break
            time.sleep(0.01)
        assert done == set(channels), f"markers missing on {set(channels) - done}"
        with live.lock:
            return [d for _, d in live.received if d.get("message") != "marker"]
    finally:
        live.close()


@pytest.fixture
def real_server(settings, property_centrifugo):
    use_server(settings, property_centrifugo)
    return property_centrifugo


@pytest.fixture
def durable_server(settings, real_server):
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "DELIVERY": "outbox"}
    return real_server


@hsettings(max_examples=300, **PROFILE)
@given(specs_=specs(), blocks=histories())
def test_real_clients_receive_only_their_view(users, real_server, specs_, blocks):
    property_centrifugo = real_server
    Doc.objects.all().delete()
    nonce = str(next(_nonces))
    oracle = Oracle()
    with declared(specs_, nonce):
        published = receive(property_centrifugo, nonce, users,
                            lambda: run_history(blocks, users, oracle))
    judge(specs_, nonce, oracle, published)
    COUNTS["tier 2 (real client): examples"] += 1
    COUNTS["tier 2 (real client): publications"] += len(published)


@hsettings(max_examples=150, **PROFILE)
@given(specs_=specs(), blocks=histories())
def test_durable_mode_sends_only_their_view(users, durable_server, specs_, blocks):
    property_centrifugo = durable_server
    Doc.objects.all().delete()
    OutboxEntry.objects.all().delete()
    nonce = str(next(_nonces))
    oracle = Oracle()

    def work() -> None:
        run_history(blocks, users, oracle)
        relay = Relay(batch_size=50)
        while relay.pending():
            assert relay.run_once().ok

    with declared(specs_, nonce):
        published = receive(property_centrifugo, nonce, users, work)
    judge(specs_, nonce, oracle, published)
    COUNTS["tier 3 (outbox, real client): examples"] += 1
    COUNTS["tier 3 (outbox, real client): publications"] += len(published)
