"""The whole scheduling flow in a real browser, on both database backends.

Sign in, create a patient (keyboard only), create a liver 5-fraction course, record its
readiness, propose and book (keyboard only), find the fractions on the week calendar, move one
with a one-click alternative, take its linac down over another fraction and apply the re-plan,
then open the patient's link on a phone and confirm the next appointment.

Every form is driven through its label, every page is screenshotted, and no page may log a
console error (a Content-Security-Policy violation is one) or throw.

The flow runs on the real clock and under every pinned instant (a DST week, holidays, New
Year's Eve late at night, a Saturday): the demo department's own courses then sit in the same
weeks as the course under test, so every calendar block is found by its course's link, never
by its label alone. It takes about 10 s a run, so PostgreSQL runs it on two instants only;
SQLite covers the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from scheduler.demo import DEMO_DEPARTMENT, seed_demo
from scheduler.links import issue_patient_link, patient_link_url

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from playwright.sync_api import ConsoleMessage, Locator, Page, Response

    Shot = Callable[[Page, str], Path]

TZ = "America/New_York"  # the demo department's zone
MRN = "BT-4242"
PROTOCOL = "Liver SBRT, 5 fractions (every 24-72 h) (5 fractions)"
# Form controls a screen reader could not name: no <label>, aria-label or aria-labelledby
# (a button: no text either).
UNLABELLED = """() => Array.from(
  document.querySelectorAll("input:not([type=hidden]), select, textarea, button")
).filter(el => el.tagName === "BUTTON"
  ? !el.textContent.trim() && !el.getAttribute("aria-label")
  : !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
    && !el.getAttribute("aria-labelledby")
).map(el => el.outerHTML.slice(0, 160))"""
SPAN = re.compile(r"^\w{3} (\d{1,2} \w{3} \d{4}) (\d{2}:\d{2})–(\d{2}:\d{2}) \w+$")


@dataclass(frozen=True)
class Booked:
    """One row of the course page's fraction table."""

    number: int
    linac: str
    day: date
    start: str  # local HH:MM
    end: str
    status: str


