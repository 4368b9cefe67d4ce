"""Presence ("who is online") of a channel declared with ``presence=True``, against a real
Centrifugo: the browser module's ``instant.presence(channel)`` in Chromium tabs, and Python's
``instant_signals.presence(channel)``.

The declaration is made for the test: ``Plain`` rows into ``$lobby:main``, read by staff, with
presence (in the site's ``INSTANT_SIGNALS["MODELS"]``, and with ``broadcast_registry.register``
in this process). Centrifugo gets the config installws writes for it: presence and join/leave on
the ``lobby`` namespace, for its subscribers only.

Measured: the time from a user closing their last tab to the other readers' lists dropping them
(written to ``test-artifacts/presence.json``). A closed tab closes its websocket and Centrifugo
sends the leave at once; the documented bound is 2 s. A browser that vanishes without closing
its websocket leaves when Centrifugo misses its pong: within ping_interval + pong_timeout
(25 s + 8 s by default).
"""

from __future__ import annotations

import json
import time

import pytest
from centrifuge.exceptions import ReplyError

from instant_signals import presence
from instant_signals.registry import broadcast_registry
from instant_signals.tokens import connection_token, subscription_token
from support.browser_pages import chromium, open_page, start_site, wait_until  # noqa: F401,F811
from tests.conftest import ARTIFACTS, start_centrifugo, use_server
from support.live import LiveClient
from tests.testapp.models import Plain

pytestmark = pytest.mark.slow

CHANNEL = "$lobby:main"
DECLARATION = {"channels": [CHANNEL], "fields": ["id", "name"], "level": "staff",
               "presence": True}
NAMESPACES = {"lobby": {"public": False, "presence": True}}
LEAVE_BOUND = 2.0  # seconds: a closed tab's user is gone from the others' lists within this

START = """window.instantReady = (module) => {
  const instant = new module.Instant({ centrifuge: { minReconnectDelay: 100 } });
  const online = instant.presence("%s");
  window.t = { instant, online };
  instant.start();
}""" % CHANNEL
USERS_JS = "window.t.online.users.map((u) => [u.user, u.info && u.info.name, u.connections])"


@pytest.fixture(scope="module")
def site(centrifugo_binary, tmp_path_factory):
    site, centrifugo = start_site(centrifugo_binary, tmp_path_factory.mktemp("presence"),
                                  namespaces=NAMESPACES, models={"testapp.plain": DECLARATION})
    yield site
    site.stop()
    centrifugo.stop()


def tabs(browser, site, username: str | None, count: int, errors: list[str]) -> tuple:
    context = browser.new_context()
    if username:
        context.add_cookies([{"name": "sessionid", "value": site.session(username),
                              "url": site.url}])
    context.add_init_script(START)
    return context, [open_page(context, site.url, errors) for _ in range(count)]


