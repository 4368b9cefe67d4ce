"""Hostile input, property-based: the token endpoints and ``publish()`` under generated requests.

Every endpoint gets generated methods, content types, bodies (JSON of every shape, bytes, form
data), channel names and users (anonymous; staff and superuser flags; members of random groups),
with and without CSRF enforcement. What must hold:

* never a 500, every answer a JSON 2xx/4xx;
* ``subscribe/`` never hands out a token for a channel the user may not read, judged by an oracle
  written here from the test app's ``@broadcast`` rules (which decide for the channels they
  declare) and ``Channel.objects.for_user`` (for the others), and hands one out for every
  well-formed request for a channel the user may read;
* tokens carry the right ``sub``, ``channel`` and lifetime;
* ``publish()`` refuses bad channel names, oversized and non-JSON payloads with a ValueError
  before any network call.

Counts of generated requests are written to test-artifacts/hostile.json (README table).
"""

from __future__ import annotations

import json
import re
from collections import Counter

import jwt
import pytest
from django.contrib.auth.models import Group
from django.test import Client
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from instant_signals import CentrifugoError, conf, publish
from instant_signals import client as http_client
from instant_signals.models import Channel
from tests.conftest import ARTIFACTS
from tests.testapp.models import Task

pytestmark = pytest.mark.django_db

HMAC = "hostile-tests-hmac-key-0123456789abcdef"
PASSWORD = "pw-Secret-1"
COUNTS: Counter = Counter()
PROFILE = dict(deadline=None, database=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow, HealthCheck.data_too_large])
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND"]
# multipart/form-data has its own test below: with CSRF enforced its body is parsed as a form,
# so a JSON body sent that way is a 400, which the oracles here do not model.
CONTENT_TYPES = ["application/json", "application/json; charset=latin-1", "text/plain",
                 "application/x-www-form-urlencoded",
                 "application/xml", "", "application/json; charset=utf-16"]


# -- the world: users of every kind, channels of every level -------------------------------------

@pytest.fixture
def world(django_user_model, settings):
    settings.CENTRIFUGO_HMAC_KEY = HMAC
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"  # publish() must never get this far
    # Logins save auth.User, which the test settings broadcast: not what is tested here.
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "ENABLED": False}
    http_client.close_session()
    g1, g2 = Group.objects.create(name="g1"), Group.objects.create(name="g2")
    users = [None]
    for staff in (False, True):
        for superuser in (False, True):
            for groups in ((), (g1,), (g2,), (g1, g2)):
                name = f"u{len(users)}"
                user = django_user_model.objects.create_user(
                    name, password=PASSWORD, is_staff=staff, is_superuser=superuser)
                user.groups.set(groups)
                users.append(user)
    django_user_model.objects.create_user("inactive", password=PASSWORD, is_active=False)
    for name, level, groups, active in [
        ("news", "public", (), True), ("$users", "users", (), True),
        ("$staff", "staff", (), True), ("$super", "superuser", (), True),
        ("$g1", "groups", (g1,), True), ("$g2", "groups", (g2,), True),
        ("$g12", "groups", (g1, g2), True), ("$nogroup", "groups", (), True),
        ("$off", "users", (), False), ("off-public", "public", (), False),
        ("$task:1", "staff", (), True),  # ignored: the @broadcast rule of $task:{pk} decides
        ("tasks", "public", (), False),  # ignored too: "tasks" is declared public
    ]:
        channel = Channel.objects.create(name=name, level=level, is_active=active)
        channel.groups.set(groups)
    tasks = [Task.objects.create(title=f"t{n}", owner=users[1 + n % (len(users) - 1)])
             for n in range(6)]
    Task.objects.create(title="orphan")
    names = [c.name for c in Channel.objects.all()]
    names += [f"$task:{t.pk}" for t in tasks] + ["$task:999", "$task:abc", "$task:", "$task:1:2",
                                                  "$task:+2", "$task:02", "$task:1_0",
                                                  "$task:99999999999999999999999"]
    names += [f"$user:{u.pk}" for u in users[1:]] + ["$user:0", "$user:", "$board:main",
                                                     "$board:x:y", "tasks", "$users_feed",
                                                     "$", "$$users", "news ", " news"]
    return {"users": users, "names": names,
            "task_owner": {t.pk: t.owner_id for t in Task.objects.all()},
            "channels": {c.name: c for c in Channel.objects.all()}}


