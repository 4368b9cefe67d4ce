"""The admin an operator uses when delivery goes wrong: outbox rows and dead letters (retry,
drop), the delivery page (backlog per partition, counters, failures), the declarations page,
and who may see and do what, with Django's test client (tests/test_admin_browser.py drives
the same admin in Chromium)."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from instant_signals import backlog, reporting
from instant_signals.exceptions import CentrifugoError
from instant_signals.models import Channel, OutboxEntry
from instant_signals.tokens import connection_token

pytestmark = pytest.mark.django_db

ROWS = reverse("admin:instant_signals_outboxentry_changelist")
DELIVERY = reverse("admin:instant_signals_delivery")
DECLARATIONS = reverse("admin:instant_signals_declarations")


def row(partition=0, channel="tasks", *, dead=False, error=None, attempts=None, age=None):
    entry = OutboxEntry.objects.create(
        method="publish", partition=partition,
        payload={"channel": channel, "data": {"event": "created"}},
        error=error, attempts=attempts, dead_at=timezone.now() if dead else None)
    if age is not None:
        OutboxEntry.objects.filter(pk=entry.pk).update(created_at=timezone.now() - age)
        entry.refresh_from_db()
    return entry


def staff(username, *perms):
    user = User.objects.create_user(username, password="pw", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(
            content_type__app_label="instant_signals", codename=codename))
    return user


@pytest.fixture
def as_user(client):
    def log_in(user):
        client.force_login(user)
        return client
    return log_in


@pytest.fixture
def operator(as_user):
    """Staff who may view, retry (change) and drop (delete) outbox rows."""
    return as_user(staff("operator", "view_outboxentry", "change_outboxentry",
                         "delete_outboxentry"))


def act(client, action, rows, **extra):
    return client.post(ROWS, {"action": action, "_selected_action":
                                              [str(r.pk) for r in rows], **extra}, follow=True)


# -- the rows -------------------------------------------------------------------------------------

def test_dead_letters_are_listed_with_their_reason(operator):
    dead = row(channel="$task:7", dead=True, attempts=1,
               error="[102] unknown channel")
    pending = row(channel="tasks")
    page = operator.get(ROWS + "?state=dead").content.decode()
    assert "[102] unknown channel" in page and "$task:7" in page
    assert f'value="{dead.pk}"' in page and f'value="{pending.pk}"' not in page
    everything = operator.get(ROWS).content.decode()
    assert f'value="{pending.pk}"' in everything and "pending" in everything


def test_the_state_filter_tells_pending_failing_and_dead_rows_apart(operator):
    ok, failing, dead = row(), row(error="[100] internal server error", attempts=2), row(dead=True)

    def listed(state):
        page = operator.get(ROWS + f"?state={state}").content.decode()
        return {r.pk for r in (ok, failing, dead) if f'value="{r.pk}"' in page}

    assert listed("pending") == {ok.pk, failing.pk}
    assert listed("failing") == {failing.pk}
    assert listed("dead") == {dead.pk}


def test_a_row_page_is_a_read_only_view_of_the_row_and_its_payload(operator):
    dead = row(channel="$task:7", dead=True, error="[102] unknown channel", attempts=1)
    url = reverse("admin:instant_signals_outboxentry_change", args=[dead.pk])
    page = operator.get(url).content.decode()
    assert "[102] unknown channel" in page and "&quot;channel&quot;: &quot;$task:7&quot;" in page
    assert 'name="_save"' not in page and "Delete" not in page.split('id="content-main"')[1]
    assert operator.post(url, {"error": "edited"}).status_code == 403
    assert operator.get(reverse("admin:instant_signals_outboxentry_add")).status_code == 403
    assert operator.post(reverse("admin:instant_signals_outboxentry_delete", args=[dead.pk]),
                         {"post": "yes"}).status_code == 403
    dead.refresh_from_db()
    assert dead.error == "[102] unknown channel"


def test_delete_selected_is_not_offered_only_the_two_actions(operator):
    row(dead=True)
    page = operator.get(ROWS).content.decode()
    assert 'value="retry_dead_letters"' in page and 'value="drop_dead_letters"' in page
    assert 'value="delete_selected"' not in page


# -- retry ----------------------------------------------------------------------------------------

def test_retry_puts_dead_letters_back_to_pending_with_no_attempts(operator):
    dead = row(dead=True, attempts=20, error="[111] too many requests")
    pending = row(error="[100] internal", attempts=3)
    page = act(operator, "retry_dead_letters", [dead, pending]).content.decode()
    dead.refresh_from_db()
    pending.refresh_from_db()
    assert (dead.dead_at, dead.attempts, dead.error) == (None, 0, None)
    assert OutboxEntry.objects.pending().filter(pk=dead.pk).exists()
    assert (pending.attempts, pending.error) == (3, "[100] internal")  # not a dead letter
    assert "1 dead letter is pending again" in page
    assert "1 selected row was not a dead letter: unchanged." in page
    entry = LogEntry.objects.get(object_id=str(dead.pk))
    assert entry.action_flag == CHANGE and "[111] too many requests" in entry.get_change_message()


def test_the_relay_sends_a_retried_dead_letter(operator, centrifugo, live_client):
    """Retried from the admin, the row is what the relay sends next (a real Centrifugo)."""
    from instant_signals.delivery.outbox import relay

    dead = row(channel="tasks", dead=True, attempts=1, error="[102] unknown channel")
    assert relay().sent == 0  # a dead letter is never sent
    subscriber = live_client(connection_token(None))
    subscriber.subscribe("tasks")
    act(operator, "retry_dead_letters", [dead])
    assert relay().sent == 1
    assert subscriber.wait_for(1) == [{"event": "created"}]
    assert not OutboxEntry.objects.exists()


# -- drop -----------------------------------------------------------------------------------------

def test_drop_asks_first_then_deletes_dead_letters_only(operator):
    dead = row(dead=True, error="[102] unknown channel")
    pending = row()
    page = act(operator, "drop_dead_letters", [dead, pending]).content.decode()
    assert "Drop this dead letter?" in page and "[102] unknown channel" in page
    assert "1 selected row is not a dead letter: it is kept." in page
    assert OutboxEntry.objects.count() == 2  # nothing dropped before the confirmation
    page = act(operator, "drop_dead_letters", [dead], post="yes").content.decode()
    assert "1 dead letter dropped" in page
    assert list(OutboxEntry.objects.values_list("pk", flat=True)) == [pending.pk]
    assert LogEntry.objects.get(object_id=str(dead.pk)).action_flag == DELETION


def test_drop_never_deletes_a_pending_row(operator):
    pending = row()
    page = act(operator, "drop_dead_letters", [pending], post="yes").content.decode()
    assert "1 selected row was not a dead letter: kept." in page
    assert OutboxEntry.objects.filter(pk=pending.pk).exists()


# -- permissions ----------------------------------------------------------------------------------

def test_view_permission_shows_rows_but_offers_no_action(as_user):
    client = as_user(staff("viewer", "view_outboxentry"))
    dead = row(dead=True, error="[102] unknown channel")
    page = client.get(ROWS).content.decode()
    assert "[102] unknown channel" in page
    assert "retry_dead_letters" not in page and "drop_dead_letters" not in page
    act(client, "retry_dead_letters", [dead])
    act(client, "drop_dead_letters", [dead], post="yes")
    dead.refresh_from_db()
    assert dead.dead_at is not None and dead.error == "[102] unknown channel"


def test_each_action_needs_its_own_permission(as_user):
    dead = row(dead=True, error="[102] unknown channel")
    retrier = as_user(staff("retrier", "view_outboxentry", "change_outboxentry"))
    page = retrier.get(ROWS).content.decode()
    assert "retry_dead_letters" in page and "drop_dead_letters" not in page
    act(retrier, "drop_dead_letters", [dead], post="yes")
    assert OutboxEntry.objects.filter(pk=dead.pk).exists()
    dropper = as_user(staff("dropper", "view_outboxentry", "delete_outboxentry"))
    page = dropper.get(ROWS).content.decode()
    assert "drop_dead_letters" in page and "retry_dead_letters" not in page
    act(dropper, "retry_dead_letters", [dead])
    assert OutboxEntry.objects.get(pk=dead.pk).dead_at is not None


def test_staff_without_permissions_sees_none_of_the_pages(as_user):
    client = as_user(staff("intern"))
    for url in (ROWS, DELIVERY, DECLARATIONS):
        assert client.get(url).status_code == 403, url


def test_non_staff_users_are_sent_to_the_admin_login(client):
    client.force_login(User.objects.create_user("visitor", password="pw"))
    for url in (ROWS, DELIVERY, DECLARATIONS):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url


def test_a_superuser_sees_every_page_and_both_actions(as_user):
    client = as_user(User.objects.create_superuser("root", password="pw"))
    row(dead=True)
    for url in (ROWS, DELIVERY, DECLARATIONS):
        assert client.get(url).status_code == 200, url
    page = client.get(ROWS).content.decode()
    assert "retry_dead_letters" in page and "drop_dead_letters" in page


def test_the_app_page_links_the_pages_its_user_may_see(as_user):
    index = reverse("admin:app_list", args=["instant_signals"])
    channels_only = as_user(staff("channels", "view_channel")).get(index).content.decode()
    assert DECLARATIONS in channels_only and DELIVERY not in channels_only
    outbox_only = as_user(staff("outbox", "view_outboxentry")).get(index).content.decode()
    assert DELIVERY in outbox_only and DECLARATIONS not in outbox_only
    assert DELIVERY in outbox_only and DELIVERY in as_user(staff("o2", "view_outboxentry")).get(
        ROWS).content.decode()  # and the list of rows links it too


# -- the delivery page ----------------------------------------------------------------------------

def test_the_delivery_page_shows_the_backlog_per_partition(operator):
    row(0, age=timedelta(minutes=2))
    row(0)
    row(3, error="[100] internal server error", attempts=2, age=timedelta(minutes=9))
    row(3, dead=True, error="[102] unknown channel")
    row(5, dead=True, error="[108] not available")
    response = operator.get(DELIVERY)
    page = response.content.decode()
    [section] = response.context["sections"]
    found = section["backlog"]
    assert (found.pending, found.failing, found.dead) == (3, 1, 2)
    by_partition = {p.partition: p for p in found.partitions}
    assert sorted(by_partition) == [0, 3, 5]
    assert (by_partition[0].pending, by_partition[0].dead) == (2, 0)
    assert by_partition[3].last_error == "[100] internal server error"
    assert (by_partition[5].pending, by_partition[5].oldest) == (0, None)
    assert found.oldest == OutboxEntry.objects.get(partition=3, dead_at=None).created_at
    assert '<strong class="pending-count">3</strong>' in page
    assert "9\xa0minutes" in page  # the oldest pending row's age
    assert "older than OUTBOX_MAX_AGE (300 s)" in page
    assert f"{ROWS}?state=dead" in page and "[100] internal server error" in page


def test_a_young_backlog_is_not_flagged_late(operator, settings):
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "OUTBOX_MAX_AGE": 3600}
    row(age=timedelta(minutes=9))
    page = operator.get(DELIVERY).content.decode()
    assert "9\xa0minutes" in page and "older than OUTBOX_MAX_AGE" not in page


def test_an_empty_outbox_says_nothing_waits(operator):
    page = operator.get(DELIVERY).content.decode()
    assert '<strong class="pending-count">0</strong>' in page and "Empty: nothing waits." in page
    assert "Delivery mode: <code>on_commit</code>" in page


def test_the_counters_are_this_processes_and_the_page_says_so(operator):
    reporting.failed([{"channel": "$task:9", "data": {}}],
                     CentrifugoError("internal server error", code=100), sender=None)
    response = operator.get(DELIVERY)
    page = response.content.decode()
    counters = reporting.stats.snapshot()
    for name, value in counters.items():
        assert f'<td class="counter-{name}">{value}</td>' in page
    assert f"(pid {os.getpid()})" in page and "Each web worker and each" in page
    failures = page.split('id="failures"', 1)[1]
    assert "$task:9" in failures and "[100] internal server error" in failures


def test_a_second_backlog_source_is_one_entry_in_the_list(operator, as_user, monkeypatch):
    """A source (a change-log table, say) appended to ``backlog.SOURCES`` gets its own section,
    shown only to users who may view its model."""

    class ChangeLog:
        label = "Captured changes"
        model = Channel

        def measure(self, using=None):
            return backlog.Backlog(self, (backlog.PartitionBacklog(2, 7, timezone.now()),))

    monkeypatch.setattr(backlog, "SOURCES", [*backlog.SOURCES, ChangeLog()])
    page = as_user(User.objects.create_superuser("root", password="pw")).get(
        DELIVERY).content.decode()
    assert "Outbox (durable delivery)" in page and "Captured changes" in page
    assert '<tr data-partition="2">' in page
    page = as_user(staff("outbox-viewer", "view_outboxentry")).get(DELIVERY).content.decode()
    assert "Outbox (durable delivery)" in page and "Captured changes" not in page


# -- the declarations page ------------------------------------------------------------------------

def test_the_declarations_page_lists_every_declaration(as_user):
    client = as_user(staff("reader", "view_channel"))
    response = client.get(DECLARATIONS)
    page = response.content.decode()
    rows = {(r.model, tuple(c.name for c in r.channels)): r for r in response.context["rows"]}
    user = rows[("auth.user", ("$users_feed",))]
    assert user.channels[0].readers == "level 'staff': Staff"
    assert user.source == "INSTANT_SIGNALS['MODELS']" and user.format == "JSON events"
    assert "password" not in user.fields.split(" (")[0]  # secret-looking names are left out
    task = rows[("testapp.task", ("$task:{pk}",))]
    assert task.channels[0].readers == "the user in field 'owner_id' of the row"
    assert task.fields == "id, title, done, owner_id" and task.source == "@broadcast"
    assert rows[("testapp.task", ("tasks",))].channels[0].readers.startswith("anyone")
    item = rows[("testapp.item", ("$board:{board}",))]
    assert item.channels[0].readers.startswith("rule tests.testapp.models.staff_may_read")
    assert "<code class=\"channel\">$users_feed</code>" in page
    assert 'data-model="testapp.task"' in page


def test_the_declarations_page_is_read_only(as_user):
    client = as_user(User.objects.create_superuser("root", password="pw"))
    page = client.get(DECLARATIONS).content.decode()
    assert "<form" not in page.split('id="content-main"', 1)[1]