def test_readers_see_each_user_once_and_a_closed_user_leaves(site, chromium):
    ids = site.users("alice", "bob", "carol", "dave", staff=("alice", "bob", "carol"))
    errors: list[str] = []
    _, alice = tabs(chromium, site, "alice", 2, errors)
    bob_context, bob = tabs(chromium, site, "bob", 2, errors)
    _, carol = tabs(chromium, site, "carol", 1, errors)
    readers = alice + bob + carol
    assert len(readers) == 5

    # 1. Three users in five tabs: every reader sees exactly the three, each once.
    expected = sorted([[ids["alice"], "alice", 2], [ids["bob"], "bob", 2],
                       [ids["carol"], "carol", 1]], key=lambda u: (len(u[0]), u[0]))
    for page in readers:
        assert wait_until(page, lambda: page.evaluate(USERS_JS) == expected, 10), \
            page.evaluate(USERS_JS)
        assert page.evaluate("window.t.online.state") == "live"

    # 2. bob closes all his tabs: the others see two users.
    others = alice + carol
    closed = time.monotonic()
    for page in bob:
        page.close()
    bob_context.close()
    two = [u for u in expected if u[0] != ids["bob"]]
    gone_after = []
    for page in others:
        assert wait_until(page, lambda: page.evaluate(USERS_JS) == two, 10), \
            page.evaluate(USERS_JS)
        gone_after.append(time.monotonic() - closed)
    leave_time = max(gone_after)
    assert leave_time < LEAVE_BOUND, gone_after
    # No page reloaded the presence to get there: join/leave events kept the lists current.
    (ARTIFACTS / "presence.json").write_text(json.dumps(
        {"closed_tabs_to_others_seeing_two_s": round(leave_time, 3)}, indent=1) + "\n")

    # 3. A non-reader: subscribe/ refuses the channel, and Centrifugo refuses its presence.
    _, (dave,) = tabs(chromium, site, "dave", 1, errors)
    dave.wait_for_function("window.t.online.state === 'denied'")
    assert dave.evaluate("window.t.online.error.status") == 403
    assert dave.evaluate("window.t.online.users") == []
    refused = dave.evaluate("""(channel) => Promise.race([
        window.t.instant.client.presence(channel).then(() => "allowed", (error) => error.code),
        new Promise((resolve) => setTimeout(() => resolve("no answer"), 5000))])""", CHANNEL)
    assert refused == 103  # permission denied: presence is for the channel's subscribers
    tokenless = dave.evaluate("""(channel) => new Promise((resolve) => {
        const client = window.t.instant.client;
        client.removeSubscription(client.getSubscription(channel));
        const sub = client.newSubscription(channel);
        sub.on("subscribed", () => resolve("subscribed"));
        sub.on("error", (ctx) => resolve(ctx.error.code));
        sub.on("unsubscribed", (ctx) => resolve(ctx.code));
        sub.subscribe();
        setTimeout(() => resolve("no answer"), 5000);
    })""", CHANNEL)
    assert tokenless == 103  # a "$" channel without a subscription token
    # ...and anonymous visitors neither.
    _, (anonymous,) = tabs(chromium, site, None, 1, errors)
    anonymous.wait_for_function("window.t.online.state === 'denied'")
    for page in others:
        assert page.evaluate(USERS_JS) == two  # refused visitors never showed up
    assert [e for e in errors if "403" not in e] == []


# -- Python: instant_signals.presence() ------------------------------------------------------------

@pytest.fixture
def lobby(centrifugo_binary, tmp_path, settings):
    broadcast_registry.register(Plain, **DECLARATION)
    try:
        server = start_centrifugo(centrifugo_binary, tmp_path)  # the registry's namespaces
        use_server(settings, server)
        yield server
        server.stop()
    finally:
        broadcast_registry.unregister(Plain)


@pytest.mark.django_db
def test_python_presence_is_deduplicated_by_user(lobby, django_user_model):
    namespace = {n["name"]: n for n in lobby.config["channel"]["namespaces"]}["lobby"]
    assert namespace["presence"] is True and namespace["allow_presence_for_subscriber"] is True
    alice = django_user_model.objects.create_user("alice", first_name="Alice", last_name="Liddell",
                                                  email="alice@example.com", is_staff=True)
    bob = django_user_model.objects.create_user("bob@example.com", is_staff=True)
    eve = django_user_model.objects.create_user("eve", is_staff=False)
    clients = []
    try:
        for user in (alice, alice, alice, bob):  # alice in three tabs
            live = LiveClient(lobby.ws_url, token=connection_token(user))
            clients.append(live)
            live.connect()
            live.subscribe(CHANNEL, token=subscription_token(user, CHANNEL))
        found = presence(CHANNEL)
        assert found == [
            {"user": str(alice.pk), "info": {"name": "Alice Liddell"}, "connections": 3},
            # an email address is never shown as a name
            {"user": str(bob.pk), "info": {"name": f"user {bob.pk}"}, "connections": 1},
        ]
        # A connected non-reader cannot ask Centrifugo who is there.
        outsider = LiveClient(lobby.ws_url, token=connection_token(eve))
        clients.append(outsider)
        outsider.connect()
        with pytest.raises(ReplyError) as refused:
            outsider.run(outsider.client.presence(CHANNEL))
        assert refused.value.code == 103  # permission denied
        # One of alice's tabs closes: still one alice, with two connections.
        clients.pop(0).close()
        deadline = time.monotonic() + 5
        while presence(CHANNEL)[0]["connections"] != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [(u["user"], u["connections"]) for u in presence(CHANNEL)] == [
            (str(alice.pk), 2), (str(bob.pk), 1)]
    finally:
        for live in clients:
            live.close()


