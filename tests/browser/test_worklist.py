"""The scheduler's day in a real browser, and every main staff page on a phone.

A scheduler signs in and lands on the worklist: today's sessions per linac, tomorrow's session
not ready to treat, a failed message and an unread reply counted in the menu. One session is
marked completed; another is marked missed on the last day its course's overall time allows,
so it cannot be rebooked: the course needs review and the menu counts it. The reply is then
handled in the inbox and its count goes.

At 390 px (a phone's CSS width) no main staff page scrolls sideways, the menu folds behind its
button and opens with it, and without JavaScript the menu stays open and still fits.

The clock is pinned to a Monday at 17:30 in New York for the whole test (the live server runs
in this process, so it shares the clock); the demo department is loaded six weeks earlier so
its own courses are over by then.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine

from notifications.models import InboundMessage, Reminder, ReminderStatus
from scheduler.demo import DEMO_DEPARTMENT, seed_demo
from scheduler.models import Department, Fraction, Protocol
from tests.browser.test_flows import UNLABELLED, PageWatch, _flash, _nav, _sign_in
from tests.committing import records, services

if TYPE_CHECKING:
    from pathlib import Path

    from playwright.sync_api import Browser, Page
    from sqlalchemy.orm import Session

    from config import Settings
    from tests.browser.conftest import LiveServer

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 3, 2, 17, 30, tzinfo=NY)  # a Monday, late afternoon
BOOKED_AT = datetime(2026, 2, 23, 8, 0, tzinfo=NY)  # the Monday before
DEMO_AT = BOOKED_AT - timedelta(weeks=6)
PHONE = {"width": 390, "height": 844}


@dataclass(frozen=True)
class World:
    credentials: dict[str, tuple[str, str]]  # role -> (email, password)
    department_id: int
    linac_id: int
    completed_course: int  # liver, today 08:00 on TrueBeam 1
    completed_fraction: int
    missed_course: int  # spine 3 fx, its last fraction today 16:00 on Edge
    missed_fraction: int
    unready_course: int  # liver, first fraction tomorrow, plan not approved
    patient_id: int


def _at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=NY)


def _course(
    session: Session, department_id: int, protocol_id: int, mrn: str,
    starts: list[datetime], linac_id: int, *, ready: bool,
) -> tuple[int, int, list[int]]:  # fmt: skip
    """(patient id, course id, fraction ids by number), booked at BOOKED_AT."""
    patient = records.create_patient(
        session,
        {"department_id": department_id, "mrn": mrn, "given_name": "Ines",
         "family_name": "Browser", "date_of_birth": date(1955, 5, 5),
         "phone": "+12125550123", "sms_consent": True},
    )  # fmt: skip
    course = records.create_course(session, {"patient_id": patient.id, "protocol_id": protocol_id})
    if ready:
        for step in ("plan_approved", "physics_qa"):
            services.record_readiness(session, course.id, step=step, done_at=BOOKED_AT)
    placements = [services.Placement(n, linac_id, start) for n, start in enumerate(starts, start=1)]
    services.book_course(session, course.id, placements, now=BOOKED_AT)
    ids = list(
        session.scalars(
            sa.select(Fraction.id).where(Fraction.course_id == course.id).order_by(Fraction.number)
        )
    )
    session.rollback()
    return patient.id, course.id, ids


def _world(session: Session, settings: Settings) -> World:
    with time_machine.travel(DEMO_AT.astimezone(UTC), tick=False):
        shown = seed_demo(session, settings, now=DEMO_AT.astimezone(UTC))
    credentials = {
        role: tuple(shown[f"login ({role})"].split(" / ")) for role in ("admin", "scheduler")
    }
    department = session.scalars(
        sa.select(Department).where(Department.name == DEMO_DEPARTMENT)
    ).one()
    linacs = {linac.name: linac.id for linac in department.linacs}
    protocols = dict(session.execute(sa.select(Protocol.code, Protocol.id)).tuples().all())
    department_id = department.id
    session.rollback()
    week = [date(2026, 3, d) for d in (2, 3, 4, 5, 6)]
    with time_machine.travel(BOOKED_AT.astimezone(UTC), tick=False):
        patient_id, completed, completed_ids = _course(
            session, department_id, protocols["liver-5fx"], "BW-101",
            [_at(d, 8) for d in week], linacs["TrueBeam 1"], ready=True,
        )  # fmt: skip
        # Tuesday, Thursday, then today: seven days, all the spine protocol allows.
        _, missed, missed_ids = _course(
            session, department_id, protocols["spine-3fx"], "BW-102",
            [_at(date(2026, 2, 24), 16), _at(date(2026, 2, 26), 16), _at(week[0], 16)],
            linacs["Edge"], ready=True,
        )  # fmt: skip
        unready_patient, unready, _ = _course(
            session, department_id, protocols["liver-5fx"], "BW-103",
            [_at(d, 10) for d in [*week[1:], date(2026, 3, 9)]], linacs["TrueBeam 2"],
            ready=False,
        )  # fmt: skip
    reminder = session.scalars(
        sa.select(Reminder).where(Reminder.course_id == completed).order_by(Reminder.id)
    ).first()
    assert reminder is not None
    reminder.status = ReminderStatus.FAILED
    reminder.status_reason = "30003: Unreachable destination handset"
    session.add(
        InboundMessage(
            provider_id="SM-browser-worklist",
            from_number="+12125550123",
            patient_id=unready_patient,
            body="Running late",
            action="inbox",
            needs_attention=True,
        )
    )
    session.commit()
    return World(
        credentials=credentials,  # type: ignore[arg-type]
        department_id=department_id,
        linac_id=linacs["TrueBeam 1"],
        completed_course=completed,
        completed_fraction=completed_ids[0],
        missed_course=missed,
        missed_fraction=missed_ids[2],
        unready_course=unready,
        patient_id=patient_id,
    )


@pytest.fixture
def world(session: Session, settings: Settings, engine) -> World:  # type: ignore[no-untyped-def]
    return _world(session, settings)


@pytest.fixture
def pinned():  # noqa: ANN201 - a context
    with time_machine.travel(NOW.astimezone(UTC), tick=True):
        yield


def _counts(page: Page) -> dict[str, str]:
    """Menu label -> the count beside it."""
    found = {}
    for item in page.get_by_role("navigation", name="Main").locator("li").all():
        count = item.locator(".nav-count")
        if count.count():
            label = item.get_by_role("link").inner_text()
            found[label] = count.inner_text().split()[0]
    return found


def _summary(page: Page) -> str:
    return " ".join(page.get_by_role("list", name="Summary").inner_text().split())


def test_a_scheduler_works_through_the_day(
    browser: Browser, live_server: LiveServer, world: World, pinned: None, screenshot
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    def shot(page: Page, name: str) -> Path:
        assert page.evaluate(UNLABELLED) == [], name
        return screenshot(page, name)

    watch = PageWatch()
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    watch.attach(page)
    page.set_default_timeout(15_000)
    email, password = world.credentials["scheduler"]
    _sign_in(page, live_server.url, email, password, shot)

    assert page.url == f"{live_server.url}/"
    expect(page.get_by_role("heading", name="Today", level=1)).to_be_visible()
    assert _summary(page) == (
        "2 sessions today 0 completed 2 not yet recorded 1 not ready tomorrow"
    )
    assert _counts(page) == {"Messages": "1", "Inbox": "1"}
    truebeam = page.locator(f"#fraction-{world.completed_fraction}")
    expect(truebeam).to_contain_text("08:00–09:00")
    expect(truebeam).to_contain_text("IB (BW-101)")
    tomorrow = page.get_by_role("table", name="Tomorrow: not ready to treat")
    expect(tomorrow).to_contain_text("IB (BW-103)")
    expect(tomorrow).to_contain_text("plan approval, physics QA")
    shot(page, "worklist")

    with page.expect_navigation():
        truebeam.get_by_role("button", name=re.compile("^Completed")).click()
    assert page.url == f"{live_server.url}/"
    assert _flash(page) == (
        f"Fraction 1 of course {world.completed_course} (Mon 2 Mar 2026 08:00–09:00 EST) "
        "recorded as completed."
    )
    expect(page.locator(f"#fraction-{world.completed_fraction} .badge")).to_have_text("completed")
    assert _summary(page).startswith("2 sessions today 1 completed 1 not yet recorded")

    edge = page.locator(f"#fraction-{world.missed_fraction}")
    edge.get_by_text("Missed…").click()
    edge.get_by_label("Reason").select_option(label="Patient did not attend")
    edge.get_by_label("Not treated in this session").check()
    shot(page, "worklist-missed-form")
    with page.expect_navigation():
        edge.get_by_role("button", name="Record missed").click()
    flash = _flash(page)
    assert flash.startswith(
        f"Fraction 3 of course {world.missed_course} recorded as missed (patient did not "
        "attend). It could not be rebooked within the protocol's rules: the course needs review."
    ), flash
    expect(page.locator(f"#fraction-{world.missed_fraction} .badge")).to_have_text("missed")
    assert _summary(page).startswith("2 sessions today 1 completed 0 not yet recorded")
    assert _counts(page) == {"Downtime": "1", "Messages": "1", "Inbox": "1"}
    expect(page.locator(f"#course-{world.missed_course}")).to_contain_text("needs review")
    shot(page, "worklist-after")

    with page.expect_navigation():
        _nav(page, "Inbox").click()
    browser.audit.check(page)
    with page.expect_navigation():
        page.get_by_role("button", name="Mark handled").click()
    assert _counts(page) == {"Downtime": "1", "Messages": "1"}
    with page.expect_navigation():
        _nav(page, "Today").click()
    expect(page.get_by_role("heading", name="Unread patient replies")).to_be_visible()
    expect(page.locator("#replies")).to_contain_text("No unread replies.")
    context.close()
    assert watch.problems == []


def _staff_pages(world: World) -> list[str]:
    course, fraction = world.completed_course, world.completed_fraction
    return [
        "/",
        "/calendar/week",
        "/calendar/day",
        f"/calendar/linac/{world.linac_id}/week",
        "/patients",
        "/patients/new",
        f"/patients/{world.patient_id}",
        f"/patients/{world.patient_id}/messages",
        f"/courses/{course}",
        f"/courses/{course}/propose",
        f"/courses/{course}/messages",
        f"/courses/{world.unready_course}/pathway",
        f"/fractions/{fraction + 1}/move",
        f"/fractions/{fraction}/missed",
        "/downtime",
        "/downtime/new",
        f"/departments/{world.department_id}/physicist-roster",
        "/messages",
        "/messages/inbox",
        "/messages/problems",
        "/admin",
        f"/admin/departments/{world.department_id}",
        "/admin/linacs",
        f"/admin/linacs/{world.linac_id}",
        "/admin/users",
        "/admin/protocols",
        "/admin/templates",
        "/admin/templates/day_before/sms",
        "/admin/audit",
        "/admin/what-if",
        "/admin/what-if/new",
        "/account/password",
    ]


# The elements reaching past the right edge of the screen (not the window's width: a phone
# widens its layout viewport to the page), for the failure message: the
# innermost first, each named by tag, class and its right edge in CSS pixels.
OVERFLOWING = """(edge) => {
  const past = el => el.getBoundingClientRect().right > edge;
  // A scrolling box clips what it contains, except what is positioned against a box
  // outside it (an absolutely positioned element with no positioned ancestor inside).
  const clipped = el => {
    if (["absolute", "fixed"].includes(getComputedStyle(el).position)) return false;
    for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
      if (getComputedStyle(up).overflowX !== "visible") return true;
    }
    return false;
  };
  return Array.from(document.querySelectorAll("body *"))
    .filter(el => past(el) && !clipped(el))
    .filter(el => !Array.from(el.children).some(c => past(c) && !clipped(c)))
    .slice(0, 8)
    .map(el => `${el.tagName.toLowerCase()}.${el.className} ${el.getBoundingClientRect().right}`);
}"""


def _width(page: Page) -> int:
    return page.evaluate("document.scrollingElement.scrollWidth")


def _fits(page: Page) -> bool:
    return _width(page) <= PHONE["width"] + 1


def test_staff_pages_fit_a_phone(
    browser: Browser, live_server: LiveServer, world: World, pinned: None, screenshot
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    watch = PageWatch()
    email, password = world.credentials["admin"]
    context = browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True, locale="en-US"
    )
    page = context.new_page()
    watch.attach(page)
    page.set_default_timeout(15_000)
    _sign_in(page, live_server.url, email, password, screenshot)

    menu = page.get_by_role("button", name="Menu")
    nav = page.get_by_role("navigation", name="Main")
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(nav).to_be_hidden()
    menu.tap()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(nav).to_be_visible()
    assert _fits(page), page.evaluate(OVERFLOWING, PHONE["width"] + 1)
    screenshot(page, "phone-menu-open")
    page.keyboard.press("Escape")
    expect(nav).to_be_hidden()
    menu.tap()
    with page.expect_navigation():
        _nav(page, "Calendar").tap()
    assert page.url.endswith("/calendar/week")

    wide = {}
    for path in _staff_pages(world):
        response = page.goto(f"{live_server.url}{path}")
        assert response is not None and response.status == 200, path
        browser.audit.check(page)
        if not _fits(page):
            wide[path] = (_width(page), page.evaluate(OVERFLOWING, PHONE["width"] + 1))
            screenshot(page, "phone-too-wide-" + re.sub(r"\W+", "-", path).strip("-"))
    assert wide == {}
    screenshot(page, "phone-last-page")
    context.close()

    # Without JavaScript the menu stays open, wrapped, and the page still fits.
    plain = browser.new_context(viewport=PHONE, java_script_enabled=False, locale="en-US")
    page = plain.new_page()
    page.set_default_timeout(15_000)
    _sign_in(page, live_server.url, email, password, screenshot)
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    expect(page.get_by_role("button", name="Menu")).to_be_hidden()
    assert _fits(page), page.evaluate(OVERFLOWING, PHONE["width"] + 1)
    screenshot(page, "phone-without-javascript")
    plain.close()
    assert watch.problems == []
