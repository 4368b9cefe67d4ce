"""Durable delivery: nothing lost, nothing twice, per-object order, while Centrifugo is SIGKILLed.

Two drains of the same outbox table are exercised with real processes:

* SQLite + ``Relay`` (what ``manage.py relay_outbox`` runs);
* PostgreSQL + Centrifugo's own ``postgresql`` consumer (with the NOTIFY trigger), and two
  relays racing on PostgreSQL's ``SKIP LOCKED``. These use the "pg" database of the test
  settings: a throwaway cluster the conftest starts when a collected test asks for it.

Centrifugo runs with the Redis engine: a restarted node then still knows the channel history
(the subscribed client recovers what it missed while disconnected) and the idempotency keys
(a row re-sent after the kill is not published twice).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import transaction

from instant_signals import broadcast_failed
from instant_signals import client as http_client
from instant_signals.centrifugo_config import generate_config, write_config
from instant_signals.delivery.outbox import Relay, partition_for
from instant_signals.models import OutboxEntry
from instant_signals.reporting import stats
from instant_signals.tokens import connection_token, subscription_token
from tests.conftest import ARTIFACTS, use_server
from support.live import LiveClient
from support.processes import CentrifugoProcess, free_port
from support.services import redis_server  # noqa: F401 - fixture
from tests.testapp.models import Note, Task

PG = "pg"  # the PostgreSQL alias of tests/settings.py
TASKS = 200  # objects
ROUNDS = 10  # created, 8 updates, deleted: 2,000 events on the owner's channel
PARTITIONS = 4


class Rollback(Exception):
    pass


def put(commands, key=None, partitions=1):
    """Outbox rows written by other code than ours: publish commands as they are."""
    OutboxEntry.objects.bulk_create([
        OutboxEntry(method="publish", payload=c,
                    partition=partition_for(key or str(c.get("channel")), partitions))
        for c in commands])


def start_redis_centrifugo(binary, workdir, redis_url, **options) -> CentrifugoProcess:
    """Centrifugo on the Redis engine with room for the client to recover the whole outage.

    Centrifugo hands a reconnecting client at most ``client.recovery_max_publication_limit``
    (default 300) missed publications; past that the client is told ``recovered: false`` and
    must reload. The outage here spans ~350 events, so the limit is raised.
    """
    from instant_signals.registry import broadcast_registry

    config = generate_config(port=free_port(), namespaces=broadcast_registry.namespaces(),
                             redis=[redis_url], history_size=3000, **options)
    config["client"]["recovery_max_publication_limit"] = 5000
    path = write_config(workdir / "centrifugo.json", config)
    return CentrifugoProcess(binary, path).start()


def outbox_settings(settings, server):
    use_server(settings, server)
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "DELIVERY": "outbox",
                                "OUTBOX_PARTITIONS": PARTITIONS}


def subscribe_owner(server, owner) -> tuple[LiveClient, str]:
    channel = f"$user:{owner.pk}"
    live = LiveClient(server.ws_url, token=connection_token(owner))
    live.connect()
    live.subscribe(channel, token=subscription_token(owner, channel))
    return live, channel


def write_changes(owner, *, after_transaction, kill, restart, kill_after=900, down_for=300,
                  using="default"):
    """2,000 committed changes of 200 tasks in transactions of 50, plus rolled-back ones.

    Returns the expected (event, title) sequence of each task. ``kill`` runs once
    ``kill_after`` changes are committed, ``restart`` ``down_for`` changes later.
    """
    expected: dict[int, list[tuple[str, str]]] = defaultdict(list)
    tasks: list[Task] = []
    committed = 0
    steps = [(r, i) for r in range(ROUNDS) for i in range(TASKS)]
    killed = restarted = False
    for batch, start in enumerate(range(0, len(steps), 50)):
        with transaction.atomic(using=using):
            for r, i in steps[start:start + 50]:
                if r == 0:
                    task = Task.objects.db_manager(using).create(title=f"t{i}-v0", owner=owner)
                    tasks.append(task)
                    expected[task.pk].append(("created", task.title))
                elif r < ROUNDS - 1:
                    task = tasks[i]
                    task.title = f"t{i}-v{r}"
                    task.save()
                    expected[task.pk].append(("updated", task.title))
                else:
                    task = tasks[i]
                    pk = task.pk
                    task.delete()
                    expected[pk].append(("deleted", f"t{i}-v{r - 1}"))
            if 0 < r < ROUNDS - 1:
                # A savepoint rolled back inside a committed transaction.
                try:
                    with transaction.atomic(using=using):
                        tasks[i].title = "rolled-back-savepoint"
                        tasks[i].save()
                        raise Rollback
                except Rollback:
                    tasks[i].title = f"t{i}-v{r}"
        committed += 50
        if 4 <= batch < 36 and batch % 4 == 0:
            # A whole transaction rolled back.
            victim = tasks[batch]
            try:
                with transaction.atomic(using=using):
                    Note.objects.db_manager(using).create(title="rolled-back-note")
                    old, victim.title = victim.title, "rolled-back-transaction"
                    victim.save()
                    raise Rollback
            except Rollback:
                victim.title = old
            assert_no_rolled_back_rows(using)
        after_transaction(committed)
        if committed >= kill_after and not killed:
            kill()
            killed = True
        if committed >= kill_after + down_for and not restarted:
            restart()
            restarted = True
    assert_no_rolled_back_rows(using)
    return expected


def assert_no_rolled_back_rows(using="default"):
    leaked = [row.id for row in OutboxEntry.objects.using(using).all()
              if "rolled-back" in json.dumps(row.payload)]
    assert leaked == []


def check_received(live: LiveClient, channel: str, expected, timeout: float = 60.0) -> None:
    total = sum(len(v) for v in expected.values())
    got = live.wait_for(total, timeout=timeout, channel=channel)
    time.sleep(0.5)  # anything extra (a duplicate) would arrive now
    got = live.wait_for(total, timeout=0, channel=channel)
    ids = [envelope["id"] for envelope in got]
    if len(got) != total:
        seen = {(e["data"]["pk"], e["event_class"], e["data"]["fields"]["title"]) for e in got}
        missing = [(pk, *ev) for pk, evs in expected.items() for ev in evs
                   if (pk, *ev) not in seen]
        pytest.fail(f"received {len(got)} of {total} events; missing e.g. {missing[:10]}; "
                    f"client disconnects {live.disconnects}, errors {live.errors[:3]}")
    assert len(set(ids)) == len(ids), "an event arrived twice"
    per_object: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for envelope in got:
        assert envelope["channel"] == channel
        assert "rolled-back" not in json.dumps(envelope)  # in fields or in changed
        per_object[envelope["data"]["pk"]].append(
            (envelope["event_class"], envelope["data"]["fields"]["title"]))
    assert dict(per_object) == dict(expected)  # every object's events, each once, in order


# -- unit-sized checks (SQLite) -------------------------------------------------------------

@pytest.mark.django_db
def test_partition_is_stable_per_object_and_spread(settings, django_user_model):
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "DELIVERY": "outbox",
                                "OUTBOX_PARTITIONS": 8}
    owner = django_user_model.objects.create_user("o")
    tasks = [Task.objects.create(title=f"t{n}", owner=owner) for n in range(100)]
    for task in tasks[:10]:
        task.title += "!"
        task.save()
    by_object = defaultdict(set)
    for row in OutboxEntry.objects.all():
        by_object[row.payload["data"]["bucket"], row.payload["data"]["data"]["pk"]].add(row.partition)
    assert all(len(parts) == 1 for parts in by_object.values())  # 3 channels, 2 events: 1 place
    assert len({p for parts in by_object.values() for p in parts}) == 8  # spread over all
    assert partition_for("testapp.task:1", 1) == 0


@pytest.mark.django_db(transaction=True)
def test_rows_are_written_in_the_transaction(settings):
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "DELIVERY": "outbox",
                                "OUTBOX_PARTITIONS": PARTITIONS}
    with transaction.atomic():
        note = Note.objects.create(title="kept")
    try:
        with transaction.atomic():
            Note.objects.create(title="gone")
            note.title = "gone too"
            note.save()
            raise Rollback
    except Rollback:
        pass
    rows = list(OutboxEntry.objects.all())
    assert [row.payload["data"]["data"]["fields"]["title"] for row in rows] == ["kept"]
    row = rows[0]
    assert row.method == "publish"
    assert set(row.payload) == {"channel", "data", "idempotency_key"}
    assert row.payload["idempotency_key"] == row.payload["data"]["id"]
    assert row.partition == partition_for(f"testapp.note:{note.pk}", PARTITIONS)


@pytest.mark.django_db(transaction=True)
def test_poison_rows_are_dead_letters_and_reported_the_rest_delivered(centrifugo, live_client):
    """Rows Centrifugo can never accept must not block their partition."""
    live = live_client(connection_token(None))
    live.subscribe("news")
    reported = []

    def receiver(sender, publications, error, **kwargs):
        reported.append((publications, error.code))

    broadcast_failed.connect(receiver, weak=False)
    try:
        put([{"channel": "news", "data": {"n": 1}, "idempotency_key": "a1"},
             {"channel": "nowhere:1", "data": {"n": 2}, "idempotency_key": "a2"},  # 102
             {"channel": "news", "data": {"n": 3}, "idempotency_key": "a3"}])
        OutboxEntry.objects.create(method="nosuch", payload={"channel": "news"})  # 104
        # A row written by other code: Centrifugo cannot decode the whole /batch (HTTP 400).
        OutboxEntry.objects.create(method="publish", payload={"channel": 5, "data": {"n": 4}})
        put([{"channel": "news", "data": {"n": 5}, "idempotency_key": "a5"}])
        result = Relay(batch_size=10).run_once()
    finally:
        broadcast_failed.disconnect(receiver)
    assert (result.sent, result.dead, result.ok) == (3, 3, True)
    assert sorted(code for _, code in reported) == [102, 104, 400]
    assert (OutboxEntry.objects.pending().count(), OutboxEntry.objects.dead().count()) == (0, 3)
    assert [d["n"] for d in live.wait_for(3)] == [1, 3, 5]


@pytest.mark.django_db(transaction=True)
def test_relay_command_once_reports_an_outage_and_keeps_rows(settings):
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"  # nothing listens on port 9
    http_client.close_session()
    put([{"channel": "news", "data": {"n": 1}, "idempotency_key": "b1"}])
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not delivered"):
        call_command("relay_outbox", "--once")
    assert OutboxEntry.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_wrong_api_key_keeps_every_row(centrifugo, settings):
    """A refusal of the whole request is not the rows' fault: nothing is dropped."""
    settings.CENTRIFUGO_API_KEY = "wrong"
    put([{"channel": "news", "data": {"n": n}, "idempotency_key": f"k{n}"} for n in range(3)])
    relay = Relay(batch_size=2, backoff=10)
    result = relay.run_once()
    assert (result.sent, result.dead, list(result.failed_partitions)) == (0, 0, [0])
    assert relay.run_once().waiting_partitions == [0]  # backing off, not hammering
    assert OutboxEntry.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_relay_command_loop_delivers_and_stops(centrifugo, live_client):
    live = live_client(connection_token(None))
    live.subscribe("news")
    put([{"channel": "news", "data": {"n": n}, "idempotency_key": f"c{n}"} for n in range(5)])
    call_command("relay_outbox", "--interval", "0.05", "--batch-size", "2", "--max-passes", "5")
    assert [d["n"] for d in live.wait_for(5)] == [0, 1, 2, 3, 4]
    assert OutboxEntry.objects.count() == 0