def valid_name(name) -> bool:
    """The channel-name rule, written independently of publishing.validate_channel."""
    return (isinstance(name, str) and 0 < len(name) <= 255
            and all(33 <= ord(ch) <= 126 for ch in name))


DECLARED_PUBLIC = ("tasks", "notes", "items")  # the test app's public static channels


def may_read(world, user, name: str) -> bool:
    """The oracle: the test app's @broadcast rules for the channels they declare, else
    Channel rows (for_user)."""
    authed = user is not None and user.is_authenticated
    staff = authed and (user.is_staff or user.is_superuser)
    if name in DECLARED_PUBLIC:
        return True
    if name == "$users_feed":  # auth.User from settings, level="staff"
        return staff
    if name.startswith("$task:") and len(name) > 6:
        # Only the pk as events name it: "$task:+2" or "$task:02" is not task 2's channel.
        if not re.fullmatch(r"0|-?[1-9][0-9]*", name[6:]):
            return False
        return authed and world["task_owner"].get(int(name[6:]), -1) == user.pk
    if name.startswith("$user:") and len(name) > 6:
        return authed and name[6:] == str(user.pk)
    if name.startswith("$board:") and len(name) > 7:
        return authed and user.is_staff
    if name in world["channels"]:
        return Channel.objects.for_user(user).filter(name=name).exists()
    return False


def readable(world, user) -> list[str]:
    """What get_token/ must list: the declared channels that can be listed (public ones, the
    user's own $user:<pk>, $users_feed for staff) and the Channel rows not declared."""
    names = set(DECLARED_PUBLIC)
    if user is not None and user.is_authenticated:
        names.add(f"$user:{user.pk}")
        if user.is_staff or user.is_superuser:
            names.add("$users_feed")
    names |= {c.name for c in Channel.objects.for_user(user)
              if c.name not in ("$task:1", "tasks")}
    return sorted(names)


def decode(token: str) -> dict:
    return jwt.decode(token, HMAC, algorithms=["HS256"])


def sub_of(user) -> str:
    return "" if user is None else str(user.pk)


# -- strategies ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)


@st.composite
def channel_names(draw, world):
    return draw(st.one_of(
        st.sampled_from(world["names"]),
        st.sampled_from(world["names"]),
        st.text(max_size=40),
        st.from_regex(r"\$?[a-z_]{1,8}(:[!-~]{0,12})?", fullmatch=True),
        st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=250,
                max_size=260),
    ))


@st.composite
def subscribe_bodies(draw, world):
    kind = draw(st.sampled_from(["one"] * 6 + ["many"] * 2 + ["json", "bytes", "empty", "wrong"]))
    if kind == "one":
        return json.dumps({"channel": draw(channel_names(world))}).encode(), kind
    if kind == "many":
        names = draw(st.lists(channel_names(world), max_size=8))
        return json.dumps({"channels": names}).encode(), kind
    if kind == "json":
        return json.dumps(draw(json_values)).encode(), kind
    if kind == "bytes":
        return draw(st.binary(max_size=200)), kind
    if kind == "wrong":
        body = {"channel": draw(json_values), "channels": draw(json_values)}
        return json.dumps(draw(st.sampled_from([body, {"channels": body["channels"]}]))).encode(), kind
    return b"", kind


def make_client(user, csrf: bool) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    if user is not None:
        client.force_login(user)
    return client


def send(client, method, path, body=b"", content_type="application/json", csrf_token=None):
    headers = {"HTTP_X_CSRFTOKEN": csrf_token} if csrf_token else {}
    response = client.generic(method, path, body, content_type=content_type, **headers)
    COUNTS[path] += 1
    assert response.status_code != 500
    assert 200 <= response.status_code < 500, response.status_code
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    if method == "HEAD":
        return response, None
    return response, json.loads(response.content)


def csrf_token_for(client) -> str:
    _, body = send(client, "GET", "/instant/get_token/")
    return body["csrf_token"]


# -- endpoints -----------------------------------------------------------------------------------

