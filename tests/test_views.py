"""The endpoints: their JSON, and a 4xx JSON answer (never a 500) for every bad input."""

import jwt
import pytest
from django.test import Client

from instant_signals.models import Channel

pytestmark = pytest.mark.django_db

POST_ONLY = ["/instant/login/", "/instant/logout/", "/instant/subscribe/"]
JSON_BODY_VIEWS = ["/instant/login/", "/instant/subscribe/"]


@pytest.fixture
def ann(django_user_model):
    return django_user_model.objects.create_user("ann", password="secret-pw")


@pytest.fixture
def channels(db):
    Channel.objects.create(name="public")
    Channel.objects.create(name="$users", level="users")
    Channel.objects.create(name="$staff", level="staff")


def assert_json_error(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] and body["detail"]
    return body


@pytest.mark.parametrize("url", POST_ONLY)
@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_wrong_method_is_405_json(client, url, method):
    body = assert_json_error(getattr(client, method)(url), 405)
    assert body["error"] == "method_not_allowed"


def test_get_token_refuses_put(client):
    assert_json_error(client.put("/instant/get_token/"), 405)


@pytest.mark.parametrize("url", JSON_BODY_VIEWS)
@pytest.mark.parametrize("body, content_type", [
    (b"", "application/json"),
    (b"not json", "application/json"),
    (b"{bad json", "application/json"),
    (b"\xff\xfe\x00", "application/json"),
    (b'["a", "list"]', "application/json"),
    (b'"a string"', "application/json"),
    (b"42", "application/json"),
    (b"null", "application/json"),
    (b"{}", "application/json"),
    (b"username=ann&password=x", "application/x-www-form-urlencoded"),
])
def test_malformed_bodies_are_400_json(client, ann, url, body, content_type):
    client.force_login(ann)
    assert_json_error(client.post(url, body, content_type=content_type), 400)


@pytest.mark.parametrize("payload", [
    {"username": "ann"}, {"password": "x"}, {"username": "", "password": "x"},
    {"username": ["ann"], "password": "x"}, {"username": "ann", "password": None},
    {"username": "a\x00nn", "password": "x"},  # PostgreSQL cannot take NUL: refused before
])
def test_login_missing_or_wrong_type_fields_400(client, ann, payload):
    assert_json_error(client.post("/instant/login/", payload, content_type="application/json"), 400)


def test_login_wrong_password_401(client, ann):
    body = assert_json_error(client.post("/instant/login/", {"username": "ann", "password": "no"},
                                         content_type="application/json"), 401)
    assert "secret-pw" not in str(body)


def test_login_returns_tokens_and_logs_in(client, ann, channels, settings):
    response = client.post("/instant/login/", {"username": "ann", "password": "secret-pw"},
                           content_type="application/json")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"csrf_token", "ws_token", "ws_url", "channels"}
    claims = jwt.decode(body["ws_token"], settings.CENTRIFUGO_HMAC_KEY, algorithms=["HS256"])
    assert claims["sub"] == str(ann.pk)
    # Channel rows, the declared public channels, and ann's own "$user:{owner_id}" channel
    assert [(c["name"], c["level"]) for c in body["channels"]] == [
        (f"$user:{ann.pk}", "owner"), ("$users", "users"), ("items", "public"),
        ("notes", "public"), ("public", "public"), ("tasks", "public")]
    for channel in body["channels"]:
        sub = jwt.decode(channel["token"], settings.CENTRIFUGO_HMAC_KEY, algorithms=["HS256"])
        assert sub == {**sub, "sub": str(ann.pk), "channel": channel["name"]}
    again = client.get("/instant/get_token/").json()
    assert [c["name"] for c in again["channels"]] == [c["name"] for c in body["channels"]]
    assert again["channels"] and again["channels"] == [
        {**c, "token": again["channels"][i]["token"]} for i, c in enumerate(body["channels"])]


def test_logout_then_anonymous(client, ann, channels):
    client.force_login(ann)
    assert client.post("/instant/logout/").json() == {"ok": True}
    body = client.get("/instant/get_token/").json()
    assert [c["name"] for c in body["channels"]] == ["items", "notes", "public", "tasks"]


