"""Channel levels: each user gets exactly the channels they may read, and only those deliver."""

import pytest
from django.contrib.auth.models import AnonymousUser, Group
from django.test import Client

from instant_signals import publish
from instant_signals.models import Channel
from tests.testapp.models import Member

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(django_user_model):
    editors = Group.objects.create(name="editors")
    other = Group.objects.create(name="other")
    users = {
        "plain": django_user_model.objects.create_user("plain", password="pw"),
        "editor": django_user_model.objects.create_user("editor", password="pw"),
        "staff": django_user_model.objects.create_user("staff", password="pw", is_staff=True),
        "root": django_user_model.objects.create_superuser("root", password="pw"),
    }
    users["editor"].groups.add(editors, other)  # two groups: the channel must still come once
    Channel.objects.create(name="public")
    Channel.objects.create(name="$users", level="users")
    both = Channel.objects.create(name="$editors", level="groups")
    both.groups.add(editors, other)
    Channel.objects.create(name="$staff", level="staff")
    Channel.objects.create(name="$root", level="superuser")
    Channel.objects.create(name="$gone", level="users", is_active=False)
    return users


EXPECTED = {
    None: ["public"],
    "plain": ["$users", "public"],
    "editor": ["$editors", "$users", "public"],
    "staff": ["$staff", "$users", "public"],
    "root": ["$editors", "$root", "$staff", "$users", "public"],
}


@pytest.mark.parametrize("who", list(EXPECTED))
def test_for_user(world, who):
    user = world[who] if who else AnonymousUser()
    assert [c.name for c in Channel.objects.for_user(user)] == EXPECTED[who]


@pytest.mark.parametrize("who", ["editor", "staff", "root", "plain"])
def test_each_level_reaches_exactly_its_users(world, who, live_client, centrifugo):
    """Subscribe with the tokens get_token/ gives; publish into every channel; compare."""
    browser = Client()
    browser.force_login(world[who])
    answer = browser.get("/instant/get_token/").json()
    live = live_client(answer["ws_token"])
    for channel in answer["channels"]:
        live.subscribe(channel["name"], token=channel["token"])
    for name in ["public", "$users", "$editors", "$staff", "$root"]:
        publish(name, f"to {name}")
    publish("public", "end")  # publications arrive in order per channel; "end" closes the check
    got = live.wait_for(len(EXPECTED[who]) + 1)
    assert sorted(d["message"] for d in got if d["message"] != "end") == \
        sorted(f"to {n}" for n in EXPECTED[who])


def test_group_channel_refused_to_non_members(world):
    browser = Client()
    browser.force_login(world["plain"])
    response = browser.post("/instant/subscribe/", {"channel": "$editors"},
                            content_type="application/json")
    assert response.status_code == 403


def test_custom_user_model_without_staff_superuser_or_groups(world):
    member = Member.objects.create(email="m@example.test")
    assert [c.name for c in Channel.objects.for_user(member)] == ["$users", "public"]


def test_channel_validation():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        Channel(name="staff", level="staff").full_clean()
    with pytest.raises(ValidationError):
        Channel(name="has space").full_clean()
    Channel(name="$staff", level="staff").full_clean()


def test_admin_lists_channels(world, client):
    client.force_login(world["root"])
    response = client.get("/admin/instant_signals/channel/")
    assert response.status_code == 200
    assert b"$editors" in response.content