@hsettings(max_examples=500, **PROFILE)
@given(data=st.data())
def test_subscribe_never_grants_a_channel_the_user_may_not_read(world, data):
    user = data.draw(st.sampled_from(world["users"]))
    csrf = data.draw(st.booleans())
    with_token = data.draw(st.sampled_from([True, True, True, False]))
    method = data.draw(st.sampled_from(["POST"] * 12 + METHODS))
    content_type = data.draw(st.sampled_from(CONTENT_TYPES))
    body, kind = data.draw(subscribe_bodies(world))
    client = make_client(user, csrf)
    token = csrf_token_for(client) if with_token else None
    response, answer = send(client, method, "/instant/subscribe/", body, content_type, token)
    status = response.status_code
    if answer is None:
        return
    granted = []
    if "token" in answer:
        granted = [(json.loads(body)["channel"], answer["token"])]
    for item in answer.get("channels", []) if isinstance(answer.get("channels"), list) else []:
        granted.append((item["channel"], item["token"]))
    for name, token_value in granted:
        assert may_read(world, user, name), f"{sub_of(user)!r} got a token for {name!r}"
        claims = decode(token_value)
        assert claims["sub"] == sub_of(user) and claims["channel"] == name
        assert claims["exp"] - claims["iat"] == conf.app_setting("SUBSCRIPTION_TOKEN_LIFETIME")
    well_formed = method == "POST" and (not csrf or with_token)
    if not well_formed:
        assert status in (403, 405) and granted == []
        COUNTS["subscribe refused: method or CSRF"] += 1
        return
    if kind == "one":
        name = json.loads(body)["channel"]
        expected = 200 if valid_name(name) and may_read(world, user, name) else (
            403 if valid_name(name) else 400)
        assert status == expected, (name, answer)
        COUNTS[f"subscribe one: {expected}"] += 1
    elif kind == "many":
        names = json.loads(body)["channels"]
        assert status == 200
        assert [n for n, _ in granted] == [
            n for n in dict.fromkeys(names) if valid_name(n) and may_read(world, user, n)]
        COUNTS["subscribe list"] += 1


def test_subscribe_every_user_every_known_channel(world):
    """Exhaustive over the fixed world: the list form for every user and every interesting
    name; the single form for every name as six users of different kinds."""
    users = world["users"]
    # anonymous; plain; in g2; in g1 and g2; superuser; staff in g1
    single = {users[0], users[1], users[3], users[4], users[5], users[10]}
    for user in users:
        client = make_client(user, csrf=True)
        token = csrf_token_for(client)
        _, answer = send(client, "POST", "/instant/subscribe/",
                         json.dumps({"channels": world["names"]}).encode(), csrf_token=token)
        assert [c["channel"] for c in answer["channels"]] == [
            n for n in dict.fromkeys(world["names"]) if valid_name(n) and may_read(world, user, n)]
        COUNTS["exhaustive subscribe list: names judged"] += len(world["names"])
        if user not in single:
            continue
        for name in world["names"]:
            response, answer = send(client, "POST", "/instant/subscribe/",
                                    json.dumps({"channel": name}).encode(), csrf_token=token)
            allowed = valid_name(name) and may_read(world, user, name)
            assert response.status_code == (200 if allowed else 403 if valid_name(name) else 400)
            if allowed:
                assert decode(answer["token"])["channel"] == name
            COUNTS[f"exhaustive subscribe: {response.status_code}"] += 1


@hsettings(max_examples=200, **PROFILE)
@given(data=st.data())
def test_get_token_gives_exactly_the_readable_channels(world, data):
    user = data.draw(st.sampled_from(world["users"]))
    method = data.draw(st.sampled_from(["GET", "POST"] * 3 + METHODS))
    csrf = data.draw(st.booleans())
    body = data.draw(st.binary(max_size=100) | json_values.map(lambda v: json.dumps(v).encode()))
    client = make_client(user, csrf)
    response, answer = send(client, method, "/instant/get_token/", body,
                            data.draw(st.sampled_from(CONTENT_TYPES)))
    if response.status_code != 200 or answer is None:
        assert response.status_code in (403, 405)
        return
    assert [c["name"] for c in answer["channels"]] == readable(world, user)
    assert decode(answer["ws_token"])["sub"] == sub_of(user)
    for channel in answer["channels"]:
        claims = decode(channel["token"])
        assert claims["channel"] == channel["name"] and claims["sub"] == sub_of(user)
        assert may_read(world, user, channel["name"])


