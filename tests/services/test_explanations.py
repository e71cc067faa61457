"""Proposals explain a late or impossible start by its cause, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta

from scheduler.models import Fraction, FractionStatus
from tests import factories as f
from tests.committing import records, services

NOW = f.MONDAY  # Monday 2 March 2026, 07:00 in New York


def _course(session, w) -> int:  # noqa: ANN001
    course = f.course(session, f.patient(session, w["department"]), w["liver"])
    session.commit()
    return course.id


def _down(session, w, days: int, reason: str) -> None:  # noqa: ANN001
    for key in ("A", "B", "C"):
        services.add_downtime(
            session, w["linacs"][key].id, starts_at=NOW, ends_at=NOW + timedelta(days=days),
            kind="planned", reason=reason, now=NOW,
        )  # fmt: skip


def _first_day(result) -> date:  # noqa: ANN001
    return min(s.first_start.date() for s in result.schedules)


def test_a_three_week_downtime_of_every_sbrt_linac_is_named(session):
    w = f.world(session)
    course_id = _course(session, w)
    _down(session, w, 21, "software upgrade")

    result = services.propose_schedules(session, course_id, now=NOW)

    assert result.schedules
    assert _first_day(result) >= date(2026, 3, 23)
    explanation = result.explanation
    assert explanation is not None, "a three-week late start is explained"
    assert explanation.code == "linac_downtime"
    assert explanation.message == (
        "TrueBeam A, TrueBeam B and Edge C down 2–23 March (software upgrade); "
        "earliest possible start 23 March"
    )
    assert explanation.earliest_feasible == date(2026, 3, 23)


def test_a_twelve_week_downtime_of_every_sbrt_linac_is_not_called_capacity(session):
    w = f.world(session)
    course_id = _course(session, w)
    _down(session, w, 84, "bunker rebuild")

    result = services.propose_schedules(session, course_id, now=NOW)

    assert result.schedules == []
    explanation = result.explanation
    assert explanation is not None and explanation.code == "linac_downtime"
    assert "TrueBeam A, TrueBeam B and Edge C down 2 March–25 May (bunker rebuild)" in (
        explanation.message
    )
    # 25 May 2026 is Memorial Day: the department opens again on the 26th.
    assert explanation.earliest_feasible == date(2026, 5, 26)


def test_a_binding_holiday_is_named(session):
    w = f.world(session)
    course_id = _course(session, w)
    thanksgiving = date(2026, 11, 26)

    result = services.propose_schedules(session, course_id, earliest=thanksgiving, now=NOW)

    assert result.schedules and _first_day(result) == date(2026, 11, 27)
    explanation = result.explanation
    assert explanation is not None and explanation.code == "closure"
    assert explanation.message == (
        "the department is closed on 26 November (Thanksgiving Day); "
        "earliest possible start 27 November"
    )


def test_a_local_closure_is_named(session):
    w = f.world(session)
    course_id = _course(session, w)
    for day in range(3, 7):
        records.add_closure(
            session, w["department"].id, day=date(2026, 3, day), reason="bunker inspection"
        )
    session.commit()

    result = services.propose_schedules(session, course_id, earliest=date(2026, 3, 3), now=NOW)

    explanation = result.explanation
    assert explanation is not None and explanation.code == "closure"
    assert explanation.message == (
        "the department is closed on 3–6 March (bunker inspection); earliest possible start 9 March"
    )


def test_full_bookings_are_capacity(session):
    w = f.world(session)
    # Other patients' long sessions fill every SBRT linac's opening hours for the first week.
    for key in ("A", "B", "C"):
        other = f.course(session, f.patient(session, w["department"]), w["liver"])
        for number, day in enumerate(range(2, 7), start=1):
            opens = NOW.replace(day=day)  # 07:00 in New York
            session.add(
                Fraction(
                    course_id=other.id, patient_id=other.patient_id, linac_id=w["linacs"][key].id,
                    number=number, starts_at=opens, ends_at=opens + timedelta(hours=12),
                    status=FractionStatus.BOOKED,
                )
            )  # fmt: skip
    session.commit()
    course_id = _course(session, w)

    result = services.propose_schedules(session, course_id, now=NOW)

    assert result.schedules and _first_day(result) == date(2026, 3, 9)
    explanation = result.explanation
    assert explanation is not None and explanation.code == "capacity"
    assert explanation.message == (
        "no BREATH_HOLD/CBCT/SBRT-capable linac (TrueBeam A, TrueBeam B and Edge C) is free "
        "for 5 fractions to start between 2 March and 9 March; "
        "earliest possible start 9 March"
    )


def test_an_on_time_start_has_no_explanation(session):
    w = f.world(session)
    course_id = _course(session, w)
    result = services.propose_schedules(session, course_id, now=NOW)
    assert result.schedules and result.explanation is None
