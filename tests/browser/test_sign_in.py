"""Signing in and reading the patient messages in a real browser, keyboard only."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from scheduler.demo import seed_demo


def _credentials(session, settings, now) -> tuple[str, str]:
    shown = seed_demo(session, settings, now=now)
    email, password = shown["login (scheduler)"].split(" / ")
    return email, password


# The demo's confirmations are queued at "now": the page must list them whatever the date.
@pytest.mark.pinned_dates(postgresql=["today"])
def test_sign_in_with_the_keyboard_and_read_messages(
    browser, live_server, session, settings, screenshot, now
) -> None:
    email, password = _credentials(session, settings, now)
    page = browser.new_page()
    page.goto(f"{live_server.url}/login")
    screenshot(page, "sign-in")
    # Every control is reachable by its label and usable from the keyboard.
    page.get_by_label("Email").focus()
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.get_by_text("Signed in as Demo Scheduler").is_visible()
    screenshot(page, "home")
    with page.expect_navigation():
        page.get_by_role("link", name="Messages").first.click()
    assert page.get_by_role("heading", name="Patient messages").is_visible()
    assert "confirmation" in page.content()
    screenshot(page, "messages")
    # The server runs in a thread of this process, so it reads the pinned clock too: the
    # calendar marks the department's today.
    page.goto(f"{live_server.url}/calendar/week")
    today = now.astimezone(ZoneInfo("America/New_York")).date()
    href = page.locator("tr.is-today th a").get_attribute("href") or ""
    assert href.endswith(f"date={today.isoformat()}"), href
    page.close()