# -- the SIGKILL scenario, SQLite + relay ------------------------------------------------------

@pytest.fixture
def redis_centrifugo(centrifugo_binary, redis_server, tmp_path):
    server = start_redis_centrifugo(centrifugo_binary, tmp_path, redis_server.address)
    yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sqlite_relay_survives_centrifugo_sigkill(redis_centrifugo, settings):
    server = redis_centrifugo
    outbox_settings(settings, server)
    owner = get_user_model().objects.create_user("owner")
    live, channel = subscribe_owner(server, owner)
    relay = Relay(batch_size=50, backoff=0.05, max_backoff=0.5)
    kill_after, failed_passes, backlog = 900, [], []

    def drain(committed):
        if kill_after - 300 <= committed <= kill_after:
            return  # let a backlog of 300 changes (900 rows) build up before the kill
        if not relay.run_once().ok:
            failed_passes.append(committed)

    def kill():
        # SIGKILL Centrifugo while the relay is sending that backlog, 50 rows per request:
        # once 200 rows went through, the rest of the batches are cut off.
        backlog.append(OutboxEntry.objects.count())
        start = stats["published"]

        def killer():
            deadline = time.monotonic() + 30
            while stats["published"] < start + 200 and time.monotonic() < deadline:
                time.sleep(0.001)
            server.stop(kill=True)

        thread = threading.Thread(target=killer)
        thread.start()
        while thread.is_alive():
            relay.run_once()
        backlog.append(OutboxEntry.objects.count())

    try:
        expected = write_changes(owner, after_transaction=drain, kill=kill,
                                 restart=server.start, kill_after=kill_after)
        deadline = time.monotonic() + 60
        while relay.pending() and time.monotonic() < deadline:
            relay.run_once()
            time.sleep(0.05)
        assert relay.pending() == 0
        assert failed_passes, "the relay never saw Centrifugo down"
        check_received(live, channel, expected)
        (ARTIFACTS / "outbox-sqlite.json").write_text(json.dumps({
            "events": 2000, "rows_before_and_after_kill": backlog,
            "failed_relay_passes": len(failed_passes), "stats": stats.snapshot()}))
    finally:
        live.close()