@hsettings(max_examples=250, **PROFILE)
@given(data=st.data())
def test_login_and_logout_never_fail_on_input(world, data):
    users = [u for u in world["users"] if u is not None]
    target = data.draw(st.sampled_from(users))
    body = data.draw(st.one_of(
        st.just({"username": target.username, "password": PASSWORD}),
        st.fixed_dictionaries({"username": st.sampled_from([target.username, "inactive", "nobody"])
                               | st.text(max_size=30),
                               "password": st.text(max_size=30) | json_values}),
        json_values,
    ).map(lambda v: json.dumps(v).encode()) | st.binary(max_size=100))
    method = data.draw(st.sampled_from(["POST"] * 5 + METHODS))
    csrf = data.draw(st.booleans())
    client = Client(enforce_csrf_checks=csrf)
    token = csrf_token_for(client) if csrf else None
    response, answer = send(client, method, "/instant/login/", body,
                            data.draw(st.sampled_from(CONTENT_TYPES)), token)
    good = body == json.dumps({"username": target.username, "password": PASSWORD}).encode()
    if method == "POST" and good:
        assert response.status_code == 200
        assert [c["name"] for c in answer["channels"]] == readable(world, target)
        assert decode(answer["ws_token"])["sub"] == str(target.pk)
        COUNTS["login ok"] += 1
    elif answer is not None:
        assert response.status_code in (400, 401, 403, 405) and "ws_token" not in answer
    # Logout: the CSRF token rotates on login, so fetch it again.
    token = csrf_token_for(client) if csrf and data.draw(st.booleans()) else None
    response, answer = send(client, data.draw(st.sampled_from(["POST", "GET", "DELETE"])),
                            "/instant/logout/", b"", "application/json", token)
    if response.status_code == 200:
        _, after = send(client, "GET", "/instant/get_token/")
        assert decode(after["ws_token"])["sub"] == ""


# -- publish() -----------------------------------------------------------------------------------

@hsettings(max_examples=500, **PROFILE)
@given(name=st.one_of(st.text(max_size=300), st.sampled_from(["", " ", "a b", "\x00", "é", "$",
                                                              "a" * 255, "a" * 256, "$x:1"]),
                      st.integers(), st.none(), st.binary(max_size=10)),
       message=st.text(max_size=20) | st.none(), data=json_values | st.none())
def test_publish_checks_channel_and_payload_before_the_network(world, name, message, data):
    COUNTS["publish() calls"] += 1
    if message is None and data is None:
        with pytest.raises(ValueError):
            publish(name, message, data=data)
        return
    if not valid_name(name):
        with pytest.raises(ValueError, match="channel"):
            publish(name, message, data=data)
        return
    # A valid call goes to the network, which here is a closed port: proof it got that far.
    with pytest.raises(CentrifugoError):
        publish(name, message, data=data)


@pytest.fixture
def small_limit(settings):
    """Set once per test function: a settings change per generated example would stack."""
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "MAX_PAYLOAD_BYTES": 2048}
    return 2048


@hsettings(max_examples=200, **PROFILE)
@given(size=st.integers(min_value=1, max_value=5000),
       payload=st.sampled_from(["message", "data-string", "data-list", "data-nested"]))
def test_publish_refuses_oversized_payloads_before_the_network(world, small_limit, size, payload):
    limit = small_limit
    value = "x" * size
    kwargs = {"message": value} if payload == "message" else {"data": {
        "data-string": value, "data-list": [value], "data-nested": {"a": {"b": [value]}}}[payload]}
    envelope_size = len(json.dumps({"channel": "news", "site": "Test site", **kwargs},
                                   separators=(",", ":")).encode())
    COUNTS["oversized payload checks"] += 1
    if envelope_size > limit:
        with pytest.raises(ValueError, match="MAX_PAYLOAD_BYTES"):
            publish("news", **kwargs)
    else:
        with pytest.raises(CentrifugoError):
            publish("news", **kwargs)


