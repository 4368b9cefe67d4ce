"""Field selection and JSON-safe values; secrets never leave unless listed."""

import datetime
import decimal
import json
import uuid

import pytest

from instant_signals import broadcast_registry
from instant_signals.serialization import is_secret, json_safe
from instant_signals.testing import capture_broadcasts
from tests.testapp.models import Item, Plain

pytestmark = pytest.mark.django_db


def test_every_value_type_is_json_safe(django_user_model):
    owner = django_user_model.objects.create_user("ann")
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with capture_broadcasts() as published:
        item = Item.objects.create(
            uid=uid, when=datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc),
            day=datetime.date(2026, 1, 2), price=decimal.Decimal("12.50"),
            extra={"nested": [1, "two"]}, owner=owner,
            api_key="AKIA-SECRET", password="hunter2", reset_token="tok-123")
    fields = published[0]["data"]["fields"]
    assert fields == {
        "id": item.pk, "uid": "12345678-1234-5678-1234-567812345678", "board": "main",
        "when": "2026-01-02T03:04:05.678000+00:00", "day": "2026-01-02", "price": "12.50",
        "extra": {"nested": [1, "two"]}, "owner_id": owner.pk,
    }
    text = json.dumps(published)
    for secret in ("AKIA-SECRET", "hunter2", "tok-123", "api_key", "password", "reset_token"):
        assert secret not in text


def test_changed_values_are_json_safe_too():
    item = Item.objects.create(price=decimal.Decimal("1.00"), extra={"a": 1})
    item = Item.objects.get(pk=item.pk)
    with capture_broadcasts() as published:
        item.price = decimal.Decimal("2.00")
        item.extra["a"] = 2  # mutated in place: the snapshot kept its own copy
        item.save()
    changed = [p for p in published if p["channel"] == "items"][0]["data"]["changed"]
    assert changed == {"price": "1.00", "extra": {"a": 1}}


@pytest.mark.parametrize("name, secret", [
    ("password", True), ("api_key", True), ("secret", True), ("access_token", True),
    ("user_passwd", True), ("KEY", True), ("api_keys", True), ("refreshToken", True),
    ("passwords", True), ("apiKey", True),
    # the names the security review saw reach anonymous clients
    ("pin", True), ("otp_seed", True), ("ssn", True), ("pwd_hash", True), ("salt", True),
    ("credentials", True), ("passphrase", True), ("private_note", True), ("cardCVV", True),
    # words that merely contain a secret word are not secrets
    ("title", False), ("monkey", False), ("shipping", False), ("spinner", False),
    ("keyboard", False), ("pinned", False), ("author", False), ("saltwater_fish", False),
])
def test_secret_names(name, secret):
    assert is_secret(name) is secret


def test_secret_field_broadcast_when_listed_explicitly():
    broadcast_registry.register(Plain, channels=["p"], fields="__all__")
    broadcast_registry.register(Plain, channels=["q"], fields=["id", "secret"])
    try:
        with capture_broadcasts() as published:
            Plain.objects.create(name="n", secret="listed on purpose")
    finally:
        broadcast_registry.unregister(Plain)
    by_channel = {p["channel"]: p["data"]["fields"] for p in published}
    assert "secret" not in by_channel["p"]
    assert by_channel["q"]["secret"] == "listed on purpose"


def test_exclude():
    broadcast_registry.register(Plain, channels=["p"], exclude=["code"])
    try:
        with capture_broadcasts() as published:
            Plain.objects.create(name="n", code=5)
    finally:
        broadcast_registry.unregister(Plain)
    assert published[0]["data"]["fields"] == {"id": published[0]["data"]["pk"], "name": "n"}


def test_custom_serializer_callable():
    broadcast_registry.register(Plain, channels=["p"],
                                serializer=lambda obj: {"label": obj.name.upper()})
    try:
        with capture_broadcasts() as published:
            Plain.objects.create(name="n")
    finally:
        broadcast_registry.unregister(Plain)
    assert published[0]["data"]["fields"] == {"label": "N"}


def test_drf_serializer_class():
    from rest_framework import serializers

    class PlainSerializer(serializers.ModelSerializer):
        shout = serializers.SerializerMethodField()

        class Meta:
            model = Plain
            fields = ["id", "name", "shout"]

        def get_shout(self, obj):
            return obj.name + "!"

    broadcast_registry.register(Plain, channels=["p"], serializer_class=PlainSerializer)
    try:
        with capture_broadcasts() as published:
            obj = Plain.objects.create(name="n")
    finally:
        broadcast_registry.unregister(Plain)
    assert published[0]["data"]["fields"] == {"id": obj.pk, "name": "n", "shout": "n!"}


def test_json_safe_fallbacks():
    assert json_safe(datetime.timedelta(hours=1)) == "P0DT01H00M00S"
    assert json_safe(b"\x00\x01") == "AAE="
    assert json_safe(datetime.time(1, 2)) == "01:02:00"
