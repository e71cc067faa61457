"""Keeping a course whole through every change, in a real browser.

A scheduler books a liver 5-fraction course, cancels a fraction and rebooks it from the course
page; moves another to a typed time that breaks the protocol's spacing, with a clinical
reason, and still gets one-click alternatives for the course's other fractions. A second
course, booked about ten weeks ahead, gets alternatives on its move page too (another time
the same day among them); a downtime over it is extended with a preview before it is applied,
then removed with its own preview.

As in test_flows: every form is driven through its label, every page is screenshotted after a
check that each control has a name, and no page may log a console error or fail to load.
The flow takes about 12 s, so PostgreSQL runs it on the real clock only; SQLite covers every
pinned instant.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from scheduler.demo import DEMO_DEPARTMENT, seed_demo
from tests.browser.test_flows import (
    MRN,
    TZ,
    UNLABELLED,
    Booked,
    PageWatch,
    _create_patient_with_the_keyboard,
    _create_ready_course,
    _earliest_monday,
    _flash,
    _fractions,
    _nav,
    _propose_and_book_with_the_keyboard,
    _sign_in,
    _tab_to,
)

if TYPE_CHECKING:
    from pathlib import Path

    from playwright.sync_api import Locator, Page

    from tests.browser.test_flows import Shot

HELD = ("tentative", "booked", "confirmed")
# Added to next week's Monday: a course about ten weeks out, far past the four weeks around
# today that a search anchored on today would cover.
FAR_AHEAD = timedelta(weeks=9)


def _held(page: Page) -> dict[int, Booked]:
    """The course page's fractions still to come, by number (cancelled rows stay listed)."""
    held = [f for f in _fractions(page) if f.status in HELD]
    by_number = {f.number: f for f in held}
    assert len(by_number) == len(held), held  # one held fraction per position
    return by_number


def _short_day(day: date) -> str:
    """A day as the rebooking page's tables write it: ``Mon 14 Dec``."""
    return f"{day:%a} {day.day} {day:%b}"


def _long_day(day: date) -> str:
    """A day as the fraction spans write it: ``14 Dec 2026``."""
    return f"{day.day} {day:%b %Y}"


def _span_start(day: date, clock: str) -> str:
    """How a local time begins on the pages: ``Mon 14 Dec 2026 11:00``, then what follows."""
    return f"{day:%a} {_long_day(day)} {clock}"


def _later(clock: str, minutes: int) -> str:
    moved = datetime.strptime(clock, "%H:%M") + timedelta(minutes=minutes)
    return f"{moved:%H:%M}"


def _status(page: Page) -> str:
    return page.locator("p.course-status strong").inner_text()


def _expect_only_refusal(watch: PageWatch, url: str) -> None:
    """A refused form answers 422 on purpose: that response (which Chromium also logs as a
    console error) and nothing else went wrong."""
    assert len(watch.problems) == 2, watch.problems
    response, console = watch.problems
    assert response == f"HTTP 422 for {url}", response
    assert console.startswith(
        "console error: Failed to load resource: the server responded with a status of 422 "
    ), console
    assert f"'url': '{url}'" in console, console
    watch.problems.clear()