# -- PostgreSQL: the "pg" database (a throwaway cluster) ---------------------------------------

on_postgresql = pytest.mark.django_db(transaction=True, databases=["default", PG])


@pytest.fixture
def pg_centrifugo(centrifugo_binary, tmp_path, redis_server):
    """Centrifugo (Redis engine) whose PostgreSQL consumer drains the "pg" database's outbox."""
    from django.db import connections

    db = connections[PG].settings_dict
    dsn = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}?sslmode=disable"
    server = start_redis_centrifugo(centrifugo_binary, tmp_path, redis_server.address,
                                    outbox_dsn=dsn, outbox_partitions=PARTITIONS)
    yield server
    server.stop()


@pytest.mark.slow
@on_postgresql
def test_pg_trigger_notifies_partition():
    import psycopg
    from django.db import connections

    assert connections[PG].vendor == "postgresql"
    db = connections[PG].settings_dict
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"],
                         autocommit=True) as listener:
        listener.execute("LISTEN instant_signals_outbox")
        OutboxEntry.objects.using(PG).create(method="publish", payload={"channel": "news"},
                                             partition=3)
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert payloads == ["3"]


@pytest.mark.slow
@on_postgresql
def test_pg_consumer_survives_centrifugo_sigkill(pg_centrifugo, settings):
    server = pg_centrifugo
    outbox_settings(settings, server)
    owner = get_user_model().objects.db_manager(PG).create_user("owner")
    live, channel = subscribe_owner(server, owner)
    backlog = []
    rows = OutboxEntry.objects.using(PG)

    def kill():
        backlog.append(rows.count())
        server.stop(kill=True)

    def restart():
        backlog.append(rows.count())  # written while Centrifugo was down
        server.start()

    try:
        expected = write_changes(owner, after_transaction=lambda n: None, kill=kill,
                                 restart=restart, using=PG)
        assert backlog[1] >= 900, backlog  # 300 changes x 3 channels waited in the table
        deadline = time.monotonic() + 60
        while rows.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not rows.exists(), "Centrifugo's consumer left rows behind"
        check_received(live, channel, expected)
        (ARTIFACTS / "outbox-postgresql.json").write_text(json.dumps({
            "events": 2000, "rows_at_kill_and_restart": backlog}))
    finally:
        live.close()


