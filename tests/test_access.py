"""Who may read what, and what enforces it.

* Authorization rules, property-based: generated channel templates with ``authorize="owner"``
  over ``testapp.Doc``, generated rows and users; an oracle written here (from what the model's
  uniqueness says) decides whether the rule must be refused at registration, and whether each
  user may read each channel name. ``$own:{owner_id}`` is granted without any row existing.
* Protected means protected by Centrifugo: with the config installws would write, anonymous
  and wrong-user clients try every kind of protected channel without a token and with foreign
  tokens; Centrifugo itself refuses each attempt.
* Access taken away: logout disconnects the user's connections, an owner change unsubscribes
  the previous owner before the new state is published; the windows are measured.
"""

from __future__ import annotations

import json
import time

import pytest
from centrifuge import OperationTimeoutError, SubscriptionUnsubscribedError
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import call_command
from django.test import Client
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from instant_signals import BroadcastRegistry, broadcast_registry, conf
from instant_signals.access import can_read
from instant_signals.checks import check_channel_rows
from instant_signals.models import Channel
from instant_signals.tokens import connection_token, subscription_token
from tests.conftest import ARTIFACTS
from tests.testapp.models import Doc, Task

PROFILE = dict(deadline=None, database=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# -- authorization rules, property-based ----------------------------------------------------------

PLACEHOLDERS = ["pk", "slug", "status", "title", "owner_id"]


def identifies_one_row(names: set[str]) -> bool:
    """The oracle's knowledge of Doc: pk and slug are unique, (status, title) together."""
    return "pk" in names or "slug" in names or {"status", "title"} <= names


@st.composite
def rows_of(draw, users):
    out = []
    for n in range(draw(st.integers(0, 4))):
        out.append({"title": f"t{draw(st.integers(0, 2))}", "status": draw(st.sampled_from("ab")),
                    "slug": draw(st.sampled_from([None, f"s{n}"])),
                    "owner": draw(st.sampled_from([None, *users]))})
    return out


@pytest.mark.django_db
@hsettings(max_examples=300, **PROFILE)
@given(data=st.data())
def test_string_rules_grant_only_who_may_read_every_routed_row(django_user_model, data):
    users = [django_user_model.objects.get_or_create(username=f"acc{n}")[0] for n in range(3)]
    placeholders = data.draw(st.lists(st.sampled_from(PLACEHOLDERS), min_size=1, max_size=3,
                                      unique=True))
    template = "$d:" + "-".join(f"{{{name}}}" for name in placeholders)
    registry = BroadcastRegistry()
    must_refuse = "owner_id" not in placeholders and not identifies_one_row(set(placeholders))
    if must_refuse:
        with pytest.raises(ImproperlyConfigured, match="does not identify one row"):
            registry.register(Doc, channels=[template], fields=["id"], authorize="owner")
        return
    registry.register(Doc, channels=[template], fields=["id"], authorize="owner")
    try:
        Doc.objects.all().delete()
        seen: dict[tuple, set] = {}
        for row in data.draw(rows_of(users)):
            if Doc.objects.filter(status=row["status"], title=row["title"]).exists():
                continue  # unique together
            doc = Doc.objects.create(**row)
            values = {"pk": str(doc.pk), "slug": doc.slug, "status": doc.status,
                      "title": doc.title, "owner_id": doc.owner_id}
            if any(values[name] is None for name in placeholders):
                continue  # routed nowhere
            key = tuple(str(values[name]) for name in placeholders)
            seen.setdefault(key, set()).add(doc.owner_id)
        names = {"$d:" + "-".join(key): owners for key, owners in seen.items()}
        # names no row is routed to (yet)
        # (typed as their fields: a name whose pk is not an integer is refused before any rule)
        names.setdefault("$d:" + "-".join(str(users[0].pk) if p == "owner_id" else
                                          "999999" if p == "pk" else "zz"
                                          for p in placeholders), set())
        for name, owners in names.items():
            values = dict(zip(placeholders, name[3:].split("-"))) if len(placeholders) > 1 \
                else {placeholders[0]: name[3:]}
            for user in [None, *users]:
                if user is None:
                    expected = False
                elif "owner_id" in placeholders:
                    expected = values["owner_id"] == str(user.pk)  # no row needed
                else:
                    expected = owners == {user.pk}  # the one row there is the user's
                verdict = registry.may_read(user, name)
                assert verdict is expected, (template, name, user, owners)
    finally:
        registry.unregister(Doc)


@pytest.mark.django_db
def test_a_per_user_channel_is_granted_before_the_user_owns_anything(django_user_model):
    """Regression: "$user:{owner_id}" with authorize="owner" refused a user who owned no row yet,
    so her first task never reached her page."""
    newcomer = django_user_model.objects.create_user("newcomer")
    assert not Task.objects.filter(owner=newcomer).exists()
    assert can_read(newcomer, f"$user:{newcomer.pk}")
    assert not can_read(newcomer, f"$user:{newcomer.pk + 1}")


def explode(user, **params):
    raise Task.DoesNotExist("no such task")


@pytest.mark.django_db
def test_a_rule_that_raises_denies_with_a_json_403_never_a_500(client, django_user_model, caplog):
    user = django_user_model.objects.create_user("r", password="pw")
    broadcast_registry.register(Doc, channels=["$boom:{pk}"], fields=["id"], authorize=explode)
    try:
        client.force_login(user)
        response = client.post("/instant/subscribe/", {"channel": "$boom:1"},
                               content_type="application/json")
    finally:
        broadcast_registry.unregister(Doc)
    assert response.status_code == 403 and response.json()["error"] == "channel_not_allowed"
    assert "the authorize rule of testapp.doc (explode) raised" in caplog.text


@pytest.mark.django_db
def test_a_non_public_channel_row_without_dollar_is_refused_on_save():
    """Regression: Channel.objects.create(name="ops", level="staff") was readable by anyone."""
    with pytest.raises(ValidationError, match='must start with "\\$"'):
        Channel.objects.create(name="ops", level="staff")
    Channel.objects.create(name="ops", level="public")
    Channel.objects.filter(name="ops").update(level="staff")  # around save(): the check says so
    errors = [m for m in check_channel_rows(databases=["default"]) if m.id.endswith("E020")]
    assert len(errors) == 1 and "'ops'" in errors[0].msg


def test_authorize_on_a_channel_without_dollar_is_refused():
    """Regression: authorize= on "inbox:{owner_id}" protected nothing in Centrifugo."""
    with pytest.raises(ImproperlyConfigured, match='name it "\\$inbox:\\{owner_id\\}"'):
        BroadcastRegistry().register(Doc, channels=["inbox:{owner_id}"], fields=["id"],
                                     authorize="owner")


# -- protected means protected by Centrifugo ------------------------------------------------------

@pytest.fixture
def world(django_user_model):
    alice = django_user_model.objects.create_user("alice")
    bob = django_user_model.objects.create_user("bob")
    staff = django_user_model.objects.create_user("staffer", is_staff=True)
    group = Group.objects.create(name="g")
    Channel.objects.create(name="$ops", level="staff")
    Channel.objects.create(name="$grp", level="groups").groups.add(group)
    task = Task.objects.create(title="alice's", owner=alice)
    return {"alice": alice, "bob": bob, "staff": staff, "task": task}


@pytest.mark.django_db(transaction=True)
def test_every_protected_channel_is_refused_by_centrifugo_itself(world, live_client):
    """The config is the one installws writes for the test app (conftest). Each attempt is made
    by a real client against the real server: Centrifugo refuses, not our endpoints."""
    alice, bob = world["alice"], world["bob"]
    protected = [f"$task:{world['task'].pk}", f"$user:{alice.pk}", "$board:main",
                 "$users_feed", "$ops", "$grp"]
    attempts = 0
    for channel in protected:
        anonymous = live_client(connection_token(None))
        with pytest.raises(SubscriptionUnsubscribedError):
            anonymous.subscribe(channel, timeout=3)  # no token
        assert anonymous.unsubscribed[channel][0] == 103
        # a token for another channel, and alice's token presented by bob: Centrifugo
        # disconnects the client ("invalid token"), the subscription never becomes ready
        for token in (subscription_token(bob, channel + "x"), subscription_token(alice, channel)):
            thief = live_client(connection_token(bob))
            with pytest.raises(OperationTimeoutError):
                thief.subscribe(channel, token=token, timeout=1.5)
            assert (3500, "invalid token") in thief.disconnects and thief.received == []
        attempts += 3
    # a namespace that holds only private channels takes no token-less subscription either
    sneaky = live_client(connection_token(bob))
    with pytest.raises(SubscriptionUnsubscribedError):
        sneaky.subscribe(f"task:{world['task'].pk}", timeout=3)
    (ARTIFACTS / "protected-channels.json").write_text(json.dumps(
        {"channels": protected, "refused_attempts": attempts + 1}))


# -- access taken away -------------------------------------------------------------------------

def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return False


@pytest.mark.django_db(transaction=True)
def test_logout_and_owner_change_end_open_subscriptions(world, live_client, settings):
    alice, bob, task = world["alice"], world["bob"], world["task"]
    measured = {}

    # Logout: the page's websocket is disconnected (code 4501, terminal: no automatic reconnect).
    browser = Client()
    browser.force_login(alice)
    answer = browser.get("/instant/get_token/").json()
    live = live_client(answer["ws_token"])
    own = next(c for c in answer["channels"] if c["name"] == f"$user:{alice.pk}")
    live.subscribe(own["name"], token=own["token"])
    started = time.monotonic()
    assert browser.post("/instant/logout/").json() == {"ok": True}
    assert wait_until(lambda: live.disconnected_at), "logout left the websocket connected"
    measured["logout_to_disconnect_ms"] = round((live.disconnected_at[0] - started) * 1000, 1)
    assert live.disconnects[0][0] == 4501

    # Owner change: alice loses "$task:<pk>" before bob's new state is published there.
    watcher = live_client(connection_token(alice))
    channel = f"$task:{task.pk}"
    watcher.subscribe(channel, token=subscription_token(alice, channel))
    task.title = "still alice's"
    task.save()
    assert [e["data"]["fields"]["title"] for e in watcher.wait_for(1)] == ["still alice's"]
    started = time.monotonic()
    task.owner, task.title = bob, "bob's secret plan"
    task.save()
    assert wait_until(lambda: channel in watcher.unsubscribed), "alice still reads the task"
    measured["owner_change_to_unsubscribe_ms"] = round(
        (watcher.unsubscribed_at[channel] - started) * 1000, 1)
    time.sleep(0.3)  # anything published to her after the change would have arrived by now
    assert "bob's secret plan" not in json.dumps(watcher.received)
    assert watcher.unsubscribed[channel][0] == 2000  # server-side unsubscribe
    measured["token_lifetimes_s"] = {
        "connection": conf.app_setting("CONNECTION_TOKEN_LIFETIME"),
        "subscription": conf.app_setting("SUBSCRIPTION_TOKEN_LIFETIME")}
    (ARTIFACTS / "revocation.json").write_text(json.dumps(measured, indent=2))


@pytest.mark.django_db(transaction=True)
def test_a_kept_token_works_until_it_expires_then_never(world, live_client, settings):
    """What cannot be revoked: a client that keeps its subscription token may subscribe again
    until the token expires (Centrifugo OSS has no revocation list). Short lifetimes bound it."""
    alice, bob, task = world["alice"], world["bob"], world["task"]
    channel = f"$task:{task.pk}"
    kept = subscription_token(alice, channel, lifetime=2)
    task.owner = bob
    task.save()
    again = live_client(connection_token(alice))
    again.subscribe(channel, token=kept)  # still valid: the documented window
    time.sleep(2.5)
    late = live_client(connection_token(alice))
    with pytest.raises(SubscriptionUnsubscribedError):
        late.subscribe(channel, token=kept, timeout=3)  # expired: refused by Centrifugo
    client = Client()
    client.force_login(alice)
    assert client.post("/instant/subscribe/", {"channel": channel},
                       content_type="application/json").status_code == 403


@pytest.mark.django_db
def test_check_database_reports_rows_shadowed_by_declarations():
    Channel.objects.create(name="tasks", level="public")
    warnings = [m for m in check_channel_rows(databases=["default"]) if m.id.endswith("W021")]
    assert [w.msg for w in warnings] == [
        "Channel row 'tasks' names a channel declared with @broadcast; the declaration decides "
        "who reads it and the row is ignored."]
    call_command("check", "--database", "default")  # a warning: nothing blocked