class PageWatch:
    """Console errors (CSP violations are logged as errors), uncaught exceptions and failed
    responses of every page opened in a context."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        if message.location.get("url", "").endswith("/favicon.ico"):
            return  # browsers ask for the icon on their own; the app has none (and needs none)
        if message.type == "error" or "Content Security Policy" in text:
            self.problems.append(f"console {message.type}: {text} ({message.location})")

    def _response(self, response: Response) -> None:
        # Any failed request other than that icon is a problem.
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            self.problems.append(f"HTTP {response.status} for {response.url}")


def _earliest_monday(now: datetime) -> date:
    """The first Monday at least a week after ``now`` (department time): the proposals then
    do not depend on the time of day the test runs, and a course of five fits in one week
    unless a holiday intervenes."""
    day = now.astimezone(ZoneInfo(TZ)).date() + timedelta(days=7)
    return day + timedelta(days=(7 - day.weekday()) % 7)


def _tab_to(page: Page, target: Locator, limit: int = 60) -> None:
    """Press Tab until ``target`` has the focus: proves it is reachable from the keyboard."""
    for _ in range(limit):
        if target.evaluate("el => el === document.activeElement"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{target} not reachable with Tab in {limit} presses")


def _nav(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)


def _flash(page: Page) -> str:
    return page.locator("p.flash").first.inner_text()


def _fractions(page: Page) -> list[Booked]:
    rows = []
    for row in page.locator("table.fractions tbody tr").all():
        number = int(row.locator("th").inner_text().split("/")[0])
        cells = [c.inner_text().strip() for c in row.locator("td").all()]
        match = SPAN.match(cells[1])
        assert match, cells[1]
        day = datetime.strptime(match[1], "%d %b %Y").date()
        status = cells[2].split()[0]
        rows.append(Booked(number, cells[0], day, match[2], match[3], status))
    return sorted(rows, key=lambda f: f.number)


def _sign_in(page: Page, url: str, email: str, password: str, shot: Shot) -> None:
    page.goto(f"{url}/login")
    shot(page, "sign-in")
    _tab_to(page, page.get_by_label("Email"))
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    shot(page, "home")


def _create_patient_with_the_keyboard(page: Page, shot: Shot) -> int:
    with page.expect_navigation():
        _nav(page, "Patients").click()
    shot(page, "patients")
    with page.expect_navigation():
        page.get_by_role("link", name="New patient").click()
    # From here on, keyboard only.
    page.keyboard.press("Tab")
    _tab_to(page, page.get_by_label("MRN", exact=True))
    page.keyboard.type(MRN)
    _tab_to(page, page.get_by_label("Given name", exact=True))
    page.keyboard.type("Ada")
    _tab_to(page, page.get_by_label("Family name", exact=True))
    page.keyboard.type("Byron-Test")
    birth = page.get_by_label("Date of birth", exact=True)
    _tab_to(page, birth)
    birth.fill("1958-04-17")  # typing into the date widget depends on the locale
    country = page.get_by_label("Country, when the number has no “+”")
    assert country.input_value() == "US"
    _tab_to(page, page.get_by_label("Number", exact=True))
    page.keyboard.type("(212) 555-0142")
    assert page.get_by_label("Language for messages").input_value() == "en"
    sms = page.get_by_label("Agrees to SMS reminders", exact=False)
    _tab_to(page, sms)
    page.keyboard.press("Space")
    assert sms.is_checked()
    shot(page, "patient-new")
    _tab_to(page, page.get_by_role("button", name="Create patient"))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "E.164" in _flash(page), _flash(page)
    phone = page.locator("dl.details dt", has_text="Phone").locator(
        "xpath=following-sibling::dd[1]"
    )
    assert phone.inner_text() == "+12125550142"
    assert "Byron-Test, Ada" in page.get_by_role("heading", level=1).inner_text()
    shot(page, "patient")
    found = re.search(r"/patients/(\d+)$", page.url)
    assert found, page.url
    return int(found[1])


def _create_ready_course(page: Page, shot: Shot) -> int:
    with page.expect_navigation():
        page.get_by_role("link", name="New course").click()
    page.get_by_label("Protocol").select_option(label=PROTOCOL)
    shot(page, "course-new")
    with page.expect_navigation():
        page.get_by_role("button", name="Create course").click()
    assert "Course created" in _flash(page)
    found = re.search(r"/courses/(\d+)$", page.url)
    assert found, page.url
    # Fraction 1 is only bookable (and so confirmable) once the plan is approved and QA'd:
    # both ticked on the one readiness form, at the blank (now) time.
    for step in ("Plan approval", "Physics QA"):
        page.get_by_label(f"Record {step}", exact=True).check()
    assert page.get_by_label("Done at", exact=False).input_value() == ""
    with page.expect_navigation():
        page.get_by_role("button", name="Save readiness").click()
    assert "Plan approval and Physics QA recorded" in _flash(page)
    assert "the course is ready to treat" in _flash(page)
    shot(page, "course")
    return int(found[1])


def _propose_and_book_with_the_keyboard(page: Page, earliest: date, shot: Shot) -> list[Booked]:
    with page.expect_navigation():
        page.get_by_role("link", name="Propose schedules").first.click()
    # Keyboard only: the date, the Propose button, then the first option's Book button.
    field = page.get_by_label("Earliest first fraction")
    _tab_to(page, field)
    field.fill(earliest.isoformat())  # typing into the date widget depends on the locale
    _tab_to(page, page.get_by_role("button", name="Propose", exact=True))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert f"earliest={earliest.isoformat()}" in page.url
    option = page.locator("section", has=page.get_by_role("heading", name=re.compile("^Option 1")))
    rows = option.locator("table.proposal tbody tr").all()
    assert len(rows) == 5
    proposed = [tuple(c.inner_text().strip() for c in row.locator("th, td").all()) for row in rows]
    shot(page, "proposals")
    _tab_to(page, option.get_by_role("button", name="Book option 1"))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    flash = _flash(page)
    assert flash.startswith("Booked 5 fractions"), flash
    assert "Queued messages: 1 confirmation (SMS)" in flash, flash
    assert "tentative" not in flash, flash
    shot(page, "course-booked")
    booked = _fractions(page)
    assert [f.number for f in booked] == [1, 2, 3, 4, 5]
    assert all(f.status == "booked" for f in booked), booked
    assert all(f.day >= earliest for f in booked)
    # What was booked is what option 1 offered: same machines, same start times.
    for (_number, _day, times, linac), f in zip(proposed, booked, strict=True):
        assert linac == f.linac and times.startswith(f"{f.start}–{f.end}"), (times, f)
    return booked


def _block(within: Page | Locator, course_id: int, number: int) -> Locator:
    """The calendar block of fraction ``number`` of exactly this course: other courses (the
    demo department's) have blocks labelled with the same fraction number."""
    return within.locator(f'a.blk[href="/courses/{course_id}"]', has_text=f"fraction {number}/5")


def _check_calendar(page: Page, url: str, course_id: int, booked: list[Booked], shot: Shot) -> None:
    mondays = sorted({f.day - timedelta(days=f.day.weekday()) for f in booked})
    for index, monday in enumerate(mondays):
        page.goto(f"{url}/calendar/week?start={monday.isoformat()}")
        # Linac columns by name, their ids from the header links to each linac's week.
        ids = {}
        for link in page.locator("table.cal-week thead a").all():
            found = re.search(r"/calendar/linac/(\d+)/week", link.get_attribute("href") or "")
            if found:
                ids[link.inner_text().strip()] = found[1]
        for f in booked:
            if f.day - timedelta(days=f.day.weekday()) != monday:
                continue
            cell = page.locator(f'td[data-cell="{f.day.isoformat()}/{ids[f.linac]}"]')
            block = _block(cell, course_id, f.number)
            assert block.count() == 1, (f, cell.inner_text())
            assert MRN in block.inner_text()
            assert f"{f.start}–{f.end}" in block.inner_text()
        shot(page, "calendar-week" if index == 0 else f"calendar-week-{index + 1}")


def _move_one(
    page: Page, url: str, course_id: int, booked: list[Booked], shot: Shot
) -> tuple[Booked, list[Booked]]:
    moving = booked[2]  # fraction 3: neighbours on both sides
    # From its block on the week calendar (the course may span two weeks around a holiday).
    monday = moving.day - timedelta(days=moving.day.weekday())
    if f"start={monday.isoformat()}" not in page.url:
        page.goto(f"{url}/calendar/week?start={monday.isoformat()}")
    block = _block(page, course_id, moving.number)
    assert block.count() == 1, block.all_inner_texts()
    block.click()
    page.wait_for_url(f"**/courses/{course_id}")
    with page.expect_navigation():
        page.get_by_role("link", name=f"Move fraction {moving.number}").click()
    shot(page, "move")
    buttons = page.locator("ul.alternatives").get_by_role("button")
    assert buttons.count() > 0
    # Prefer a time on a linac that holds another fraction, so a downtime there covers one.
    others = {f.linac for f in booked if f.number not in (1, moving.number)}
    choice = buttons.first
    for button in buttons.all():
        if button.inner_text().rsplit(" on ", 1)[-1] in others:
            choice = button
            break
    label = choice.inner_text()
    with page.expect_navigation():
        choice.click()
    flash = _flash(page)
    assert flash.startswith(f"Moved fraction {moving.number} to "), flash
    assert label.removeprefix("Move to ") in flash, (label, flash)
    assert "1 change notice (SMS)" in flash, flash
    shot(page, "course-moved")
    after = _fractions(page)
    moved = after[moving.number - 1]
    assert (moved.day, moved.start, moved.linac) != (moving.day, moving.start, moving.linac)
    return moved, after


def _downtime_over_another(
    page: Page, moved: Booked, fractions: list[Booked], shot: Shot
) -> Booked:
    candidates = [f for f in fractions if f.number not in (1, moved.number)]
    target = next((f for f in candidates if f.linac == moved.linac), candidates[-1])
    with page.expect_navigation():
        _nav(page, "Downtime").click()
    with page.expect_navigation():
        page.get_by_role("link", name="New downtime").click()
    page.get_by_label("Linac").select_option(label=f"{target.linac} ({DEMO_DEPARTMENT}, {TZ})")
    page.get_by_label("From (local date and time)").fill(f"{target.day.isoformat()}T{target.start}")
    page.get_by_label("Until (local date and time)").fill(f"{target.day.isoformat()}T{target.end}")
    page.get_by_label("Unplanned (fault)").check()
    page.get_by_label("Reason", exact=True).fill("Browser test: imaging panel fault")
    with page.expect_navigation():
        page.get_by_role("button", name="Preview re-plan").click()
    assert page.get_by_role("heading", name="1 fraction would move").is_visible()
    assert page.get_by_role("heading", name="0 fractions cannot be re-planned").is_visible()
    row = page.locator("tr", has_text=MRN)
    assert row.count() == 1
    assert row.locator("td").nth(1).inner_text() == str(target.number)
    shot(page, "downtime-preview")
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile("^Apply")).click()
    flash = _flash(page)
    # The outcome counts that follow depend on which time the re-plan found.
    assert flash.startswith("1 fraction moved, 0 need a human; 1 change notice queued."), flash
    shot(page, "downtime-applied")
    return target


