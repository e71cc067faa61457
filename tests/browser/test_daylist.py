"""The scheduler's day in a real browser: a patient's reply typed into the local outbox reaches
the inbox, and the day list and a course's schedule print without navigation or controls."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from notifications.models import Reminder
from scheduler.models import Course
from tests.api.conftest import ADMIN_PASSWORD, seed_reference_data
from tests.browser.test_flows import PageWatch
from tests.committing import records, services

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from tests.browser.conftest import LiveServer

NY = ZoneInfo("America/New_York")  # the seeded department's zone


def _next_monday(now: datetime) -> date:
    day = now.astimezone(NY).date() + timedelta(days=7)
    return day - timedelta(days=day.weekday())


@pytest.fixture
def booked(session: Session, now: datetime) -> tuple[int, date]:
    """(course id, its first day): five sessions at 10:00 from the Monday after next week's,
    in the API tests' seeded department (whose admin signs in)."""
    db = session
    seed = seed_reference_data(db)
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": "MRN-BR-1", "given_name": "Rosa",
         "family_name": "Delgado", "date_of_birth": date(1968, 9, 23),
         "phone": "+12125550177", "language": "en", "sms_consent": True},
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    ready = db.get(Course, course.id)
    assert ready is not None
    ready.plan_approved_at = ready.physics_qa_at = now
    db.commit()
    monday = _next_monday(now) + timedelta(days=7)
    placements = [
        services.Placement(n, seed.linac_ids[0],
                           datetime.combine(monday + timedelta(days=n - 1), time(10), NY))
        for n in range(1, 6)
    ]  # fmt: skip
    services.book_course(db, course.id, placements, now=now)
    db.rollback()
    return course.id, monday


def _sign_in(page: Page, live_server: LiveServer, browser: Browser) -> None:
    page.goto(f"{live_server.url}/login")
    browser.audit.check(page)
    page.get_by_label("Email").fill("admin@example.org")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    browser.audit.check(page)


def test_a_reply_typed_into_the_outbox_reaches_the_inbox(
    browser: Browser, live_server: LiveServer, session: Session, booked: tuple[int, date]
) -> None:
    course_id, _ = booked
    sms_id = session.scalar(
        sa.select(Reminder.id).where(
            Reminder.course_id == course_id,
            Reminder.kind == "confirmation",
            Reminder.channel == "sms",
        )
    )
    session.rollback()
    context = browser.new_context()
    watch = PageWatch()
    page = context.new_page()
    watch.attach(page)
    _sign_in(page, live_server, browser)
    page.goto(f"{live_server.url}/messages")
    browser.audit.check(page)
    card = page.locator(f"#message-{sms_id}")
    card.get_by_label("Patient replies").fill("Running 10 minutes late")
    card.get_by_role("button", name="Simulate reply").click()
    page.wait_for_url(f"{live_server.url}/messages")
    assert "went to the inbox for a person to read" in page.locator("p.flash").inner_text()
    with page.expect_navigation():
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Inbox").click()
    browser.audit.check(page)
    row = page.locator("table.inbox tbody tr", has_text="Running 10 minutes late")
    assert row.count() == 1
    assert "RD (MRN-BR-1)" in row.inner_text()
    assert watch.problems == []
    context.close()


def test_the_day_list_and_a_course_print_without_navigation_or_controls(
    browser: Browser, live_server: LiveServer, booked: tuple[int, date]
) -> None:
    course_id, monday = booked
    context = browser.new_context()
    watch = PageWatch()
    page = context.new_page()
    watch.attach(page)
    _sign_in(page, live_server, browser)
    day_url = f"{live_server.url}/calendar/day?date={monday.isoformat()}"
    page.goto(day_url)
    browser.audit.check(page)
    nav = page.get_by_role("navigation", name="Main")
    day_list = page.locator("table.day-list")
    assert day_list.is_hidden()  # on screen the time grid shows the day

    page.emulate_media(media="print")
    assert nav.is_hidden() and page.locator("header.top").is_hidden()
    assert page.locator(".cal-pager").is_hidden() and page.locator("form.cal-jump").is_hidden()
    assert page.locator(".tg").is_hidden()
    assert day_list.is_visible()
    rows = day_list.locator("tbody tr")
    assert rows.count() == 1
    cells = [c.strip() for c in rows.first.locator("td").all_inner_texts()]
    assert cells[0] == monday.isoformat() and cells[1].startswith("10:00–")
    assert cells[2] == "TrueBeam 1"
    assert "fraction 1/5" in cells[4]

    # The "Print view" link shows on screen what paper gets, with no script involved.
    page.emulate_media(media="screen")
    with page.expect_navigation():
        page.get_by_role("link", name="Print view").click()
    assert "view=print" in page.url
    assert nav.is_hidden() and page.locator(".tg").is_hidden() and day_list.is_visible()
    with page.expect_navigation():
        page.get_by_role("link", name="Back to the page").click()
    assert nav.is_visible() and day_list.is_hidden()

    page.emulate_media(media="print")
    page.goto(f"{live_server.url}/courses/{course_id}")
    assert page.get_by_role("navigation", name="Main").is_hidden()
    assert page.locator("table.fractions").is_visible()
    assert page.get_by_role("button", name="Save readiness").is_hidden()
    assert page.get_by_role("heading", name="Readiness").is_hidden()
    assert page.get_by_role("columnheader", name="Actions").is_hidden()
    page.emulate_media(media="screen")
    assert page.get_by_role("navigation", name="Main").is_visible()
    assert page.get_by_role("heading", name="Readiness").is_visible()
    with page.expect_navigation():
        page.get_by_role("link", name="Print view").click()
    assert page.get_by_role("heading", name="Readiness").is_hidden()
    assert page.locator("table.fractions").is_visible()
    assert watch.problems == []
    context.close()