def _cancel_and_rebook(page: Page, course_id: int, shot: Shot) -> Booked:
    """Cancel fraction 3, see the course incomplete, rebook it from the course page."""
    before = _held(page)
    cancelled = before[3]
    with page.expect_navigation():
        page.get_by_role("link", name="Cancel fraction 3…", exact=True).click()
    assert page.get_by_role("heading", name="Cancel fraction 3?").is_visible()
    shot(page, "cancel-fraction")
    page.get_by_label("Reason", exact=True).fill("Browser test: patient admitted to hospital")
    with page.expect_navigation():
        page.get_by_role("button", name="Cancel fraction 3", exact=True).click()
    flash = _flash(page)
    assert flash.startswith("Cancelled fraction 3 ("), flash
    assert "1 cancellation notice (SMS)" in flash, flash
    assert page.url.endswith(f"/courses/{course_id}")
    assert _status(page) == "Incomplete"
    incomplete = page.locator("#incomplete")
    assert incomplete.inner_text().startswith(
        "Incomplete: 4 of 5 fractions held; fraction 3 to rebook"
    ), incomplete.inner_text()
    rows = _fractions(page)
    assert [f.status for f in rows if f.number == 3] == ["cancelled"], rows
    assert sorted(_held(page)) == [1, 2, 4, 5]
    assert page.get_by_role("link", name="Move fraction 3", exact=True).count() == 0
    shot(page, "course-incomplete")

    with page.expect_navigation():
        incomplete.get_by_role("link", name="Rebook missing fraction", exact=True).click()
    assert page.url.endswith(f"/courses/{course_id}/rebook")
    heading = page.get_by_role("heading", name=re.compile(r"^\d+ ways? to rebook fraction 3$"))
    assert heading.is_visible(), page.locator("main").inner_text()
    options = page.locator("section", has=page.get_by_role("heading", name=re.compile("^Option")))
    assert options.count() >= 1
    shot(page, "rebook")
    # Each option places the missing fraction in a row marked new; the fractions held stay.
    offered = []
    for index in range(options.count()):
        option = options.nth(index)
        new = option.locator("table.proposal tbody tr.status-booked")
        assert new.count() == 1, new.all_inner_texts()
        cells = [c.inner_text().strip() for c in new.locator("th, td").all()]
        number, day, times, linac, badge = cells
        assert (number, badge) == ("3", "new"), cells
        offered.append((index + 1, day, times, linac))
    # Prefer a placement other than the one given up, so the booked one is visibly the choice.
    old = (_short_day(cancelled.day), f"{cancelled.start}–{cancelled.end}", cancelled.linac)
    chosen = next(
        (o for o in offered if (o[1], o[2][:11], o[3]) != old),
        offered[0],
    )
    number, day, times, linac = chosen
    with page.expect_navigation():
        page.get_by_role("button", name=f"Book option {number}", exact=True).click()
    flash = _flash(page)
    assert flash.startswith("Rebooked fraction 3 for "), flash
    assert "The course is complete again." in flash, flash
    # The patient is told of the new session (its reminders depend on the hour: not asserted).
    assert "1 change notice (SMS)" in flash, flash
    assert _status(page) == "Booked"
    assert page.locator("#incomplete").count() == 0
    held = _held(page)
    assert sorted(held) == [1, 2, 3, 4, 5]
    rebooked = held[3]
    assert rebooked.status == "booked"
    assert (_short_day(rebooked.day), rebooked.linac) == (day, linac), (rebooked, chosen)
    assert times.startswith(f"{rebooked.start}–{rebooked.end}"), (rebooked, chosen)
    # The cancelled session stays on record beside its replacement.
    assert [f.status for f in _fractions(page) if f.number == 3] == ["cancelled", "booked"]
    shot(page, "course-rebooked")
    return rebooked


def _override_then_alternatives(page: Page, watch: PageWatch, shot: Shot) -> dict[int, Booked]:
    """Move fraction 2 to fraction 1's day (too close: the spacing rules break) with a
    clinical reason, then move fraction 4 with a one-click alternative."""
    held = _held(page)
    first = held[1]
    # Hours after fraction 1 ends, and inside opening hours for a 45-minute session.
    typed = min(_later(first.start, 4 * 60), "18:00")
    assert typed >= first.end, (first, typed)
    with page.expect_navigation():
        page.get_by_role("link", name="Move fraction 2", exact=True).click()
    move_url = page.url
    shot(page, "move-2")
    page.get_by_label("Date", exact=True).fill(first.day.isoformat())
    page.get_by_label("Local start time", exact=True).fill(typed)
    with page.expect_navigation():
        page.get_by_role("button", name="Move fraction 2", exact=True).click()
    _expect_only_refusal(watch, move_url)
    alert = page.get_by_role("alert").filter(has=page.get_by_role("heading", name="Rules this"))
    assert alert.count() == 1
    broken = alert.inner_text()
    assert "h apart; at least 20 h needed" in broken, broken
    assert "cannot be overridden" not in broken, broken
    # The typed values survive the refusal.
    assert page.get_by_label("Date", exact=True).input_value() == first.day.isoformat()
    assert page.get_by_label("Local start time", exact=True).input_value() == typed
    shot(page, "move-2-rules-broken")
    # The reason and the override are reachable from the keyboard, below the rules shown.
    reason = "Browser test: transport only available on that day"
    _tab_to(page, page.get_by_label("Clinical reason for the override", exact=True))
    page.keyboard.type(reason)
    _tab_to(page, page.get_by_role("button", name="Move anyway", exact=True))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    flash = _flash(page)
    assert flash.startswith(f"Moved fraction 2 to {_span_start(first.day, typed)}–"), flash
    assert "The rule override and its reason are recorded." in flash, flash
    assert "1 change notice (SMS)" in flash, flash
    held = _held(page)
    assert (held[2].day, held[2].start) == (first.day, typed), held[2]
    row = page.locator(
        "table.fractions tbody tr", has=page.locator("th", has_text=re.compile("^2/5$"))
    )
    assert row.locator("td").nth(4).inner_text() == reason
    shot(page, "course-overridden")

    # The course now breaks a rule on purpose; its other fractions can still move in a click.
    fourth = held[4]
    with page.expect_navigation():
        page.get_by_role("link", name="Move fraction 4", exact=True).click()
    buttons = page.locator("ul.alternatives").get_by_role("button")
    assert buttons.count() > 0, page.locator("main").inner_text()
    kinds = page.locator("ul.alternatives li span.muted").all_inner_texts()
    assert len(kinds) == buttons.count() and all(kinds), kinds
    shot(page, "move-4")
    label = buttons.first.inner_text()
    with page.expect_navigation():
        buttons.first.click()
    flash = _flash(page)
    assert flash.startswith("Moved fraction 4 to "), flash
    assert label.removeprefix("Move to ") in flash, (label, flash)
    assert "override" not in flash, flash
    held = _held(page)
    assert (held[4].day, held[4].start, held[4].linac) != (
        fourth.day,
        fourth.start,
        fourth.linac,
    )
    # The override recorded on fraction 2 stays with it.
    assert row.locator("td").nth(4).inner_text() == reason
    shot(page, "course-moved-after-override")
    return held


