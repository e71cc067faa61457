"""Downtime re-plan for the whole department: own times kept first, then the rest placed
where they disturb patients least; editing and deleting a downtime. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from scheduler.errors import InvalidInput, NotFound
from scheduler.models import Course, CourseStatus, Downtime, Fraction
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

NY = ZoneInfo("America/New_York")
NOW = f.MONDAY  # Mon 2 Mar 2026; the courses below run two weeks later
WEEK = date(2026, 3, 16)  # a Monday, after the spring-forward change
WEDNESDAY, FRIDAY = WEEK + timedelta(days=2), WEEK + timedelta(days=4)


def local(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), NY).astimezone(UTC)


def book_week(session, w, linac_key: str, hour: int, *, priority: int = 3) -> int:
    """A liver course Mon-Fri of WEEK at ``hour`` local on one linac."""
    course = f.course(session, f.patient(session, w["department"]), w["liver"])
    course.priority = priority
    session.commit()
    linac_id = w["linacs"][linac_key].id
    placements = [
        Placement(n + 1, linac_id, local(WEEK + timedelta(days=n), hour)) for n in range(5)
    ]
    services.book_course(session, course.id, placements, now=NOW)
    return course.id


def fractions_of(session, course_id: int) -> dict[int, Fraction]:
    session.expire_all()
    rows = session.scalars(sa.select(Fraction).where(Fraction.course_id == course_id))
    return {x.number: x for x in rows if x.is_active}


def two_day_downtime(session, w, *, preview: bool = False) -> services.DowntimeReport:
    return services.add_downtime(
        session,
        w["linacs"]["A"].id,
        starts_at=local(WEDNESDAY, 0),
        ends_at=local(FRIDAY, 0),
        kind="unplanned",
        reason="gantry fault",
        preview=preview,
        now=NOW,
    )


def test_a_course_whose_own_time_is_free_on_the_partner_keeps_it_before_others_move(session):
    w = f.world(session)
    a, b = w["linacs"]["A"].id, w["linacs"]["B"].id
    early = book_week(session, w, "A", 7)
    later = book_week(session, w, "A", 8)
    book_week(session, w, "B", 7)  # the partner is taken at 07:00, free at 08:00

    report = two_day_downtime(session, w)

    later_rows = fractions_of(session, later)
    for number, day in ((3, WEDNESDAY), (4, WEDNESDAY + timedelta(days=1))):
        assert (later_rows[number].linac_id, later_rows[number].starts_at) == (b, local(day, 8))
    # The 07:00 course is placed only afterwards: after the 08:00 one on the partner, the
    # closest time to its own that keeps its rules.
    early_rows = fractions_of(session, early)
    for number, day in ((3, WEDNESDAY), (4, WEDNESDAY + timedelta(days=1))):
        assert (early_rows[number].linac_id, early_rows[number].starts_at) == (
            b,
            local(day, 8, 45),
        )
    assert all(x.linac_id == a for n, x in early_rows.items() if n not in (3, 4))
    assert (report.kept_time, report.same_day, report.other_day, report.needs_human) == (
        2,
        2,
        0,
        0,
    )
    assert len(report.moved) == 4 and not report.unplaceable


def test_six_courses_every_fraction_whose_own_time_is_free_on_the_partner_keeps_it(session):
    w = f.world(session)
    a, b = w["linacs"]["A"].id, w["linacs"]["B"].id
    on_a = [book_week(session, w, "A", hour) for hour in range(7, 13)]
    for hour in (7, 9, 11):
        book_week(session, w, "B", hour)
    busy_on_b = {
        (x.starts_at, x.ends_at)
        for x in session.scalars(sa.select(Fraction).where(Fraction.linac_id == b))
    }
    displaced = [
        x
        for course_id in on_a
        for x in fractions_of(session, course_id).values()
        if local(WEDNESDAY, 0) <= x.starts_at < local(FRIDAY, 0)
    ]
    free_on_b = {
        x.id for x in displaced if not any(s < x.ends_at and x.starts_at < e for s, e in busy_on_b)
    }
    assert len(displaced) == 12 and len(free_on_b) == 6
    before = {x.id: x.starts_at for x in displaced}

    report = two_day_downtime(session, w)

    moved = {m.fraction_id: m for m in report.moved}
    for fraction_id in free_on_b:
        assert (moved[fraction_id].after.linac_id, moved[fraction_id].after.start) == (
            b,
            before[fraction_id],
        )
    assert report.kept_time == 6
    assert report.kept_time + report.same_day + report.other_day + report.needs_human == 12
    assert not report.unplaceable and report.needs_human == 0
    # Nothing stays on the down linac during the downtime, and every course keeps its rules.
    for course_id in on_a:
        rows = fractions_of(session, course_id)
        assert len(rows) == 5
        assert not any(
            x.linac_id == a and local(WEDNESDAY, 0) <= x.starts_at < local(FRIDAY, 0)
            for x in rows.values()
        )
        starts = [rows[n].starts_at for n in sorted(rows)]
        assert all((y - x) >= timedelta(hours=20) for x, y in zip(starts, starts[1:], strict=False))
        assert session.get(Course, course_id).status == CourseStatus.BOOKED


def test_the_report_counts_fractions_that_need_a_human(session):
    w = f.world(session)
    course_id = book_week(session, w, "A", 7)
    # Every other SBRT linac down too: the displaced fractions have nowhere to go.
    for key in ("B", "C"):
        services.add_downtime(
            session,
            w["linacs"][key].id,
            starts_at=local(WEEK, 0),
            ends_at=local(WEEK + timedelta(days=14), 0),
            kind="planned",
            reason="upgrade",
            now=NOW,
        )
    # Down Wednesday to Friday: fraction 3 must fall at most three days after Tuesday's.
    report = services.add_downtime(
        session,
        w["linacs"]["A"].id,
        starts_at=local(WEDNESDAY, 0),
        ends_at=local(FRIDAY + timedelta(days=1), 0),
        kind="unplanned",
        reason="gantry fault",
        now=NOW,
    )
    assert (report.kept_time, report.same_day, report.other_day, report.needs_human) == (
        0,
        0,
        0,
        3,
    )
    assert {u.number for u in report.unplaceable} == {3, 4, 5}
    assert session.get(Course, course_id).status == CourseStatus.NEEDS_REVIEW


def test_preview_reports_the_same_counts_and_stores_nothing(session):
    w = f.world(session)
    book_week(session, w, "A", 7)
    book_week(session, w, "A", 8)
    book_week(session, w, "B", 7)
    preview = two_day_downtime(session, w, preview=True)
    assert preview.downtime_id is None
    assert (preview.kept_time, preview.same_day) == (2, 2)
    assert session.scalars(sa.select(Downtime)).all() == []
    assert all(x.version == 1 for x in session.scalars(sa.select(Fraction)))


def test_downtime_input_is_checked(session):
    w = f.world(session)
    with pytest.raises(InvalidInput) as caught:
        services.add_downtime(
            session,
            w["linacs"]["A"].id,
            starts_at=local(FRIDAY, 0),
            ends_at=local(WEDNESDAY, 0),
            kind="planned",
            reason="",
            now=NOW,
        )
    assert [e.field for e in caught.value.errors] == ["ends_at"]
    with pytest.raises(NotFound):
        services.add_downtime(
            session,
            999999,
            starts_at=local(WEDNESDAY, 0),
            ends_at=local(FRIDAY, 0),
            kind="planned",
            reason="",
            now=NOW,
        )


def wednesday_only(session, w) -> services.DowntimeReport:
    return services.add_downtime(
        session,
        w["linacs"]["A"].id,
        starts_at=local(WEDNESDAY, 0),
        ends_at=local(WEDNESDAY + timedelta(days=1), 0),
        kind="planned",
        reason="service",
        now=NOW,
    )


def placements(session) -> dict[int, tuple[int, datetime, int]]:
    session.expire_all()
    rows = session.scalars(sa.select(Fraction))
    placed = {x.id: (x.linac_id, x.starts_at, x.version) for x in rows}
    session.rollback()
    return placed


def test_shortening_moves_nobody_back_and_lists_the_fractions_that_could_return(session):
    w = f.world(session)
    course_id = book_week(session, w, "A", 8)
    downtime_id = two_day_downtime(session, w).downtime_id
    thursday = fractions_of(session, course_id)[4]
    before = placements(session)

    report = services.update_downtime(
        session,
        downtime_id,
        starts_at=local(WEDNESDAY, 0),
        ends_at=local(WEDNESDAY + timedelta(days=1), 0),
        kind="unplanned",
        reason="gantry fault, fixed sooner",
        now=NOW,
    )

    assert report.moved == [] and report.unplaceable == []
    assert placements(session) == before
    (back,) = report.returnable
    assert (back.fraction_id, back.number) == (thursday.id, 4)
    assert (back.original.linac_id, back.original.start) == (
        w["linacs"]["A"].id,
        local(WEDNESDAY + timedelta(days=1), 8),
    )
    assert back.current.linac_id == w["linacs"]["B"].id
    stored = session.get(Downtime, downtime_id)
    assert (stored.ends_at, stored.version, stored.reason) == (
        local(WEDNESDAY + timedelta(days=1), 0),
        2,
        "gantry fault, fixed sooner",
    )


def test_extending_replans_the_newly_covered_fractions_after_a_preview(session):
    w = f.world(session)
    course_id = book_week(session, w, "A", 8)
    downtime_id = wednesday_only(session, w).downtime_id
    before = placements(session)
    change = {
        "starts_at": local(WEDNESDAY, 0),
        "ends_at": local(FRIDAY, 0),
        "kind": "planned",
        "reason": "service runs over",
        "now": NOW,
    }

    preview = services.update_downtime(session, downtime_id, preview=True, **change)
    thursday = fractions_of(session, course_id)[4]
    assert [m.fraction_id for m in preview.moved] == [thursday.id]
    assert preview.kept_time == 1 and preview.returnable == []
    assert placements(session) == before
    assert session.get(Downtime, downtime_id).ends_at == local(WEDNESDAY + timedelta(days=1), 0)

    applied = services.update_downtime(session, downtime_id, **change)
    assert [m.fraction_id for m in applied.moved] == [thursday.id]
    moved = fractions_of(session, course_id)[4]
    assert (moved.linac_id, moved.starts_at, moved.version) == (
        w["linacs"]["B"].id,
        thursday.starts_at,
        2,
    )
    assert session.get(Downtime, downtime_id).ends_at == local(FRIDAY, 0)


def test_deleting_previews_then_removes_and_lists_what_could_return(session):
    w = f.world(session)
    book_week(session, w, "A", 8)
    downtime_id = two_day_downtime(session, w).downtime_id
    before = placements(session)

    preview = services.delete_downtime(session, downtime_id, preview=True, now=NOW)
    assert {r.number for r in preview.returnable} == {3, 4}
    assert session.get(Downtime, downtime_id) is not None

    applied = services.delete_downtime(session, downtime_id, now=NOW)
    assert {r.number for r in applied.returnable} == {3, 4}
    session.expire_all()
    assert session.get(Downtime, downtime_id) is None
    assert placements(session) == before  # nobody moved back automatically


def test_editing_checks_its_input(session):
    w = f.world(session)
    book_week(session, w, "A", 8)
    downtime_id = two_day_downtime(session, w).downtime_id
    with pytest.raises(InvalidInput):
        services.update_downtime(
            session,
            downtime_id,
            starts_at=local(FRIDAY, 0),
            ends_at=local(WEDNESDAY, 0),
            kind="planned",
            reason="",
            now=NOW,
        )
    with pytest.raises(NotFound):
        services.delete_downtime(session, downtime_id + 1000, now=NOW)
    assert session.get(Downtime, downtime_id).version == 1


def test_a_fraction_never_takes_a_place_its_course_still_holds(session):
    """Moves are written one after another and the database refuses even a passing overlap of
    one patient's sessions: a displaced fraction may not be placed over the old time of another
    displaced fraction of its course that moves only after it."""
    w = f.world(session)
    a, b, c = (w["linacs"][k].id for k in ("A", "B", "C"))
    protocol = w["liver"]
    rules = {"code": "test-3fx", "fractions": 3, "min_hours_between": 0,
             "min_interval_days": 1, "max_interval_days": None, "min_overall_days": None,
             "max_overall_days": 14}  # fmt: skip
    for name, value in rules.items():
        setattr(protocol, name, value)
    course = f.course(session, f.patient(session, w["department"]), protocol)
    tuesday, thursday = WEEK + timedelta(days=1), WEEK + timedelta(days=3)
    # Nothing anywhere on Tuesday and Wednesday, and the partner only from Thursday 13:00.
    session.add_all(
        [
            Downtime(linac_id=a, starts_at=local(tuesday, 0), ends_at=local(WEDNESDAY, 0),
                     kind="planned", reason="QA"),
            Downtime(linac_id=b, starts_at=local(tuesday, 0), ends_at=local(thursday, 13),
                     kind="planned", reason="QA"),
            Downtime(linac_id=c, starts_at=local(tuesday, 0), ends_at=local(FRIDAY, 0),
                     kind="planned", reason="QA"),
        ]
    )  # fmt: skip
    session.commit()
    course_id = course.id
    placements = [
        Placement(1, a, local(WEEK, 12, 45)),
        Placement(2, a, local(WEDNESDAY, 12, 45)),
        Placement(3, a, local(thursday, 12, 45)),
    ]
    services.book_course(session, course_id, placements, now=NOW)

    report = two_day_downtime(session, w)

    rows = fractions_of(session, course_id)
    # Thursday 13:00 on the partner would overlap fraction 3 while it still stands at 12:45.
    assert (rows[2].linac_id, rows[2].starts_at) == (b, local(thursday, 13, 30))
    # Fraction 3 then takes the closest time to its own: Friday morning on its own linac.
    assert (rows[3].linac_id, rows[3].starts_at) == (a, local(FRIDAY, 7))
    assert (report.other_day, report.needs_human) == (2, 0)
