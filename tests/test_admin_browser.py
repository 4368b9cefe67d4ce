"""The operator's admin in a real Chromium: the Django admin of the test project, served by
``runserver`` (support/browser_pages.py), logged in through its login form. Playwright's sync
API runs an event loop in the test's thread, so this file has no ``django_db`` test (the site's
child processes own the database); tests/test_admin.py covers the rest with the test client."""

from __future__ import annotations

from pathlib import Path

from support.browser_pages import chromium, start_site  # noqa: F401 - chromium is a fixture

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

def test_an_operator_retries_a_dead_letter_and_reads_the_declarations_in_chromium(
        centrifugo_binary, tmp_path, chromium):
    """Log in to the admin, find the dead letter from the delivery page, read its reason, retry
    it, see it pending; then the declarations page. Screenshots in test-artifacts/."""
    site, centrifugo = start_site(centrifugo_binary, tmp_path)
    try:
        pk = site.json("""
            from django.contrib.auth.models import User
            from django.utils import timezone
            from instant_signals.models import OutboxEntry
            User.objects.create_superuser("ops", password="ops-pw")
            row = OutboxEntry.objects.create(
                method="publish", partition=0, payload={"channel": "$task:7", "data": {}},
                attempts=1, error="[102] unknown channel", dead_at=timezone.now())
            print(json.dumps(row.pk))
        """)
        context = chromium.new_context()
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{site.url}admin/")
        page.fill("#id_username", "ops")
        page.fill("#id_password", "ops-pw")
        page.click("input[type=submit]")
        page.get_by_role("link", name="Instant signals").first.click()
        page.get_by_role("link", name="Delivery: backlog, counters, failures").click()
        page.locator(".dead-count", has_text="1").wait_for()
        page.locator("#counters", has_text=f"pid").wait_for()
        page.click("a.dead-link")
        dead_row = page.locator("#result_list tbody tr", has_text="$task:7")
        dead_row.locator("text=[102] unknown channel").wait_for()
        assert "dead" in dead_row.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "admin-dead-letter.png"), full_page=True)
        dead_row.locator("input[name=_selected_action]").check()
        page.select_option("select[name=action]", "retry_dead_letters")
        page.click(".actions button[name=index]")  # "Go" before Django 6.0, "Run" since
        page.locator(".messagelist .success", has_text="1 dead letter is pending again").wait_for()
        page.goto(f"{site.url}admin/instant_signals/outboxentry/?state=pending")
        pending_row = page.locator("#result_list tbody tr", has_text="$task:7")
        pending_row.wait_for()
        assert "pending" in pending_row.inner_text()
        assert "[102]" not in pending_row.inner_text()
        assert site.json(f"""
            from instant_signals.models import OutboxEntry
            row = OutboxEntry.objects.get(pk={pk})
            print(json.dumps([row.dead_at is None, row.attempts, row.error]))
        """) == [True, 0, None]
        page.goto(f"{site.url}admin/instant_signals/channel/")
        page.get_by_role("link", name="Declarations").click()
        user_row = page.locator("#declarations tr", has_text="$users_feed")
        user_row.wait_for()
        assert "auth.user" in user_row.inner_text() and "Staff" in user_row.inner_text()
        assert page.locator("#declarations tr[data-model='testapp.task']").count() == 3
        page.screenshot(path=str(ARTIFACTS / "admin-declarations.png"), full_page=True)
        context.close()
    finally:
        site.stop()
        centrifugo.stop()