def _same_day_alternative(page: Page, shot: Shot) -> Booked:
    """Far ahead, fraction 3 still gets alternatives; take another time on its own day."""
    third = _held(page)[3]
    with page.expect_navigation():
        page.get_by_role("link", name="Move fraction 3", exact=True).click()
    alternatives = page.locator("ul.alternatives li")
    assert alternatives.count() > 0, page.locator("main").inner_text()
    same_day = alternatives.filter(
        has=page.locator("span.muted", has_text=re.compile("^same day, another time$"))
    )
    assert same_day.count() >= 1, alternatives.all_inner_texts()
    button = same_day.first.get_by_role("button")
    label = button.inner_text()
    assert label.startswith(f"Move to {_span_start(third.day, '')}"), label
    shot(page, "far-move")
    with page.expect_navigation():
        button.click()
    flash = _flash(page)
    assert flash.startswith("Moved fraction 3 to "), flash
    assert label.removeprefix("Move to ") in flash, (label, flash)
    moved = _held(page)[3]
    assert moved.day == third.day and moved.start != third.start, (third, moved)
    shot(page, "far-course-moved")
    return moved


def _background(element: Locator) -> str:
    return element.evaluate("el => getComputedStyle(el).backgroundColor")


def _downtime_row(page: Page, reason: str) -> Locator:
    upcoming = page.locator("section", has=page.get_by_role("heading", name="Current and upcoming"))
    return upcoming.locator("tbody tr", has_text=reason)