def test_default_payload_limit_and_non_json_data(world):
    with pytest.raises(ValueError, match="MAX_PAYLOAD_BYTES"):
        publish("news", "x" * (256 * 1024))
    for bad in (object(), {1, 2}, b"bytes", {"k": object()}):
        with pytest.raises(ValueError, match="JSON"):
            publish("news", data=bad)


@pytest.fixture(scope="module", autouse=True)
def write_counts():
    """Records how many generated requests and calls this module's tests made (README table)."""
    yield
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "hostile.json").write_text(json.dumps(dict(COUNTS), indent=2, sort_keys=True))


# -- found while testing, fixed since: each keeps its regression test ---------------------------

def test_deeply_nested_json_is_a_400(world):
    client = Client(raise_request_exception=False)
    for path in ("/instant/subscribe/", "/instant/login/"):
        response = client.post(path, b"[" * 100_000, content_type="application/json")
        assert response.status_code == 400 and response["Content-Type"] == "application/json"


@pytest.mark.parametrize("body, content_type", [
    (b'{"channel": "' + b"a" * 3_000_000 + b'"}', "application/json"),
    (b"&".join(b"f%d=1" % n for n in range(1500)), "application/x-www-form-urlencoded"),
])
def test_oversized_request_bodies_get_a_json_error(world, body, content_type):
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    token = csrf_token_for(client)  # past the CSRF check, the body itself must be judged
    response = client.post("/instant/subscribe/", body, content_type=content_type,
                           HTTP_X_CSRFTOKEN=token)
    assert response.status_code in (400, 413)
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize("path", ["/instant/subscribe/", "/instant/login/"])
def test_multipart_post_with_csrf_token_is_a_json_4xx(world, path):
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    token = csrf_token_for(client)
    response = client.generic("POST", path, b'{"channel": "news"}',
                              content_type="multipart/form-data; boundary=xyz",
                              HTTP_X_CSRFTOKEN=token)
    assert 400 <= response.status_code < 500
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_are_refused_before_the_network(world, value):
    with pytest.raises(ValueError):
        publish("news", data={"v": value})


# -- collection/: every declared channel shape, typed placeholders ----------------------------------
#
# A registry of its own (the views and access checks are pointed at it for these tests), with a
# channel of every shape a declaration can have: static public and private, per-row public and
# private, integer pks, a unique slug, a foreign key id in the name, two placeholders, a UUID
# field, a date field, a callable rule. The oracle below reads the rows with its own queries and
# decides with its own parsing of the names; it never asks the package.

import datetime as _dt  # noqa: E402
import re as _re  # noqa: E402
import uuid as _uuid  # noqa: E402
from urllib.parse import quote as _quote  # noqa: E402

from instant_signals.registry import BroadcastRegistry  # noqa: E402
from tests.conftest import start_centrifugo, use_server  # noqa: E402
from tests.testapp.models import Doc, Item, staff_may_read  # noqa: E402

SHAPES = {
    "docs": dict(model=Doc, channels=["docs"], fields=["id", "title"]),
    "$staffdocs": dict(model=Doc, channels=["$staffdocs"], fields=["id", "title"], level="staff"),
    "doc:{pk}": dict(model=Doc, channels=["doc:{pk}"], fields=["id", "title"]),
    "$doc:{pk}": dict(model=Doc, channels=["$doc:{pk}"], fields=["id", "title", "body"],
                      authorize="owner"),
    "slug:{slug}": dict(model=Doc, channels=["slug:{slug}"], fields=["id", "slug"]),
    "$owner:{owner}": dict(model=Doc, channels=["$owner:{owner}"], fields=["id", "title"],
                           authorize="owner"),
    "byowner:{owner_id}": dict(model=Doc, channels=["byowner:{owner_id}"], fields=["id"]),
    "pair:{status}:{title}": dict(model=Doc, channels=["pair:{status}:{title}"],
                                  fields=["id", "status", "title"]),
    "item:{uid}": dict(model=Item, channels=["item:{uid}"], fields=["id", "uid"]),
    "day:{day}": dict(model=Item, channels=["day:{day}"], fields=["id", "day"]),
    "$board:{board}": dict(model=Item, channels=["$board:{board}"], fields=["id", "board"],
                           authorize=staff_may_read),
}
INT64 = 2 ** 63


