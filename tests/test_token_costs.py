"""What a token refresh costs the server, measured: the basis of the token lifetime defaults.

A tab refreshes its connection token through ``get_token/`` once per
``CONNECTION_TOKEN_LIFETIME`` and each private subscription through ``subscribe/`` once per
``SUBSCRIPTION_TOKEN_LIFETIME``; the lifetime is also the window a client that keeps its tokens
keeps reading after it lost access (docs/explanation/security.md). Both calls are timed here
with Django's test client (the whole request: middleware, session, the rules, signing), on the
test project's SQLite database, and turned into the load of 10,000 open tabs at a few lifetimes
(``test-artifacts/token-refresh-cost.json``). Nothing is asserted about time: a slow machine makes
slow numbers, not a failing test; what is asserted is that every answer is the right one.
"""

from __future__ import annotations

import json
import statistics
import time

import jwt
import pytest
from django.test import Client

from instant_signals import conf
from tests.conftest import ARTIFACTS

CALLS = 300
TABS = 10_000
LIFETIMES = (60, 120, 300, 900)


def timed(call, count: int) -> tuple[list[float], float]:
    """Wall milliseconds of each call, and CPU milliseconds per call (this process)."""
    walls = []
    cpu = time.process_time()
    for _ in range(count):
        started = time.perf_counter()
        call()
        walls.append((time.perf_counter() - started) * 1000)
    return walls, (time.process_time() - cpu) * 1000 / count


def summary(walls: list[float], cpu_ms: float) -> dict[str, float]:
    walls = sorted(walls)
    return {"median_ms": round(statistics.median(walls), 3),
            "p90_ms": round(walls[int(len(walls) * 0.9)], 3), "cpu_ms_per_call": round(cpu_ms, 3)}


@pytest.mark.django_db
def test_what_a_token_refresh_costs(django_user_model, settings):
    settings.CENTRIFUGO_HMAC_KEY = "k" * 32  # signing only: no Centrifugo needed
    alice = django_user_model.objects.create_user("alice")
    browser = Client()
    browser.force_login(alice)
    own = f"$user:{alice.pk}"
    key = conf.hmac_key()

    answer = browser.get("/instant/get_token/").json()
    claims = jwt.decode(answer["ws_token"], key, algorithms=["HS256"])
    assert claims["sub"] == str(alice.pk)
    assert claims["exp"] - claims["iat"] == conf.DEFAULTS["CONNECTION_TOKEN_LIFETIME"]
    listed = {c["name"]: c["token"] for c in answer["channels"]}
    assert own in listed and jwt.decode(listed[own], key, algorithms=["HS256"])["channel"] == own

    def get_token():
        response = browser.get("/instant/get_token/")
        assert response.status_code == 200

    def subscribe():
        response = browser.post("/instant/subscribe/", {"channel": own},
                                content_type="application/json")
        assert response.status_code == 200

    get_token(), subscribe()  # warm: templates, URL resolver, the session row
    token_walls, token_cpu = timed(get_token, CALLS)
    sub_walls, sub_cpu = timed(subscribe, CALLS)
    token = summary(token_walls, token_cpu)
    sub = summary(sub_walls, sub_cpu)
    answer = browser.post("/instant/subscribe/", {"channel": own},
                          content_type="application/json").json()
    claims = jwt.decode(answer["token"], key, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == conf.DEFAULTS["SUBSCRIPTION_TOKEN_LIFETIME"]

    # A tab of the test project: one connection, one private subscription ($user:<pk>).
    per_tab_ms = token["median_ms"] + sub["median_ms"]
    load = {str(lifetime): {
        "requests_per_s": round(TABS * 2 / lifetime, 1),
        "server_cores_busy": round(TABS * per_tab_ms / lifetime / 1000, 3),
    } for lifetime in LIFETIMES}
    (ARTIFACTS / "token-refresh-cost.json").write_text(json.dumps({
        "calls": CALLS, "channels_listed_by_get_token": len(listed),
        "get_token": token, "subscribe": sub,
        "load_of_10000_tabs_by_lifetime_s": load,
        "defaults_s": {"connection": conf.DEFAULTS["CONNECTION_TOKEN_LIFETIME"],
                       "subscription": conf.DEFAULTS["SUBSCRIPTION_TOKEN_LIFETIME"]},
        "how": "Django test client, SQLite in memory, DEBUG off, one process; "
               "tests/test_token_costs.py",
    }, indent=2))