def _extend_then_remove_downtime(
    page: Page, url: str, watch: PageWatch, course_id: int, target: Booked, shot: Shot
) -> None:
    """A planned downtime just after ``target``'s session; extended back over it (preview,
    then apply), then removed (preview, then apply)."""
    reason = "Browser test: beam calibration"
    until = _later(target.end, 60)
    with page.expect_navigation():
        _nav(page, "Downtime").click()
    with page.expect_navigation():
        page.get_by_role("link", name="New downtime").click()
    page.get_by_label("Linac").select_option(label=f"{target.linac} ({DEMO_DEPARTMENT}, {TZ})")
    page.get_by_label("From (local date and time)").fill(f"{target.day.isoformat()}T{target.end}")
    page.get_by_label("Until (local date and time)").fill(f"{target.day.isoformat()}T{until}")
    page.get_by_label("Planned (QA, service)").check()
    page.get_by_label("Reason", exact=True).fill(reason)
    shot(page, "downtime-new")
    with page.expect_navigation():
        page.get_by_role("button", name="Preview re-plan").click()
    assert page.get_by_role("heading", name="0 fractions would move").is_visible()
    shot(page, "downtime-new-preview")
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile("^Apply")).click()
    flash = _flash(page)
    assert flash == "0 fractions moved, 0 need a human; 0 change notices queued.", flash
    row = _downtime_row(page, reason)
    assert row.count() == 1, _downtime_row(page, "").all_inner_texts()
    shot(page, "downtime-list")

    # Extend it: the service starts at the session's time instead.
    with page.expect_navigation():
        row.get_by_role("link", name=re.compile(r"^Edit downtime of ")).click()
    start = page.get_by_label("From (local date and time)")
    assert start.input_value() == f"{target.day.isoformat()}T{target.end}"
    assert page.get_by_label("Reason", exact=True).input_value() == reason
    start.fill(f"{target.day.isoformat()}T{target.start}")
    shot(page, "downtime-edit")
    with page.expect_navigation():
        page.get_by_role("button", name="Preview re-plan").click()
    assert page.get_by_role("heading", name="Preview the changed downtime").is_visible()
    assert "Nothing has been stored yet." in page.locator("main").inner_text()
    assert page.get_by_role("heading", name="1 fraction would move").is_visible()
    assert page.get_by_role("heading", name="0 fractions cannot be re-planned").is_visible()
    moving = page.locator("tr", has_text=MRN)
    assert moving.count() == 1
    cells = moving.locator("td").all_inner_texts()
    assert cells[1] == str(target.number), cells
    assert cells[2].startswith(f"{target.linac} "), cells
    shot(page, "downtime-edit-preview")
    # Nothing is stored yet: the course, seen in another tab, still holds the fraction there.
    other = page.context.new_page()
    watch.attach(other)
    other.goto(f"{url}/courses/{course_id}")
    assert _held(other)[target.number] == target
    shot(other, "far-course-during-preview")
    other.close()
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile("^Apply")).click()
    flash = _flash(page)
    assert flash.startswith(
        "Downtime updated: 1 fraction moved, 0 need a human; 1 change notice queued."
    ), flash
    stored_from = _downtime_row(page, reason).locator("td").nth(1).inner_text()
    assert stored_from.startswith(_span_start(target.day, f"{target.start} ")), stored_from
    shot(page, "downtime-extended")

    page.goto(f"{url}/courses/{course_id}")
    replanned = _held(page)[target.number]
    assert (replanned.day, replanned.start, replanned.linac) != (
        target.day,
        target.start,
        target.linac,
    )
    shot(page, "far-course-replanned")

    # Remove it: the preview says who could go back; nobody is moved back.
    with page.expect_navigation():
        _nav(page, "Downtime").click()
    with page.expect_navigation():
        _downtime_row(page, reason).get_by_role(
            "link", name=re.compile(r"^Remove downtime of ")
        ).click()
    assert page.get_by_role("heading", name="Remove downtime").is_visible()
    assert "Nothing has been removed yet." in page.locator("main").inner_text()
    assert page.get_by_role(
        "heading", name="1 fraction could return to their own place"
    ).is_visible()
    back = page.locator("tr", has_text=MRN)
    assert back.count() == 1
    cells = back.locator("td").all_inner_texts()
    assert cells[1] == str(target.number), cells
    assert cells[3].startswith(f"{target.linac} "), cells
    # The way out must not look like the action it declines.
    remove = page.get_by_role("button", name="Remove the downtime", exact=True)
    keep = page.get_by_role("link", name="Keep it", exact=True)
    assert _background(keep) != _background(remove)
    shot(page, "downtime-remove-preview")
    with page.expect_navigation():
        page.get_by_role("button", name="Remove the downtime", exact=True).click()
    flash = _flash(page)
    assert flash == (
        "Downtime removed; nobody was moved back. 1 fraction could return to their own place."
    ), flash
    assert _downtime_row(page, reason).count() == 0
    shot(page, "downtime-removed")
    page.goto(f"{url}/courses/{course_id}")
    assert _held(page)[target.number] == replanned
    shot(page, "far-course-after-removal")


@pytest.mark.pinned_dates(postgresql=["today"])
def test_cancel_rebook_override_and_change_downtime_in_a_browser(
    browser, live_server, session, settings, screenshot, now
) -> None:
    from playwright.sync_api import expect

    def shot(page: Page, name: str) -> Path:
        """Every page visited: each form control has a label, then the screenshot (named
        apart from test_flows' pictures of the same pages)."""
        assert page.evaluate(UNLABELLED) == [], name
        return screenshot(page, f"repair-{name}")

    shown = seed_demo(session, settings, now=now)
    email, password = shown["login (scheduler)"].split(" / ")
    earliest = _earliest_monday(now)
    watch = PageWatch()

    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    watch.attach(page)
    page.set_default_timeout(15_000)
    _sign_in(page, live_server.url, email, password, shot)
    expect(page.get_by_text("Signed in as Demo Scheduler")).to_be_visible()
    _create_patient_with_the_keyboard(page, shot)

    # A course starting next week: cancel and rebook, override, alternatives after it.
    near = _create_ready_course(page, shot)
    _propose_and_book_with_the_keyboard(page, earliest, shot)
    _cancel_and_rebook(page, near, shot)
    _override_then_alternatives(page, watch, shot)

    # A second course for the same patient, about ten weeks out.
    with page.expect_navigation():
        page.get_by_role("link", name="← Byron-Test, Ada", exact=True).click()
    far = _create_ready_course(page, lambda p, name: shot(p, f"far-{name}"))
    _propose_and_book_with_the_keyboard(
        page, earliest + FAR_AHEAD, lambda p, name: shot(p, f"far-{name}")
    )
    _same_day_alternative(page, shot)
    _extend_then_remove_downtime(page, live_server.url, watch, far, _held(page)[4], shot)

    context.close()
    assert watch.problems == []