@pytest.fixture(scope="module")
def shapes_registry():
    registry = BroadcastRegistry()
    for options in SHAPES.values():
        options = dict(options)
        registry.register(options.pop("model"), **options)
    yield registry
    registry.unregister(Doc)
    registry.unregister(Item)


@pytest.fixture(scope="module")
def shapes_centrifugo(centrifugo_binary, tmp_path_factory, shapes_registry):
    """Centrifugo with the namespaces installws would write for these declarations."""
    server = start_centrifugo(centrifugo_binary, tmp_path_factory.mktemp("shapes"),
                              namespaces=shapes_registry.namespaces())
    yield server
    server.stop()


@pytest.fixture
def shapes(world, shapes_registry, shapes_centrifugo, settings, monkeypatch):
    from instant_signals import access, views

    use_server(settings, shapes_centrifugo)
    monkeypatch.setattr(views, "broadcast_registry", shapes_registry)
    monkeypatch.setattr(access, "broadcast_registry", shapes_registry)
    users = world["users"]
    for n in range(6):
        Doc.objects.create(title=f"d{n % 3}", status="ab"[n % 2], slug=f"s-{n}" if n < 5 else None,
                           owner=users[1 + n % 4] if n % 3 else None, body=f"secret {n}")
    for n in range(4):
        Item.objects.create(board="main" if n % 2 else "side",
                            day=_dt.date(2024, 1 + n, 5) if n < 3 else None)
    Channel.objects.create(name="plainrow", level="public")
    docs = list(Doc.objects.order_by("pk"))
    items = list(Item.objects.order_by("pk"))
    return {"users": users, "docs": docs, "items": items}


_CANONICAL_INT = _re.compile(r"^(0|-?[1-9][0-9]*)$")


def _int_value(text: str) -> int | None:
    if not _CANONICAL_INT.match(text) or not -INT64 <= int(text) < INT64:
        return None
    return int(text)


def _uuid_value(text: str):
    try:
        value = _uuid.UUID(text)
    except ValueError:
        return None
    return value if str(value) == text else None


def _date_value(text: str):
    try:
        value = _dt.date.fromisoformat(text)
    except ValueError:
        return None
    return value if value.isoformat() == text else None


def collection_oracle(shapes, user, name: str) -> tuple[int, list | None]:
    """(status, sorted [(model, pk)] for a 200) for ``collection/?channel=name``, decided from
    the names' shapes and the rows, independently of the package."""
    status, rows = _collection_oracle(shapes, user, name)
    # Every declared public channel is readable: a public name refused is one no declaration
    # makes, and that is a 404 (a private one stays a 403: who may not read learns nothing).
    if status == 403 and not name.startswith("$"):
        return 404, None
    return status, rows


def _collection_oracle(shapes, user, name: str) -> tuple[int, list | None]:
    if not valid_name(name):
        return 400, None
    authed = user is not None and user.is_authenticated
    docs, items = shapes["docs"], shapes["items"]

    def rows(found, model="testapp.doc"):
        return 200, sorted((model, row.pk) for row in found)

    prefix, _, rest = name.partition(":")
    if name == "docs":
        return rows(docs)
    if name == "$staffdocs":
        return rows(docs) if authed and (user.is_staff or user.is_superuser) else (403, None)
    if name == "plainrow":  # a Channel row, not declared with @broadcast
        return 404, None
    if not rest:
        return 403, None
    if prefix == "doc":
        pk = _int_value(rest)
        return (400, None) if pk is None else rows(d for d in docs if d.pk == pk)
    if prefix == "$doc":
        pk = _int_value(rest)
        owned = [d for d in docs if d.pk == pk and authed and d.owner_id == user.pk]
        return rows(owned) if owned else (403, None)
    if prefix == "slug":
        return rows(d for d in docs if d.slug == rest)
    if prefix == "$owner":
        if not (authed and rest == str(user.pk)):
            return 403, None
        return rows(d for d in docs if d.owner_id == user.pk)
    if prefix == "byowner":
        pk = _int_value(rest)
        return (400, None) if pk is None else rows(d for d in docs if d.owner_id == pk)
    if prefix == "pair":
        parts = rest.split(":")
        if len(parts) != 2 or not all(parts):
            return 403, None  # not a name the template makes: undeclared
        return rows(d for d in docs if [d.status, d.title] == parts)
    if prefix == "item":
        uid = _uuid_value(rest)
        return (400, None) if uid is None else rows((i for i in items if i.uid == uid),
                                                    "testapp.item")
    if prefix == "day":
        day = _date_value(rest)
        return (400, None) if day is None else rows((i for i in items if i.day == day),
                                                    "testapp.item")
    if prefix == "$board":
        # staff_may_read: is_staff (a superuser without it is refused)
        return rows((i for i in items if i.board == rest), "testapp.item") if (
            authed and user.is_staff) else (403, None)
    return 403, None


