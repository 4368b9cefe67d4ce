"""Tokens from get_token/ and subscribe/ as the real Centrifugo judges them."""

import time

import jwt
import pytest
from centrifuge import (ClientDisconnectedError, OperationTimeoutError,
                        SubscriptionUnsubscribedError)

from instant_signals import publish
from instant_signals.models import Channel
from instant_signals.tokens import connection_token, subscription_token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ann(django_user_model):
    return django_user_model.objects.create_user("ann", password="pw")


def test_claims(settings, ann):
    settings.CENTRIFUGO_HMAC_KEY = "k" * 40
    settings.INSTANT_SIGNALS = {"CONNECTION_TOKEN_LIFETIME": 60, "SUBSCRIPTION_TOKEN_LIFETIME": 30}
    conn = jwt.decode(connection_token(ann), "k" * 40, algorithms=["HS256"])
    assert conn["sub"] == str(ann.pk)
    assert conn["exp"] - conn["iat"] == 60
    assert "channel" not in conn
    assert conn["info"] == {"name": "ann"}  # what presence shows: never the email
    sub = jwt.decode(subscription_token(ann, "$users"), "k" * 40, algorithms=["HS256"])
    assert (sub["sub"], sub["channel"]) == (str(ann.pk), "$users")
    assert sub["exp"] - int(time.time()) <= 30
    assert jwt.decode(connection_token(None), "k" * 40, algorithms=["HS256"])["sub"] == ""


def test_full_flow_get_token_then_subscribe_and_receive(client, live_client, ann):
    Channel.objects.create(name="public")
    Channel.objects.create(name="$users", level="users")
    client.force_login(ann)
    answer = client.get("/instant/get_token/").json()
    assert [c["name"] for c in answer["channels"]] == [
        f"$user:{ann.pk}", "$users", "items", "notes", "public", "tasks"]
    live = live_client(answer["ws_token"])
    for channel in answer["channels"]:
        live.subscribe(channel["name"], token=channel["token"])
    publish("$users", "for users")
    publish("public", data={"x": 1})
    got = live.wait_for(2)
    assert {"channel": "$users", "site": "Test site", "message": "for users"} in got
    assert {"channel": "public", "site": "Test site", "data": {"x": 1}} in got


def test_private_channel_refused_without_token_accepted_with_subscribe_token(client, live_client, ann):
    Channel.objects.create(name="$users", level="users")
    client.force_login(ann)
    live = live_client(connection_token(ann))
    with pytest.raises(SubscriptionUnsubscribedError):
        live.subscribe("$users")  # no token: Centrifugo refuses any $ channel
    assert live.unsubscribed["$users"][0] == 103  # permission denied
    token = client.post("/instant/subscribe/", {"channel": "$users"},
                        content_type="application/json").json()["token"]
    other = live_client(connection_token(ann))
    other.subscribe("$users", token=token)
    publish("$users", "hello")
    assert other.wait_for(1) == [{"channel": "$users", "site": "Test site", "message": "hello"}]


def test_expired_connection_token_refused(live_client, ann):
    live = live_client(connection_token(ann, lifetime=-10), connect=False)
    with pytest.raises(ClientDisconnectedError):
        live.connect(timeout=3)
    assert any("token expired" in str(e) for e in live.errors)  # Centrifugo error 109


def test_expired_subscription_token_refused(live_client, ann):
    live = live_client(connection_token(ann))
    with pytest.raises(SubscriptionUnsubscribedError):
        live.subscribe("$users", token=subscription_token(ann, "$users", lifetime=-10), timeout=3)
    assert live.unsubscribed["$users"] == (1, "unauthorized")  # expired, and no getToken to renew


def test_token_signed_with_another_key_refused(live_client, ann):
    forged = jwt.encode({"sub": str(ann.pk), "exp": int(time.time()) + 60}, "another-key" * 4,
                        algorithm="HS256")
    live = live_client(forged, connect=False)
    with pytest.raises(ClientDisconnectedError):
        live.connect(timeout=3)
    assert (3500, "invalid token") in live.disconnects
    good = live_client(connection_token(ann))
    forged_sub = jwt.encode({"sub": str(ann.pk), "channel": "$users",
                             "exp": int(time.time()) + 60}, "another-key" * 4, algorithm="HS256")
    with pytest.raises(SubscriptionUnsubscribedError):
        good.subscribe("$users", token=forged_sub, timeout=3)
    assert good.unsubscribed["$users"][0] == 103  # permission denied


def test_subscription_token_of_another_user_refused(live_client, ann, django_user_model):
    bob = django_user_model.objects.create_user("bob", password="pw")
    live = live_client(connection_token(ann))
    # Centrifugo disconnects a client that presents another user's token (invalid token): the
    # subscription never becomes ready
    with pytest.raises(OperationTimeoutError):
        live.subscribe("$users", token=subscription_token(bob, "$users"), timeout=2)
    assert (3500, "invalid token") in live.disconnects
    assert live.received == []


def test_anonymous_gets_public_channels_only(client, live_client):
    Channel.objects.create(name="public")
    Channel.objects.create(name="$users", level="users")
    Channel.objects.create(name="$staff", level="staff")
    answer = client.get("/instant/get_token/").json()
    assert [c["name"] for c in answer["channels"]] == ["items", "notes", "public", "tasks"]
    claims = jwt.decode(answer["ws_token"], options={"verify_signature": False})
    assert claims["sub"] == "" and "info" not in claims
    live = live_client(answer["ws_token"])
    for channel in answer["channels"]:
        live.subscribe(channel["name"], token=channel["token"])
    resp = client.post("/instant/subscribe/", {"channel": "$users"}, content_type="application/json")
    assert resp.status_code == 403