@pytest.mark.pinned_dates(postgresql=["today", "christmas-week"])
def test_book_move_replan_and_confirm_in_a_browser(
    browser, live_server, session, settings, screenshot, now
) -> None:
    from playwright.sync_api import expect

    def shot(page: Page, name: str) -> Path:
        """Every page visited: each form control has a label, then the screenshot."""
        assert page.evaluate(UNLABELLED) == [], name
        return screenshot(page, name)

    # The demo's own courses start tomorrow, in the weeks the course under test is booked in.
    shown = seed_demo(session, settings, now=now)
    email, password = shown["login (scheduler)"].split(" / ")
    earliest = _earliest_monday(now)
    watch = PageWatch()

    staff = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = staff.new_page()
    watch.attach(page)
    page.set_default_timeout(15_000)
    _sign_in(page, live_server.url, email, password, shot)
    expect(page.get_by_text("Signed in as Demo Scheduler")).to_be_visible()

    patient_id = _create_patient_with_the_keyboard(page, shot)
    course_id = _create_ready_course(page, shot)
    booked = _propose_and_book_with_the_keyboard(page, earliest, shot)
    _check_calendar(page, live_server.url, course_id, booked, shot)
    moved, fractions = _move_one(page, live_server.url, course_id, booked, shot)
    target = _downtime_over_another(page, moved, fractions, shot)

    page.goto(f"{live_server.url}/courses/{course_id}")
    replanned = _fractions(page)[target.number - 1]
    assert (replanned.day, replanned.start, replanned.linac) != (
        target.day,
        target.start,
        target.linac,
    )
    assert replanned.status == "booked"
    shot(page, "course-replanned")
    staff.close()

    # The patient's link, as an SMS would carry it, opened on a phone.
    token = issue_patient_link(
        session, patient_id=patient_id, course_id=course_id, now=datetime.now(UTC)
    )
    session.commit()
    link = patient_link_url(live_server.url, token)
    phone = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="en-US",
    )
    mobile = phone.new_page()
    watch.attach(mobile)
    mobile.set_default_timeout(15_000)
    mobile.goto(link)
    expect(mobile.get_by_role("heading", name="Your next appointment")).to_be_visible()
    expect(mobile.locator(".patient-schedule li")).to_have_count(5)
    confirm = mobile.get_by_role("button", name="Confirm my next appointment")
    expect(confirm).to_be_visible()
    # Nothing wider than the phone's screen: no sideways scrolling.
    assert mobile.evaluate("document.documentElement.scrollWidth") <= 390
    shot(mobile, "patient-link-phone")
    with mobile.expect_navigation():
        confirm.tap()
    expect(mobile.get_by_role("status")).to_have_text("Thank you! Your appointment is confirmed.")
    expect(mobile.get_by_role("button", name="Confirm my next appointment")).to_have_count(0)
    first = mobile.locator(".patient-schedule li").first
    expect(first.locator(".patient-confirmed")).to_have_text("confirmed")
    shot(mobile, "patient-link-confirmed")
    phone.close()

    assert watch.problems == []