def placeholder_values(shapes) -> st.SearchStrategy[str]:
    docs, items, users = shapes["docs"], shapes["items"], shapes["users"]
    known = ([str(d.pk) for d in docs] + [d.slug for d in docs if d.slug]
             + [str(u.pk) for u in users[1:]] + [str(i.uid) for i in items]
             + [str(i.day) for i in items if i.day] + ["main", "side", "a", "b", "d0", "d1"])
    tricky = ["abc", "1e3", "1.5", "+1", "01", "-1", "0", "1_0", "0x1f", " 1", "1 ", "١",
              str(INT64), str(INT64 - 1), str(-INT64), str(-INT64 - 1), "9" * 40, "NaN", "inf",
              "True", str(items[0].uid).upper(), items[0].uid.hex, "{%s}" % items[0].uid,
              "2024-02-30", "2024-1-5", "20240105", "0000-01-01", "2024-01-05T00:00",
              "a:b", "a:", ":b", "%00", "\x00", "é", "a b", "$", "null"]
    return st.one_of(
        st.sampled_from(known), st.sampled_from(known), st.sampled_from(tricky),
        st.integers(min_value=-2 ** 70, max_value=2 ** 70).map(str),
        st.uuids().map(str), st.dates().map(str),
        st.text(max_size=12),
        st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
    )


@st.composite
def collection_names(draw, shapes):
    prefixes = ["doc", "$doc", "slug", "$owner", "byowner", "pair", "item", "day", "$board",
                "docs", "$staffdocs", "nope", "$nope"]
    kind = draw(st.sampled_from(["one", "one", "one", "two", "static", "text"]))
    if kind == "static":
        return draw(st.sampled_from(["docs", "$staffdocs", "plainrow", "doc", "doc:", "$doc:",
                                     "pair:a", "pair:a:b:c", "", "docs ", "a" * 256]))
    if kind == "text":
        return draw(st.text(max_size=30))
    prefix = draw(st.sampled_from(prefixes))
    values = [draw(placeholder_values(shapes)) for _ in range(1 if kind == "one" else 2)]
    return ":".join([prefix, *values])


def get_collection(client, method: str, query: str):
    response = client.generic(method, "/instant/collection/?" + query)
    COUNTS["/instant/collection/"] += 1
    assert response.status_code != 500, response.content[:300]
    assert 200 <= response.status_code < 500, response.status_code
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    return response, (json.loads(response.content) if method != "HEAD" else None)


@pytest.mark.parametrize("value", ["abc", "1e3", "1.5", "+1", "01", "9" * 30, "1_0"])
def test_collection_of_a_public_per_row_channel_with_a_malformed_pk_is_a_json_400(
        shapes, value):
    response, answer = get_collection(Client(raise_request_exception=False), "GET",
                                      f"channel={_quote('doc:' + value)}")
    assert response.status_code == 400, answer
    assert answer["error"] == "invalid_channel"
    assert "pk" in answer["detail"] and "integer" in answer["detail"], answer