def test_ws_url_from_settings(client, settings):
    settings.CENTRIFUGO_WS_URL = "wss://rt.example.test/connection/websocket"
    assert client.get("/instant/get_token/").json()["ws_url"] == settings.CENTRIFUGO_WS_URL
    del settings.CENTRIFUGO_WS_URL
    settings.CENTRIFUGO_HOST, settings.CENTRIFUGO_PORT = "https://rt.example.test", 443
    assert client.get("/instant/get_token/").json()["ws_url"] == \
        "wss://rt.example.test:443/connection/websocket"


def test_get_token_by_post(client, channels):
    assert client.post("/instant/get_token/").status_code == 200


@pytest.mark.parametrize("url", ["/instant/get_token/", "/instant/login/",
                                 "/instant/subscribe/", "/instant/logout/"])
def test_token_answers_are_never_cached(client, ann, url):
    response = client.post(url, {"username": "ann", "password": "secret-pw", "channel": "public"},
                           content_type="application/json")
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]


def test_login_view_can_be_switched_off(client, ann, settings):
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "LOGIN_VIEW": False}
    body = assert_json_error(client.post("/instant/login/",
                                         {"username": "ann", "password": "secret-pw"},
                                         content_type="application/json"), 404)
    assert body["error"] == "login_disabled"
    client.force_login(ann)  # the site's own login: tokens follow the session
    claims = jwt.decode(client.get("/instant/get_token/").json()["ws_token"],
                        settings.CENTRIFUGO_HMAC_KEY, algorithms=["HS256"])
    assert claims["sub"] == str(ann.pk)


def test_list_form_is_capped(client, settings):
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "SUBSCRIBE_MAX_CHANNELS": 3}
    names = ["public", "tasks", "notes"]
    assert len(client.post("/instant/subscribe/", {"channels": names},
                           content_type="application/json").json()["channels"]) == 2
    body = assert_json_error(client.post("/instant/subscribe/", {"channels": names + ["items"]},
                                         content_type="application/json"), 400)
    assert "at most 3" in body["detail"]


def test_missing_hmac_key_is_a_json_503(client, settings):
    del settings.CENTRIFUGO_HMAC_KEY
    body = assert_json_error(client.get("/instant/get_token/"), 503)
    assert "CENTRIFUGO_HMAC_KEY is not set" in body["detail"]


@pytest.mark.parametrize("payload, status", [
    ({"channel": "$staff"}, 403),       # exists, not readable by ann
    ({"channel": "$nope"}, 403),        # unknown: same answer, existence not revealed
    ({"channel": "public"}, 200),
    ({"channel": "$users"}, 200),
    ({"channel": ""}, 400),
    ({"channel": 42}, 400),
    ({"channel": "has space"}, 400),
    ({"channel": "x" * 300}, 400),
    ({"channels": "public"}, 400),
    ({"channels": [1, 2]}, 400),
])
def test_subscribe_single_form(client, ann, channels, payload, status):
    client.force_login(ann)
    response = client.post("/instant/subscribe/", payload, content_type="application/json")
    assert response.status_code == status
    body = response.json()
    if status == 200:
        assert set(body) == {"token"}
    else:
        assert "token" not in body and body["error"]


def test_subscribe_inactive_channel_refused(client, ann):
    Channel.objects.create(name="$old", level="users", is_active=False)
    client.force_login(ann)
    assert_json_error(client.post("/instant/subscribe/", {"channel": "$old"},
                                  content_type="application/json"), 403)


def test_subscribe_list_form_gives_only_readable_channels(client, ann, channels):
    client.force_login(ann)
    body = client.post("/instant/subscribe/", {"client": "abc", "channels": ["$users", "$staff", "$users", "bad name", "public"]},
                       content_type="application/json").json()
    assert [c["channel"] for c in body["channels"]] == ["$users", "public"]
    assert all(c["token"] for c in body["channels"])