@pytest.mark.slow
@on_postgresql
def test_pg_two_relays_never_send_a_row_twice(centrifugo_binary, tmp_path, settings):
    """Two relays race over the same partitions: SKIP LOCKED gives each row to exactly one.

    What Centrifugo published is read back from the channel's history (server API), so the
    check does not depend on a websocket client keeping up.
    """
    config = generate_config(port=free_port(), namespaces={"race": {"public": True}},
                             history_size=5000)
    server = CentrifugoProcess(centrifugo_binary,
                               write_config(tmp_path / "centrifugo.json", config)).start()
    use_server(settings, server)
    rows = 2000
    OutboxEntry.objects.using(PG).bulk_create([
        OutboxEntry(method="publish", payload={
            "channel": "race:1", "idempotency_key": f"r{n}",
            "data": {"bucket": "x.obj", "data": {"pk": n % 37}, "n": n}},  # 37 "objects"
            partition=partition_for(f"x.obj:{n % 37}", PARTITIONS))
        for n in range(rows)])
    totals, errors = [], []

    def run():
        from django.db import connections

        try:
            relay = Relay(PG, batch_size=20)
            sent = 0
            for _ in range(2000):
                sent += relay.run_once().sent
                if not OutboxEntry.objects.using(PG).exists():
                    break
            totals.append(sent)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == [] and len(totals) == 2
        assert sum(totals) == rows, totals  # each row sent by exactly one relay
        history = http_client.call("history", {"channel": "race:1", "limit": rows + 10})
        published = [pub["data"] for pub in history["publications"]]
        assert sorted(p["n"] for p in published) == list(range(rows))  # each once
        per_object = defaultdict(list)
        for data in published:
            per_object[data["data"]["pk"]].append(data["n"])
        assert all(seq == sorted(seq) for seq in per_object.values())  # in order per object
    finally:
        server.stop()


@pytest.mark.django_db(transaction=True)
def test_durable_mode_never_commits_a_change_without_its_event(settings):
    """In outbox mode a failure to record the event rolls the change back (it is not swallowed)."""
    from instant_signals import broadcast_registry
    from tests.testapp.models import Plain

    def broken(instance, event):
        raise RuntimeError("user code failed")

    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "DELIVERY": "outbox"}
    broadcast_registry.register(Plain, channels=["plain"], fields=["name"], condition=broken)
    try:
        with pytest.raises(RuntimeError, match="user code failed"):
            with transaction.atomic():
                Plain.objects.create(name="must not stay")
    finally:
        broadcast_registry.unregister(Plain)
    assert not Plain.objects.filter(name="must not stay").exists()
    assert not OutboxEntry.objects.exists()
