"""collection/ of a channel no declaration makes, and a ``model`` that does not publish there.

The rule (docs/reference/endpoints.md#collection): for a ``$`` name, access is decided first,
so a private channel the user may not read and one that does not exist answer the same 403;
a public name is not secret, so a name no declaration makes answers 404 ``not_a_collection``.
The test project's declarations (tests/testapp/models.py, tests/settings.py) are used as they
are: ``tasks``, ``notes``, ``items``, ``$task:{pk}`` and ``$user:{owner_id}`` (owner),
``$board:{board}`` (staff), ``$users_feed`` (staff).
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from instant_signals.models import Channel
from instant_signals.registry import broadcast_registry
from support.browser_pages import chromium, open_page, start_site  # noqa: F401
from tests.testapp.models import Note, Task

HMAC = "undeclared-test-key-0123456789abcdef"


@pytest.fixture
def people(db, django_user_model, settings):
    settings.CENTRIFUGO_HMAC_KEY = HMAC
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"  # nothing here may need Centrifugo
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "ENABLED": False}
    ann = django_user_model.objects.create_user("ann", password="pw")
    bob = django_user_model.objects.create_user("bob", password="pw")
    boss = django_user_model.objects.create_user("boss", password="pw", is_staff=True)
    tasks = {who: Task.objects.create(title=f"{who.username}'s", owner=who)
             for who in (ann, bob, boss)}
    Note.objects.create(title="a note")
    Channel.objects.create(name="$ops", level="staff")  # a publish()-only private channel
    Channel.objects.create(name="news", level="public")  # a publish()-only public channel
    return {"ann": ann, "bob": bob, "boss": boss, "tasks": tasks}


def client_of(user) -> Client:
    client = Client(raise_request_exception=False)
    if user is not None:
        client.force_login(user)
    return client


def collection(client: Client, channel: str, *models: str):
    query = "&".join([f"channel={quote(channel, safe='')}",
                      *(f"model={quote(m, safe='')}" for m in models)])
    response = client.get("/instant/collection/?" + query)
    assert response["Content-Type"] == "application/json", response.content[:200]
    return response.status_code, json.loads(response.content)


# -- the answers, one by one --------------------------------------------------------------------

@pytest.mark.parametrize("channel", ["nope", "task", "tasks:1", "note:1", "Tasks", "tasks2"])
def test_a_public_name_no_declaration_makes_is_a_404_not_the_access_error(people, channel):
    for user in (None, people["ann"], people["boss"]):
        status, answer = collection(client_of(user), channel)
        assert (status, answer["error"]) == (404, "not_a_collection"), (channel, answer)
        assert repr(channel) in answer["detail"] and "@broadcast" in answer["detail"]


def test_a_publish_only_channel_is_not_a_collection_for_who_may_read_it(people):
    # Readable (its Channel row), but no model publishes rows there.
    assert collection(client_of(people["boss"]), "$ops")[0] == 404
    assert collection(client_of(None), "news")[0] == 404
    # Who may not read it learns nothing: the same answer as for a name nobody made.
    assert collection(client_of(people["ann"]), "$ops") == (
        403, {"error": "channel_not_allowed",
              "detail": "you may not read '$ops', or no @broadcast declaration makes it"})


def test_a_model_that_does_not_publish_there_is_a_400_naming_those_that_do(people):
    status, answer = collection(client_of(None), "tasks", "testapp.note")
    assert status == 400 and answer["error"] == "model_not_in_channel", answer
    assert answer["models"] == ["testapp.task"]
    assert "'testapp.note'" in answer["detail"] and "testapp.task" in answer["detail"]
    # Every model asked is checked; an unknown label too.
    assert collection(client_of(None), "tasks", "testapp.task", "todo.nope")[1]["models"] == \
        ["testapp.task"]
    ann = people["ann"]
    status, answer = collection(client_of(ann), f"$user:{ann.pk}", "testapp.note")
    assert (status, answer["models"]) == (400, ["testapp.task"])


def test_the_model_check_comes_after_access(people):
    # bob may not read ann's channel: the models publishing there are not told to him.
    status, answer = collection(client_of(people["bob"]), f"$user:{people['ann'].pk}",
                                "testapp.note")
    assert (status, answer["error"]) == (403, "channel_not_allowed")
    assert "models" not in answer and "testapp" not in answer["detail"]


def test_the_right_model_gets_the_rows(people, centrifugo):
    status, answer = collection(client_of(None), "tasks", "testapp.task")
    assert status == 200, answer
    assert sorted(r["fields"]["title"] for r in answer["rows"]) == ["ann's", "bob's", "boss's"]


# -- an unreadable private channel answers as one that does not exist -----------------------------

UNDECLARED_PREFIXES = ["$nope", "$tasks", "$notes", "$task", "$user", "$board", "$taskx",
                       "$users_feed2", "$", "$$task", "$ta"]


def unreadable_names(people, who: str) -> st.SearchStrategy[str]:
    """Private channels some declaration makes that ``who`` may not read (the test's own rule:
    owner channels of others' rows, staff channels for non-staff, malformed placeholders)."""
    others = [p for name, p in people.items() if name in ("ann", "bob", "boss") and name != who]
    theirs = [people["tasks"][p].pk for p in others]
    missing = max(t.pk for t in people["tasks"].values()) + 1
    names = [st.sampled_from([f"$task:{pk}" for pk in theirs + [missing]]),
             st.sampled_from([f"$user:{p.pk}" for p in others]),
             st.sampled_from(["$task:abc", "$task:01", "$task:+1", "$user:x", "$task:1e3"])]
    if who in ("anonymous", "ann", "bob"):
        names += [st.just("$users_feed"), st.just("$ops"),
                  st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126),
                          min_size=1, max_size=10).map(lambda v: f"$board:{v}")]
    if who == "anonymous":
        mine = [f"$task:{t.pk}" for t in people["tasks"].values()]
        names += [st.sampled_from(mine)]
    return st.one_of(names)


