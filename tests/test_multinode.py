"""Several Centrifugo nodes sharing Redis: a publish through any node reaches every node's clients.

Real processes only: one or two ``redis-server`` (two shard channels over both), two Centrifugo
nodes from ``generate_config(redis=[...])`` with the same keys, centrifuge-python clients.
The Django side needs nothing but ``CENTRIFUGO_API_URL`` pointing at any node.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from instant_signals import publish
from instant_signals.models import Channel
from instant_signals.centrifugo_config import generate_config, write_config
from instant_signals.registry import broadcast_registry
from support.processes import CentrifugoProcess, free_port
from instant_signals.tokens import connection_token, subscription_token
from tests.conftest import need, use_server, which
from support.live import LiveClient
from support.services import RedisServer
from tests.testapp.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=[1, 2], ids=["one-redis", "two-redis-shards"])
def cluster(request, centrifugo_binary, tmp_path):
    """Two Centrifugo nodes (A, B) on the Redis engine, same API and HMAC keys."""
    binary = which("redis-server")
    need(binary is not None, "redis-server")
    redises = [RedisServer(binary, Path(tempfile.mkdtemp(prefix="instant-redis-"))).start()
               for _ in range(request.param)]
    shared = generate_config(namespaces=broadcast_registry.namespaces(),
                             redis=[r.address for r in redises])
    nodes = []
    try:
        for name in ("a", "b"):
            config = generate_config(port=free_port(), namespaces=broadcast_registry.namespaces(),
                                     redis=[r.address for r in redises],
                                     api_key=shared["http_api"]["key"],
                                     hmac_key=shared["client"]["token"]["hmac_secret_key"])
            path = write_config(tmp_path / f"node-{name}.json", config)
            nodes.append(CentrifugoProcess(centrifugo_binary, path).start())
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        for redis in redises:
            redis.stop()
            shutil.rmtree(redis.workdir, ignore_errors=True)


def client_of(node: CentrifugoProcess, user=None) -> LiveClient:
    live = LiveClient(node.ws_url, token=connection_token(user))
    live.connect()
    return live


def test_publish_through_a_reaches_b_and_b_survives_a(cluster, settings, django_user_model):
    node_a, node_b = cluster
    user = django_user_model.objects.create_user("ann", password="pw")
    Channel.objects.create(name="$users", level="users")
    use_server(settings, node_a)  # tokens are signed with the shared HMAC key
    on_b = client_of(node_b, user)
    on_a = client_of(node_a)
    try:
        on_b.subscribe("public")
        on_b.subscribe("$users", token=subscription_token(user, "$users"))
        on_a.subscribe("public")

        # 1. Django talks to node A; the client on node B receives.
        for n in range(20):
            publish("public", f"via A {n}")
        publish("$users", "private via A")
        task = Task.objects.create(title="model event via A", owner=user)
        channel = f"$task:{task.pk}"
        on_b.subscribe(channel, token=subscription_token(user, channel))
        task.title = "updated via A"
        task.save()
        got = on_b.wait_for(20, channel="public")
        assert [d["message"] for d in got] == [f"via A {n}" for n in range(20)]
        assert [d["message"] for d in on_b.wait_for(1, channel="$users")] == ["private via A"]
        assert on_b.wait_for(1, channel=channel)[0]["data"]["fields"]["title"] == "updated via A"
        assert len(on_a.wait_for(20, channel="public")) == 20  # A's own clients too

        # 2. Node A goes away (SIGKILL); Django is pointed at node B; B's clients still receive.
        node_a.stop(kill=True)
        use_server(settings, node_b)
        for n in range(20):
            publish("public", f"via B {n}")
        task.title = "updated via B"
        task.save()
        got = on_b.wait_for(40, channel="public")
        assert [d["message"] for d in got[20:]] == [f"via B {n}" for n in range(20)]
        titles = [d["data"]["fields"]["title"] for d in on_b.wait_for(2, channel=channel)]
        assert titles == ["updated via A", "updated via B"]
        assert on_b.disconnects == []  # B's clients never noticed
    finally:
        on_a.close()
        on_b.close()


def test_token_from_django_is_accepted_by_every_node(cluster, settings, django_user_model):
    """One HMAC key for all nodes: a browser may land on any node with the same tokens."""
    user = django_user_model.objects.create_user("bob", password="pw")
    use_server(settings, cluster[0])
    task = Task.objects.create(title="t", owner=user)
    channel = f"$task:{task.pk}"
    token = subscription_token(user, channel)
    for node in cluster:
        live = client_of(node, user)
        try:
            live.subscribe(channel, token=token)
        finally:
            live.close()
