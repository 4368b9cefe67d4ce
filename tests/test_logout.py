"""Any logout ends the user's Centrifugo connections, for good for standard clients.

A site that logs its users in through its own pages (``LOGIN_VIEW = False``) logs them out
through its own pages too: Django's ``LogoutView``, the admin's logout, ``auth.logout()`` in any
view. Each one, like the package's ``logout/``, must end the open websockets of the user, with a
code standard SDKs do not reconnect after (a real centrifuge-python client, a real Centrifugo).

What cannot be taken back is measured: a client that kept its tokens can connect and subscribe
again with them until they expire, and Centrifugo lets an expired connection or subscription run
``client.expired_close_delay`` longer (25 s by default) before closing it
(``test-artifacts/kept-tokens.json``).
"""

from __future__ import annotations

import json
import time

import pytest
from centrifuge import ClientState
from django.contrib import admin
import django
from django.contrib.auth import logout
from django.contrib.sessions.models import Session
from django.contrib.auth.views import LogoutView
from django.http import HttpResponse
from django.test import Client
from django.urls import include, path

from instant_signals import access
from instant_signals.tokens import connection_token
from tests.conftest import ARTIFACTS
from tests.testapp.models import Task


def site_logout(request):
    """A view of the site's own that logs out (no package code involved)."""
    logout(request)
    return HttpResponse("bye")


async def async_site_logout(request):
    from django.contrib.auth import alogout  # Django 5.0+

    await alogout(request)
    return HttpResponse("bye")


urlpatterns = [
    path("accounts/logout/", LogoutView.as_view(next_page="/"), name="logout"),
    path("bye/", site_logout),
    path("abye/", async_site_logout),
    path("admin/", admin.site.urls),
    path("instant/", include("instant_signals.urls")),
]

pytestmark = pytest.mark.urls(__name__)

LOGOUTS = {
    "django LogoutView": "/accounts/logout/",
    "admin logout": "/admin/logout/",
    "auth.logout() in a view": "/bye/",
    "the package's logout/": "/instant/logout/",
}
if django.VERSION >= (5, 0):  # auth.alogout() is new in Django 5.0
    LOGOUTS["auth.alogout() in an async view"] = "/abye/"


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


@pytest.fixture
def site_session(settings):
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "LOGIN_VIEW": False}


@pytest.fixture
def disconnects(monkeypatch):
    """The server API ``disconnect`` commands sent, passed through to Centrifugo, each with the
    number of sessions left in the database when it was sent."""
    sent: list[dict] = []
    call = access.client.call

    def counting(method, params, *args, **kwargs):
        if method == "disconnect":
            sent.append({**params, "sessions_left": Session.objects.count()})
        return call(method, params, *args, **kwargs)

    monkeypatch.setattr(access.client, "call", counting)
    return sent