@hsettings(max_examples=600, **PROFILE)
@given(data=st.data())
def test_collection_answers_every_name_as_the_oracle_says(shapes, data):
    user = data.draw(st.sampled_from(shapes["users"]))
    name = data.draw(collection_names(shapes))
    extra = data.draw(st.lists(st.tuples(st.sampled_from(["channel", "limit", "since", "x"]),
                                         st.text(max_size=8)), max_size=3))
    method = data.draw(st.sampled_from(["GET"] * 8 + METHODS))
    client = Client(raise_request_exception=False)
    if user is not None:
        client.force_login(user)
    # The last "channel" parameter is the one read (QueryDict.get); extras come before it.
    pairs = [(k, v) for k, v in extra] + [("channel", name)]
    query = "&".join(f"{_quote(k, safe='')}={_quote(v, safe='')}" for k, v in pairs)
    response, answer = get_collection(client, method, query)
    if method != "GET":
        assert response.status_code == 405
        return
    status, expected = collection_oracle(shapes, user, name)
    assert response.status_code == status, (name, answer)
    COUNTS[f"collection: {status}"] += 1
    if status == 200:
        assert answer["channel"] == name and answer["truncated"] is False
        assert sorted((r["model"], r["pk"]) for r in answer["rows"]) == expected, name
        COUNTS["collection: 200 with rows"] += bool(expected)
    elif status == 400 and valid_name(name):
        assert answer["error"] == "invalid_channel", answer


# -- a rule that raises: denied in JSON, logged a bounded number of times ----------------------------

def project_rule(user, status):
    """Like the issue's rule: the value is looked up in a field of another type (an integer pk),
    so a name that fits the channel's field (a CharField) still makes the rule raise."""
    return Doc.objects.filter(pk=status, owner=user).exists()


def other_rule(user, status):
    raise KeyError(status)


@pytest.fixture
def raising(world, shapes_registry, shapes_centrifugo, settings, monkeypatch):
    from instant_signals import access, declarations, views

    registry = BroadcastRegistry()
    registry.register(Doc, channels=["$proj:{status}"], fields=["id"], authorize=project_rule)
    registry.register(Doc, channels=["$other:{status}"], fields=["id"], authorize=other_rule)
    use_server(settings, shapes_centrifugo)
    monkeypatch.setattr(views, "broadcast_registry", registry)
    monkeypatch.setattr(access, "broadcast_registry", registry)
    now = [1000.0]  # the limiter's clock, moved by the test: no dependence on machine speed
    monkeypatch.setattr(declarations, "_clock", lambda: now[0])
    declarations.rule_failures.forget()
    yield now
    declarations.rule_failures.forget()
    registry.unregister(Doc)


def test_a_raising_rule_is_denied_in_json_and_logged_a_bounded_number_of_times(
        world, raising, caplog):
    from instant_signals.declarations import RULE_FAILURE_LOG_INTERVAL

    client = Client(raise_request_exception=False)
    client.force_login(world["users"][1])
    caplog.set_level("WARNING", logger="instant_signals")
    for n in range(1000):
        name = f"$proj:abc{n}"
        if n % 2:
            response, answer = send(client, "POST", "/instant/subscribe/",
                                    json.dumps({"channel": name}).encode())
        else:
            response, answer = get_collection(client, "GET", f"channel={_quote(name)}")
        assert response.status_code == 403 and answer["error"] == "channel_not_allowed"
    # (django.request logs each 403 as a one-line warning of its own: Django's, not counted.)
    records = [r for r in caplog.records if r.name == "instant_signals"]
    assert len(records) == 1, [r.getMessage() for r in records]
    first = records[0].getMessage()
    assert "project_rule" in first and "ValueError" in first and "testapp.doc" in first
    assert records[0].exc_info is not None  # the first one shows where the rule failed

    # Another cause, another rule: a line of its own (each first time), not suppressed.
    send(client, "POST", "/instant/subscribe/", json.dumps({"channel": "$other:x"}).encode())
    records = [r for r in caplog.records if r.name == "instant_signals"]
    assert len(records) == 2 and "KeyError" in records[1].getMessage()

    # Past the interval: one line that counts what was left out, without a traceback.
    raising[0] += RULE_FAILURE_LOG_INTERVAL
    for n in range(5):
        send(client, "POST", "/instant/subscribe/", json.dumps({"channel": "$proj:x"}).encode())
    records = [r for r in caplog.records if r.name == "instant_signals"]
    last = records[-1]
    assert len(records) == 3 and last.exc_info is None
    assert "999 more times" in last.getMessage(), last.getMessage()