# -- presence exactly where it is declared ---------------------------------------------------------

@pytest.mark.parametrize("channels, suggested", [
    (["lobby"], '"room:lobby"'), (["$lobby"], '"$room:lobby"'),
    (["lobby-{pk}"], '"room:lobby-{pk}"'), (["room:{pk}", "hall"], '"room:hall"'),
    (lambda instance, event: ["room:1"], None)])
def test_presence_outside_a_namespace_is_refused_at_registration(channels, suggested):
    """Centrifugo turns presence on per namespace: on a channel without one it would be on for
    every channel without one (any public name's subscribers listed to each other)."""
    from django.core.exceptions import ImproperlyConfigured

    from instant_signals.registry import BroadcastRegistry

    registry = BroadcastRegistry()
    with pytest.raises(ImproperlyConfigured) as refused:
        registry.register(Plain, channels=channels, fields=["id"], presence=True, level="staff")
    message = str(refused.value)
    if suggested is None:
        assert "presence=True needs channel names" in message, message
    else:
        assert "without a namespace" in message and suggested in message, message
    assert not registry.is_registered(Plain)


def test_generate_config_never_turns_presence_on_outside_namespaces():
    from instant_signals.centrifugo_config import generate_config

    with pytest.raises(ValueError, match="namespace"):
        generate_config(namespaces={"": {"public": True, "presence": True}})
    config = generate_config(namespaces={"": {"public": True, "presence": False},
                                         "room": {"public": True, "presence": True}})
    assert "presence" not in config["channel"]["without_namespace"]


PRESENCE_MODELS = """
from django.db import models

from instant_signals import broadcast


@broadcast(channels=["room:{pk}"], fields=["id", "name"], presence=True)
@broadcast(channels=["lobby", "board:{pk}"], fields=["id", "name"])
class Room(models.Model):
    name = models.CharField(max_length=50)
"""


@pytest.mark.django_db
def test_the_config_installws_writes_answers_presence_on_the_declared_channel_only(
        tmp_path, centrifugo_binary, settings, django_user_model):
    import textwrap

    from instant_signals import client as http_client
    from support.processes import CentrifugoProcess, free_port
    from tests.test_installws import SETTINGS, checkconfig, installws

    root = tmp_path / "site"
    for folder in ("proj", "chat"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "proj" / "settings.py").write_text(SETTINGS)
    (root / "chat" / "models.py").write_text(textwrap.dedent(PRESENCE_MODELS))
    (root / "manage.py").write_text(textwrap.dedent("""
        import os, sys
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
        from django.core.management import execute_from_command_line
        execute_from_command_line(sys.argv)
    """))
    _, config = installws(root, centrifugo_binary, "--port", str(free_port()))
    path = root / ".centrifugo" / "config.json"
    assert checkconfig(centrifugo_binary, path).returncode == 0
    namespaces = {n["name"]: n for n in config["channel"]["namespaces"]}
    assert namespaces["room"]["presence"] is True
    assert "presence" not in namespaces["board"]
    assert "presence" not in config["channel"]["without_namespace"]

    settings.CENTRIFUGO_HMAC_KEY = config["client"]["token"]["hmac_secret_key"]
    http_client.close_session()
    with CentrifugoProcess(centrifugo_binary, path) as server:
        user = django_user_model.objects.create_user("ann")
        live = LiveClient(server.ws_url, token=connection_token(user))
        try:
            live.connect()
            for channel in ("room:7", "lobby", "news", "board:7"):
                live.subscribe(channel)
            answer = live.run(live.client.presence("room:7"))
            assert len(answer.clients) == 1  # this client, the one subscriber
            for channel in ("lobby", "news", "board:7"):  # no namespace, or another one
                with pytest.raises(ReplyError) as refused:
                    live.run(live.client.presence(channel))
                assert refused.value.code == 108, channel  # not available
        finally:
            live.close()