def open_tab(browser: Client, live_client, user):
    """What a page of ``user`` holds: the tokens get_token/ gave, a live connection with them
    subscribed to her own channel."""
    answer = browser.get("/instant/get_token/").json()
    own = next(c for c in answer["channels"] if c["name"] == f"$user:{user.pk}")
    live = live_client(answer["ws_token"])
    live.subscribe(own["name"], token=own["token"])
    return live, answer["ws_token"], own["token"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", list(LOGOUTS))
def test_any_logout_ends_the_users_connections_for_good(how, site_session, live_client,
                                                        django_user_model, disconnects):
    alice = django_user_model.objects.create_user("alice", is_staff=True)  # staff: admin logout
    browser = Client()
    browser.force_login(alice)
    live, _, _ = open_tab(browser, live_client, alice)
    watcher = live_client(connection_token(None))
    watcher.subscribe("tasks")
    Task.objects.create(title="before", owner=alice)
    assert [d["data"]["fields"]["title"] for d in live.wait_for(1)] == ["before"]

    response = browser.post(LOGOUTS[how])
    assert response.status_code in (200, 302), response.content[:300]
    assert "_auth_user_id" not in browser.session
    assert wait_until(lambda: live.disconnects), f"{how} left the websocket connected"
    assert live.disconnects == [(access.ACCESS_CHANGED, "logged out")]
    assert [d["user"] for d in disconnects] == [str(alice.pk)]  # once, also for logout/
    # Sent once the session was gone: a tab that asks get_token/ the moment it is disconnected
    # gets an anonymous visitor's tokens, not alice's again.
    assert disconnects[0]["sessions_left"] == 0

    Task.objects.create(title="after", owner=alice)
    # The public channel got the new task: had the private one still been followed, it would
    # have got it too. The standard client did not come back: it is still disconnected.
    assert [d["data"]["fields"]["title"] for d in watcher.wait_for(2)] == ["before", "after"]
    assert live.client.state == ClientState.DISCONNECTED
    assert [d["data"]["fields"]["title"] for _, d in live.received] == ["before"]
    assert len(live.disconnects) == 1  # no reconnect, no second disconnect
    anonymous = browser.get("/instant/get_token/").json()
    assert not any(c["name"].startswith("$user:") for c in anonymous["channels"])


@pytest.mark.django_db
def test_logging_out_an_anonymous_visitor_disconnects_nobody(site_session, disconnects):
    assert Client().post("/accounts/logout/").status_code == 302
    assert disconnects == []


@pytest.mark.django_db
def test_logout_succeeds_when_centrifugo_is_unreachable(site_session, django_user_model,
                                                        caplog):
    """The site's logout must never fail because of the websocket side (no fixture: the test
    settings point at an unroutable port)."""
    alice = django_user_model.objects.create_user("alice")
    browser = Client()
    browser.force_login(alice)
    assert browser.post("/accounts/logout/").status_code == 302
    assert "_auth_user_id" not in browser.session
    assert f"could not disconnect user {alice.pk}" in caplog.text


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_client_that_keeps_its_tokens_reads_until_they_expire_plus_the_close_delay(
        site_session, live_client, django_user_model, settings):
    """The window that remains for a hostile client: it ignores the disconnect, connects again
    with the connection token it kept and subscribes with the subscription token it kept. It
    reads the user's channel until the tokens expire and Centrifugo closes the connection
    (``client.expired_close_delay`` after the expiry: the time a real client has to refresh)."""
    lifetime = 3
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "CONNECTION_TOKEN_LIFETIME": lifetime,
                                "SUBSCRIPTION_TOKEN_LIFETIME": lifetime}
    alice = django_user_model.objects.create_user("alice")
    browser = Client()
    browser.force_login(alice)
    live, ws_token, sub_token = open_tab(browser, live_client, alice)
    expires = json.loads(_claims(ws_token))["exp"]
    browser.post("/accounts/logout/")
    logged_out = time.time()
    assert wait_until(lambda: live.disconnects)

    hostile = live_client(ws_token)  # still valid: Centrifugo OSS has no revocation list
    hostile.subscribe(f"$user:{alice.pk}", token=sub_token)
    received_at: list[float] = []
    made = 0
    deadline = time.monotonic() + 120
    # Keep writing until Centrifugo ends the hostile client's connection or subscription.
    while not (hostile.disconnects or hostile.unsubscribed) and time.monotonic() < deadline:
        made += 1
        Task.objects.create(title=f"after logout {made}", owner=alice)
        got = len(hostile.wait_for(made, timeout=0.3))
        while len(received_at) < got:
            received_at.append(time.time())
        time.sleep(0.1)  # pacing only: a few events a second are enough to see the end
    assert hostile.disconnects or hostile.unsubscribed, "the kept tokens never stopped working"
    assert received_at, "the kept tokens did not work at all: nothing to measure"
    ended = time.time()
    assert ended > expires  # it only ended once the tokens had expired
    # After the end nothing more arrives: a reconnect with the expired token is refused.
    count = len(hostile.received)
    Task.objects.create(title="later", owner=alice)
    watcher = live_client(connection_token(None))
    watcher.subscribe("tasks")
    Task.objects.create(title="barrier", owner=alice)
    assert watcher.wait_for(1)
    assert len(hostile.received) == count
    (ARTIFACTS / "kept-tokens.json").write_text(json.dumps({
        "token_lifetime_s": lifetime,
        "centrifugo_expired_close_delay_s": 25,
        "logout_to_last_event_received_s": round(received_at[-1] - logged_out, 2),
        "token_expiry_to_end_s": round(ended - expires, 2),
        "ended_by": {"disconnects": hostile.disconnects,
                     "unsubscribed": {k: list(v) for k, v in hostile.unsubscribed.items()}},
        "events_received_after_logout": len(received_at),
    }, indent=2))


def _claims(token: str) -> str:
    import base64

    part = token.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()
