"""Physicist rosters: the roster use cases, and every way a fraction is placed keeping the
physicists' capacity (proposals, booking, moves, missed-fraction rebooking, downtime re-plan).
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from scheduler.context import physicist_cover
from scheduler.errors import InvalidInput, RulesBroken
from scheduler.models import Fraction
from scheduler.rules import CoverIndex
from scheduler.services import Placement
from tests import factories as f
from tests.committing import records, services

NY = ZoneInfo("America/New_York")
NOW = f.MONDAY  # Mon 2 Mar 2026 12:00 UTC
WEEK = date(2026, 3, 16)  # a Monday two weeks later

# One physicist 09:00–11:00 on weekdays: room for one supervised session at a time.
ONE_MORNING = {
    "every_fraction": False,
    "blocks": [{"weekday": d, "start": "09:00", "end": "11:00", "physicists": 1} for d in range(5)],
    "exceptions": [],
}


def local(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), NY).astimezone(UTC)


def active_fractions(session) -> list[Fraction]:
    session.expire_all()
    return [
        x for x in session.scalars(sa.select(Fraction).order_by(Fraction.starts_at)) if x.is_active
    ]


def assert_capacity_kept(session, w, *, every_fraction: bool = False) -> None:
    """No supervised session outside the roster, and never more at once than physicists."""
    dept = w["department"]
    session.expire_all()
    rows = active_fractions(session)
    if not rows:
        return
    first = min(x.starts_at for x in rows).astimezone(NY).date()
    last = max(x.ends_at for x in rows).astimezone(NY).date()
    cover = physicist_cover(session, dept, first, last)
    assert cover is not None
    index = CoverIndex(cover, dept.timezone)
    supervised = [x for x in rows if every_fraction or x.number == 1]
    assert len(cover.supervised) == len(supervised)
    for x in supervised:
        assert index.kept(x.starts_at, x.ends_at), (x.number, x.starts_at)


def book_first_proposal(session, w, *, earliest: date = WEEK) -> int:
    course = f.course(session, f.patient(session, w["department"]), w["liver"])
    session.commit()
    found = services.propose_schedules(session, course.id, earliest=earliest, count=1, now=NOW)
    assert found.schedules, found.explanation
    placements = [Placement(p.number, p.linac_id, p.start) for p in found.schedules[0].fractions]
    services.book_course(session, course.id, placements, now=NOW)
    return course.id


# -- the roster use cases -----------------------------------------------------------------


def test_a_department_has_no_roster_until_one_is_set(session):
    w = f.world(session)
    got = records.get_physicist_roster(session, w["department"].id)
    assert got == {"enabled": False, "every_fraction": False, "blocks": [], "exceptions": []}


def test_set_and_get_round_trip(session):
    w = f.world(session)
    document = {
        "every_fraction": True,
        "blocks": [
            {"weekday": 1, "start": "13:00", "end": "17:00", "physicists": 1},
            {"weekday": 1, "start": "08:00", "end": "13:00", "physicists": 2},
        ],
        "exceptions": [{"day": "2026-03-17", "start": "08:00", "end": "12:00", "physicists": 0}],
    }
    result = records.set_physicist_roster(session, w["department"].id, document, now=NOW)
    assert result["uncovered"] == []
    got = records.get_physicist_roster(session, w["department"].id)
    assert got["enabled"] is True
    assert got["every_fraction"] is True
    assert [b["start"] for b in got["blocks"]] == ["08:00", "13:00"]  # sorted
    assert got["exceptions"] == document["exceptions"]


@pytest.mark.parametrize("removal", [None, {}, {"enabled": False}])
def test_null_empty_or_disabled_removes_the_roster(session, removal):
    w = f.world(session)
    records.set_physicist_roster(session, w["department"].id, ONE_MORNING, now=NOW)
    records.set_physicist_roster(session, w["department"].id, removal, now=NOW)
    assert records.get_physicist_roster(session, w["department"].id)["enabled"] is False
    session.expire_all()
    assert physicist_cover(session, w["department"], WEEK, WEEK) is None


def test_a_roster_with_no_blocks_means_nobody(session):
    w = f.world(session)
    records.set_physicist_roster(session, w["department"].id, {"blocks": []}, now=NOW)
    course = f.course(session, f.patient(session, w["department"]), w["liver"])
    session.commit()
    found = services.propose_schedules(session, course.id, earliest=WEEK, now=NOW)
    assert found.schedules == []


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        (
            {"blocks": [{"weekday": 7, "start": "08:00", "end": "09:00", "physicists": 1}]},
            "blocks[0].weekday",
            "at most 6",
        ),
        (
            {"blocks": [{"weekday": 0, "start": "8am", "end": "09:00", "physicists": 1}]},
            "blocks[0].start",
            "HH:MM",
        ),
        (
            {"blocks": [{"weekday": 0, "start": "10:00", "end": "09:00", "physicists": 1}]},
            "blocks[0].end",
            "after the start",
        ),
        (
            {"blocks": [{"weekday": 0, "start": "08:00", "end": "09:00", "physicists": -1}]},
            "blocks[0].physicists",
            "at least 0",
        ),
        (
            {"blocks": [{"weekday": 0, "start": "08:00", "end": "09:00", "physicists": "2"}]},
            "blocks[0].physicists",
            "integer",
        ),
        (
            {
                "blocks": [
                    {"weekday": 0, "start": "08:00", "end": "12:00", "physicists": 1},
                    {"weekday": 0, "start": "11:00", "end": "13:00", "physicists": 1},
                ]
            },
            "blocks[1]",
            "overlaps blocks[0] (Monday 08:00–12:00)",
        ),
        (
            {"exceptions": [{"day": "2026-02-30", "start": "08:00", "end": "9:00"}]},
            "exceptions[0].day",
            "YYYY-MM-DD",
        ),
        (
            {
                "exceptions": [
                    {"day": "2026-03-17", "start": "08:00", "end": "12:00", "physicists": 1},
                    {"day": "2026-03-17", "start": "09:00", "end": "10:00", "physicists": 0},
                ]
            },
            "exceptions[1]",
            "overlaps",
        ),
        ({"blocks": "all day"}, "blocks", "must be a list"),
        ({"physicists": 2}, "physicists", "not a known field"),
        ({"every_fraction": "yes"}, "every_fraction", "true or false"),
        (
            {"enabled": False, "blocks": [{"weekday": 0, "start": "08:00", "end": "09:00"}]},
            "enabled",
            "removed",
        ),
    ],
)
def test_bad_rosters_are_refused_field_by_field_and_nothing_changes(
    session, document, field, words
):
    w = f.world(session)
    records.set_physicist_roster(session, w["department"].id, ONE_MORNING, now=NOW)
    with pytest.raises(InvalidInput) as caught:
        records.set_physicist_roster(session, w["department"].id, document, now=NOW)
    messages = {e.field: e.message for e in caught.value.errors}
    assert field in messages, messages
    assert words in messages[field]
    kept = records.get_physicist_roster(session, w["department"].id)
    assert kept["blocks"] == ONE_MORNING["blocks"]


def test_changing_the_roster_reports_the_booked_fractions_it_leaves_uncovered(session):
    w = f.world(session)
    records.set_physicist_roster(session, w["department"].id, ONE_MORNING, now=NOW)
    course_id = book_first_proposal(session, w)
    first = next(x for x in active_fractions(session) if x.number == 1)
    # Nobody on the first fraction's day: it is reported, and it stays where it is.
    day = first.starts_at.astimezone(NY).date().isoformat()
    document = {
        **ONE_MORNING,
        "exceptions": [{"day": day, "start": "09:00", "end": "11:00", "physicists": 0}],
    }
    result = records.set_physicist_roster(session, w["department"].id, document, now=NOW)
    [uncovered] = result["uncovered"]
    assert (uncovered["course_id"], uncovered["number"]) == (course_id, 1)
    assert "no physicist is rostered" in uncovered["message"]
    assert next(x for x in active_fractions(session) if x.number == 1).starts_at == first.starts_at
    # Restoring the roster leaves nothing uncovered.
    again = records.set_physicist_roster(session, w["department"].id, ONE_MORNING, now=NOW)
    assert again["uncovered"] == []


# -- a department without a roster ---------------------------------------------------------


def test_without_roster_proposals_are_exactly_as_before(session):
    w = f.world(session)
    book_first_proposal(session, w)
    course = f.course(session, f.patient(session, w["department"]), w["liver"])
    session.commit()

    def proposals():
        found = services.propose_schedules(session, course.id, earliest=WEEK, now=NOW)
        return [s.fractions for s in found.schedules]

    before = proposals()
    assert before
    # A roster that covers every opening hour with room to spare limits nothing either...
    generous = {
        "every_fraction": True,
        "blocks": [
            {"weekday": d, "start": "07:00", "end": "19:00", "physicists": 9} for d in range(5)
        ],
    }
    records.set_physicist_roster(session, w["department"].id, generous, now=NOW)
    assert proposals() == before
    # ...and a tight one does, until it is removed again.
    records.set_physicist_roster(session, w["department"].id, ONE_MORNING, now=NOW)
    assert proposals() != before
    records.set_physicist_roster(session, w["department"].id, None, now=NOW)
    assert proposals() == before


# -- every placement keeps capacity ---------------------------------------------------------


def test_proposals_and_bookings_never_exceed_the_physicists(session):
    w = f.world(session)
    records.set_physicist_roster(session, w["department"].id, ONE_MORNING, now=NOW)
    for _ in range(6):
        book_first_proposal(session, w)
    assert_capacity_kept(session, w)
    firsts = [x for x in active_fractions(session) if x.number == 1]
    # Two-hour cover, one-hour first sessions: two a day at most, so they spread over days.
    days = [x.starts_at.astimezone(NY).date() for x in firsts]
    assert max(days.count(d) for d in days) <= 2


def test_every_fraction_setting_supervises_all_of_them(session):
    w = f.world(session)
    document = {**ONE_MORNING, "every_fraction": True}
    records.set_physicist_roster(session, w["department"].id, document, now=NOW)
    for _ in range(3):
        book_first_proposal(session, w)
    assert_capacity_kept(session, w, every_fraction=True)
    for x in active_fractions(session):
        start, end = x.starts_at.astimezone(NY), x.ends_at.astimezone(NY)
        assert start.hour >= 9 and (end.hour, end.minute) <= (11, 0)


def test_booking_outside_cover_needs_a_reason(session):
    w = f.world(session)
    records.set_physicist_roster(session, w["department"].id, ONE_MORNING, now=NOW)
    course = f.course(session, f.patient(session, w["department"]), w["liver"])
    session.commit()
    a = w["linacs"]["A"].id
    placements = [Placement(n + 1, a, local(WEEK + timedelta(days=n), 14)) for n in range(5)]
    with pytest.raises(RulesBroken) as caught:
        services.book_course(session, course.id, placements, now=NOW)
    [broken] = caught.value.violations
    assert (broken.code, broken.fraction, broken.overridable) == ("physicist_cover", 1, True)
    assert "14:00" in broken.message
    services.book_course(
        session,
        course.id,
        placements,
        override_reason="Dr Physicist called in for the afternoon",
        now=NOW,
    )
    assert len(active_fractions(session)) == 5


def test_moves_keep_cover(session):
    w = f.world(session)
    records.set_physicist_roster(session, w["department"].id, ONE_MORNING, now=NOW)
    book_first_proposal(session, w)
    book_first_proposal(session, w)
    firsts = [x for x in active_fractions(session) if x.number == 1]
    moving = firsts[1]
    # Onto the other course's first session (another linac): over capacity.
    other_linac = next(
        lid for lid in (w["linacs"][k].id for k in "ABC") if lid != firsts[0].linac_id
    )
    with pytest.raises(RulesBroken) as caught:
        services.move_fraction(
            session, moving.id, linac_id=other_linac, starts_at=firsts[0].starts_at, now=NOW
        )
    assert "physicist_cover" in [v.code for v in caught.value.violations]
    # Every alternative offered keeps cover, and taking one keeps capacity.
    alternatives = services.fraction_alternatives(session, moving.id, count=5, now=NOW)
    assert alternatives
    for alt in alternatives:
        start, end = alt.start.astimezone(NY), alt.end.astimezone(NY)
        assert start.hour >= 9 and (end.hour, end.minute) <= (11, 0)
    chosen = alternatives[-1]
    services.move_fraction(
        session, moving.id, linac_id=chosen.linac_id, starts_at=chosen.start, now=NOW
    )
    assert_capacity_kept(session, w)


def test_missed_first_fraction_is_rebooked_inside_cover(session):
    w = f.world(session)
    records.set_physicist_roster(session, w["department"].id, ONE_MORNING, now=NOW)
    for _ in range(4):
        book_first_proposal(session, w)
    first = next(x for x in active_fractions(session) if x.number == 1)
    result = services.record_missed(
        session, first.id, reason="unwell", now=first.ends_at + timedelta(hours=1)
    )
    assert result.rebooked is not None
    assert result.rebooked.number == 1
    assert_capacity_kept(session, w)


def test_downtime_replan_keeps_cover(session):
    w = f.world(session)
    records.set_physicist_roster(session, w["department"].id, ONE_MORNING, now=NOW)
    for _ in range(5):
        book_first_proposal(session, w)
    firsts = [x for x in active_fractions(session) if x.number == 1]
    down = firsts[0]
    day = down.starts_at.astimezone(NY).date()
    report = services.add_downtime(
        session,
        down.linac_id,
        starts_at=local(day, 0),
        ends_at=local(day + timedelta(days=2), 0),
        kind="unplanned",
        reason="gantry fault",
        now=NOW,
    )
    assert report.moved or report.unplaceable
    assert_capacity_kept(session, w)


def test_racing_bookings_never_take_more_physicists_than_there_are(session, session_factory):
    """Three schedulers book three courses on three linacs at the same hour at once, with
    one physicist rostered: exactly one wins, the others are told the rule they break."""
    import threading

    w = f.world(session)
    records.set_physicist_roster(session, w["department"].id, ONE_MORNING, now=NOW)
    linacs = [w["linacs"][k].id for k in "ABC"]
    courses = []
    for _ in linacs:
        courses.append(f.course(session, f.patient(session, w["department"]), w["liver"]).id)
    session.commit()
    barrier = threading.Barrier(len(courses))
    won: list[int] = []
    lost: list[BaseException] = []

    def client(course_id: int, linac_id: int) -> None:
        placements = [
            Placement(n + 1, linac_id, local(WEEK + timedelta(days=n), 9)) for n in range(5)
        ]
        with session_factory() as own:
            barrier.wait()
            try:
                services.book_course(
                    own, course_id, placements, now=NOW, acknowledged_course_ids=courses
                )
            except BaseException as exc:  # asserted on below
                lost.append(exc)
            else:
                won.append(course_id)

    threads = [
        threading.Thread(target=client, args=pair) for pair in zip(courses, linacs, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(won) == 1
    assert all(isinstance(exc, RulesBroken) for exc in lost), lost
    assert all("physicist_cover" in {v.code for v in exc.violations} for exc in lost)
    assert_capacity_kept(session, w)
