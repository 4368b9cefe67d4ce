"""publish(): the envelope a real client receives, and bad input refused before the network."""

import asyncio

import pytest

from instant_signals import CentrifugoError, apublish, publish
from instant_signals.models import Channel
from instant_signals.tokens import connection_token, subscription_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def public_client(live_client):
    client = live_client(connection_token(None))
    client.subscribe("public")
    return client


def test_message_only(public_client):
    publish("public", "Message for everyone")
    assert public_client.wait_for(1) == [
        {"channel": "public", "site": "Test site", "message": "Message for everyone"}
    ]


def test_data_event_class_and_bucket(public_client):
    publish("public", data={"field1": "value1"})
    publish("public", "Important", event_class="important")
    publish("public", "Note", data={"n": 1}, bucket="notifications", site="Other")
    assert public_client.wait_for(3) == [
        {"channel": "public", "site": "Test site", "data": {"field1": "value1"}},
        {"channel": "public", "site": "Test site", "message": "Important", "event_class": "important"},
        {"channel": "public", "site": "Other", "message": "Note", "bucket": "notifications",
         "data": {"n": 1}},
    ]


def test_site_left_out_when_not_set(public_client, settings):
    settings.SITE_NAME = None
    publish("public", "no site")
    assert public_client.wait_for(1) == [{"channel": "public", "message": "no site"}]


def test_private_channels_reach_a_client_with_a_token(live_client, django_user_model):
    user = django_user_model.objects.create_user("ann", password="pw")
    Channel.objects.create(name="$users", level="users")
    client = live_client(connection_token(user))
    client.subscribe("$users", token=subscription_token(user, "$users"))
    publish("$users", "Message in logged in users channel", event_class="important")
    publish("$staff", "Message for staff", data={"field1": "value1"}, bucket="notifications")
    assert client.wait_for(1) == [{
        "channel": "$users", "site": "Test site",
        "message": "Message in logged in users channel", "event_class": "important"}]


def test_apublish_from_async_code(public_client):
    asyncio.run(apublish("public", "from async"))
    assert public_client.wait_for(1)[0]["message"] == "from async"


@pytest.mark.parametrize("channel", ["", " ", "a b", "tab\there", "é", "x" * 256, None, 42, "new\nline"])
def test_bad_channel_is_a_value_error_before_any_network_call(channel, settings):
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"  # would fail loudly if reached
    with pytest.raises(ValueError):
        publish(channel, "x")


def test_no_message_and_no_data_is_a_value_error():
    with pytest.raises(ValueError, match="message or data"):
        publish("public")


def test_oversized_and_unserializable_payloads_fail_before_the_network(settings):
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"
    settings.INSTANT_SIGNALS = {"MAX_PAYLOAD_BYTES": 1000}
    with pytest.raises(ValueError, match="MAX_PAYLOAD_BYTES"):
        publish("public", "x" * 2000)
    with pytest.raises(ValueError, match="JSON"):
        publish("public", data={"when": object()})


def test_wrong_api_key_says_so(centrifugo, settings):
    settings.CENTRIFUGO_API_KEY = "wrong"
    with pytest.raises(CentrifugoError) as raised:
        publish("public", "x")
    assert raised.value.code == 401
    assert "API key" in str(raised.value)


def test_unknown_namespace_carries_centrifugo_code(centrifugo):
    with pytest.raises(CentrifugoError) as raised:
        publish("$nowhere:1", "x")
    assert raised.value.code == 102
    assert "unknown channel" in str(raised.value)


def test_server_down_is_a_retryable_error_or_silent(settings):
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"
    with pytest.raises(CentrifugoError) as raised:
        publish("public", "x")
    assert raised.value.retryable
    assert publish("public", "x", fail_silently=True) is None