def test_anonymous_subscribe(client, channels):
    assert client.post("/instant/subscribe/", {"channel": "public"},
                       content_type="application/json").status_code == 200
    assert_json_error(client.post("/instant/subscribe/", {"channel": "$users"},
                                  content_type="application/json"), 403)


class TestCsrf:
    """POST views are CSRF-protected; the failure is a JSON 403, the token from get_token/ works."""

    @pytest.fixture
    def browser(self):
        return Client(enforce_csrf_checks=True)

    @pytest.mark.parametrize("url", ["/instant/login/", "/instant/logout/", "/instant/subscribe/",
                                     "/instant/get_token/"])
    def test_post_without_csrf_token_is_403_json(self, browser, ann, url):
        browser.force_login(ann)
        body = assert_json_error(browser.post(url, {"channel": "public"},
                                              content_type="application/json"), 403)
        assert body["error"] == "csrf_failed"

    def test_token_from_get_token_lets_post_through(self, browser, ann, channels):
        csrf = browser.get("/instant/get_token/").json()["csrf_token"]
        response = browser.post("/instant/login/", {"username": "ann", "password": "secret-pw"},
                                content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
        assert response.status_code == 200
        csrf = response.json()["csrf_token"]  # rotated by login
        response = browser.post("/instant/subscribe/", {"channel": "$users"},
                                content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
        assert response.status_code == 200 and response.json()["token"]

    def test_get_token_by_get_needs_no_csrf(self, browser):
        assert browser.get("/instant/get_token/").status_code == 200


class TestCollection:
    """collection/: the rows of a declared channel with its stream position, or a 4xx/503."""

    @pytest.fixture
    def rows(self, django_user_model):
        from tests.testapp.models import Note, Task

        ann = django_user_model.objects.create_user("coll-ann", password="pw")
        bob = django_user_model.objects.create_user("coll-bob", password="pw")
        notes = [Note.objects.create(title=f"n{i}") for i in range(3)]
        Task.objects.create(title="ann's", owner=ann)
        Task.objects.create(title="bob's", owner=bob)
        return {"ann": ann, "bob": bob, "notes": notes}

    def get(self, client, channel):
        return client.get("/instant/collection/", {"channel": channel})

    def test_rows_and_the_position_read_before_them(self, client, rows, centrifugo):
        from instant_signals import publish

        publish("notes", "bump the stream")
        body = self.get(client, "notes").json()
        assert body["channel"] == "notes" and body["offset"] >= 1 and body["epoch"]
        assert body["truncated"] is False
        assert [r["fields"]["title"] for r in body["rows"]] == ["n0", "n1", "n2"]
        assert {r["model"] for r in body["rows"]} == {"testapp.note"}

    def test_a_private_collection_shows_its_owner_only_her_rows(self, client, rows, centrifugo):
        client.force_login(rows["ann"])
        body = self.get(client, f"$user:{rows['ann'].pk}").json()
        assert [r["fields"]["title"] for r in body["rows"]] == ["ann's"]
        assert_json_error(self.get(client, f"$user:{rows['bob'].pk}"), 403)

    def test_the_limit_is_reported(self, client, rows, centrifugo, settings):
        settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "COLLECTION_MAX_ROWS": 2}
        body = self.get(client, "notes").json()
        assert len(body["rows"]) == 2 and body["truncated"] is True

    @pytest.mark.parametrize("channel, status, code", [
        ("has space", 400, "bad_request"),
        ("", 400, "bad_request"),
        ("$staff", 403, "channel_not_allowed"),  # not declared, no row: nobody reads it
        ("public", 404, "not_a_collection"),  # a Channel row, not a @broadcast channel
    ])
    def test_bad_requests(self, client, rows, channels, centrifugo, channel, status, code):
        assert assert_json_error(self.get(client, channel), status)["error"] == code

    def test_centrifugo_down_is_a_503(self, client, rows, settings):
        settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"
        assert assert_json_error(self.get(client, "notes"), 503)["error"] == \
            "centrifugo_unavailable"