@st.composite
def undeclared_names(draw):
    prefix = draw(st.sampled_from(UNDECLARED_PREFIXES))
    rest = draw(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126),
                        max_size=12))
    name = (prefix + rest)[:255]
    # A name of one of the declared shapes is not what this draws.
    if re.fullmatch(r"\$(task|user|board):.*|\$users_feed|\$ops", name):
        name = "$nope" + name[1:]
    return name


def blank(name: str, answer: dict) -> dict:
    """The answer with the channel's name taken out: what else could tell the two apart."""
    return {k: v.replace(repr(name), "<name>") if isinstance(v, str) else v
            for k, v in answer.items()}


def answer_of(client: Client, path: str, name: str, models: list[str]):
    if path == "collection":
        query = "&".join([f"channel={quote(name, safe='')}",
                          *(f"model={quote(m, safe='')}" for m in models)])
        response = client.get("/instant/collection/?" + query)
    else:
        response = client.post("/instant/subscribe/", json.dumps({"channel": name}),
                               content_type="application/json")
    headers = {k: response[k] for k in ("Content-Type", "Cache-Control")}
    return response.status_code, headers, blank(name, json.loads(response.content))


@hsettings(max_examples=300, deadline=None, database=None, derandomize=True,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_an_unreadable_private_channel_answers_as_an_undeclared_one(people, data):
    who = data.draw(st.sampled_from(["anonymous", "ann", "bob", "boss"]))
    user = None if who == "anonymous" else people[who]
    unreadable = data.draw(unreadable_names(people, who))
    undeclared = data.draw(undeclared_names())
    # Preconditions, so the test compares what it says it compares.
    assert broadcast_registry.may_read(user, undeclared) is None, undeclared
    assert not Channel.objects.filter(name=undeclared).exists()
    models = data.draw(st.lists(st.sampled_from(["testapp.task", "testapp.note", "x.y"]),
                                max_size=2))
    path = data.draw(st.sampled_from(["collection", "collection", "subscribe"]))
    client = client_of(user)
    hidden = answer_of(client, path, unreadable, models)
    absent = answer_of(client, path, undeclared, models)
    assert hidden == absent, (who, unreadable, undeclared)
    assert hidden[0] == 403, hidden


# -- the browser module: the page is told, not left live with 0 rows ------------------------------

PAGE = """async () => {
  const { Instant } = window.instantModule;
  const instant = new Instant();
  const errors = [];
  instant.addListener("error", (e) => errors.push([e.channel, e.error.status, e.error.message]));
  const lists = {
    wrong: instant.collection("tasks", { model: "testapp.note" }),  // Task publishes there
    right: instant.collection("notes", { model: "testapp.note" }),
    typo: instant.collection("nottes"),
  };
  window.t = { instant, lists, errors };
  await instant.start();
}"""

STATE = """() => Object.fromEntries(Object.entries(window.t.lists).map(([k, c]) =>
  [k, { state: c.state, size: c.size, error: c.error && c.error.message }]))"""


@pytest.mark.slow
def test_the_browser_module_names_the_models_of_the_channel(
        centrifugo_binary, tmp_path, chromium):  # noqa: F811
    site, server = start_site(centrifugo_binary, tmp_path)
    try:
        site.run("""
            from tests.testapp.models import Note, Task
            Note.objects.create(title="kept")
            Task.objects.create(title="not a note")
        """)
        context = chromium.new_context()
        page = open_page(context, site.url)
        page.evaluate(PAGE)
        page.wait_for_function("window.t.errors.length === 2 "
                               "&& window.t.lists.right.state === 'live'")
        states = page.evaluate(STATE)
        assert states["right"] == {"state": "live", "size": 1, "error": None}
        wrong, typo = states["wrong"], states["typo"]
        assert wrong["state"] == "error" and wrong["size"] == 0
        assert "'testapp.note' does not publish into 'tasks'" in wrong["error"]
        assert "the models that do: testapp.task" in wrong["error"]
        assert typo["state"] == "error" and "is not a channel declared" in typo["error"]
        assert sorted(e[:2] for e in page.evaluate("window.t.errors")) == [
            ["nottes", 404], ["tasks", 400]]
        context.close()
    finally:
        site.stop()
        server.stop()
