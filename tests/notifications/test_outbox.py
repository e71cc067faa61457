"""The outbox on a real database: rows written with the booking change, claimed with leases."""

from __future__ import annotations

import threading
from datetime import time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from notifications import outbox
from notifications.models import Reminder, ReminderStatus
from scheduler.errors import Conflict
from scheduler.models import Patient
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY
ZONE = ZoneInfo("America/New_York")  # the test department's and its patients' zone


def _book(session, w, **patient):
    pat = f.patient(session, w["department"], sms_consent=True, **patient)
    course = f.course(session, pat, w["liver"])
    session.commit()
    # A week ahead, so every reminder of every fraction is still to come.
    proposal = services.propose_schedules(
        session, course.id, earliest=(NOW + timedelta(days=7)).date(), now=NOW
    ).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    services.book_course(session, course.id, placements, now=NOW)
    return course.id


def _reminders(session, **where):
    query = sa.select(Reminder).order_by(Reminder.id)
    for key, value in where.items():
        query = query.where(getattr(Reminder, key) == value)
    return list(session.scalars(query))


def test_booking_writes_confirmation_and_reminders_for_each_fraction(session):
    w = f.world(session)
    _book(session, w)
    rows = _reminders(session)
    kinds = sorted(r.kind for r in rows)
    assert kinds.count("confirmation") == 1
    assert kinds.count("day_before") == 5
    # The first free slots open the day at 07:00: a same-day reminder would be due before the
    # message window opens, so the day-before reminder is the only one each session gets.
    starts = {r.fraction.starts_at.astimezone(ZONE).time() for r in rows if r.fraction}
    assert starts == {time(7, 0)} and kinds.count("same_day") == 0
    assert {r.channel for r in rows} == {"sms"}
    assert all(r.status == ReminderStatus.PENDING for r in rows)
    assert len({r.dedupe_key for r in rows}) == len(rows)
    for r in rows:
        if r.fraction_id is not None:
            assert r.due_at < r.fraction.starts_at
            assert r.fraction_version == r.fraction.version


def test_no_sms_without_consent_and_nothing_for_a_failed_booking(session):
    w = f.world(session)
    _book(session, w, phone_e164=None, email="ana@example.org", email_consent=True)
    assert {r.channel for r in _reminders(session)} == {"email"}
    before = len(_reminders(session))
    other = f.course(session, f.patient(session, w["department"], sms_consent=True), w["liver"])
    session.commit()
    taken = services.list_fractions(session, start=NOW, end=NOW + timedelta(days=40))
    with pytest.raises(Conflict):
        services.book_course(
            session,
            other.id,
            [Placement(x.number, x.linac_id, x.starts_at) for x in taken],
            now=NOW,
        )
    assert len(_reminders(session)) == before


def test_moving_supersedes_old_reminders_and_queues_a_change_notice(session):
    w = f.world(session)
    course_id = _book(session, w)
    third = [
        x
        for x in services.list_fractions(session, start=NOW, end=NOW + timedelta(days=40))
        if x.course_id == course_id
    ][2]
    target = next(
        a
        for a in services.fraction_alternatives(session, third.id, now=NOW)
        if a.start != third.starts_at
    )
    services.move_fraction(
        session, third.id, linac_id=target.linac_id, starts_at=target.start, now=NOW
    )
    rows = _reminders(session, fraction_id=third.id)
    old = [r for r in rows if r.fraction_version == 1]
    new = [r for r in rows if r.fraction_version == 2]
    assert old and all(r.status == ReminderStatus.SUPERSEDED for r in old)
    same_day = [] if target.start.astimezone(ZONE).time() < time(10, 0) else ["same_day"]
    assert sorted(r.kind for r in new) == ["change", "day_before", *same_day]
    (notice,) = [r for r in new if r.kind == "change"]
    assert notice.context["before"]["starts_at"] != notice.context["after"]["starts_at"]

    # Moved again before the notice went out: one notice, from the time the patient knows.
    again = next(
        a
        for a in services.fraction_alternatives(session, third.id, now=NOW)
        if a.start not in (third.starts_at, target.start)
    )
    services.move_fraction(
        session, third.id, linac_id=again.linac_id, starts_at=again.start, now=NOW
    )
    notices = _reminders(session, fraction_id=third.id, kind="change")
    open_notices = [r for r in notices if r.status == ReminderStatus.PENDING]
    assert len(open_notices) == 1
    assert open_notices[0].context["before"] == notice.context["before"]


def test_cancelling_the_course_takes_back_everything_and_sends_one_notice(session):
    w = f.world(session)
    course_id = _book(session, w)
    services.cancel_course(session, course_id, reason="patient choice", now=NOW)
    rows = _reminders(session)
    pending = [r for r in rows if r.status == ReminderStatus.PENDING]
    assert [r.kind for r in pending] == ["cancellation"]
    assert all(r.status == ReminderStatus.SUPERSEDED for r in rows if r.kind != "cancellation")


def test_claim_takes_due_rows_once_and_reclaims_expired_leases(session):
    w = f.world(session)
    _book(session, w)
    at = NOW + timedelta(hours=3)  # past the start of the morning message window
    due = [r.id for r in _reminders(session) if r.due_at <= at]
    claimed = outbox.claim_due(session, now=at, lease=timedelta(minutes=5))
    assert sorted(claimed) == sorted(due) and claimed
    assert outbox.claim_due(session, now=at + timedelta(minutes=1)) == []
    # Lease ran out before any send started: claimed again.
    again = outbox.claim_due(session, now=at + timedelta(minutes=6))
    assert sorted(again) == sorted(due)
    # A send had started when the lease ran out: it may have gone, so it is reconciled.
    row = session.get(Reminder, again[0])
    row.send_started_at = at + timedelta(minutes=6)
    session.commit()
    later = outbox.claim_due(session, now=at + timedelta(minutes=20))
    assert again[0] not in later
    session.expire_all()
    assert session.get(Reminder, again[0]).status == ReminderStatus.UNKNOWN


def test_two_dispatchers_never_claim_the_same_row(session, session_factory):
    w = f.world(session)
    for _ in range(6):
        _book(session, w)
    horizon = NOW + timedelta(days=40)
    total = len([r for r in _reminders(session) if r.due_at <= horizon])
    session.rollback()  # hold no SQLite lock while the dispatchers race
    results: list[list[int]] = [[], []]
    barrier = threading.Barrier(2)

    def dispatcher(slot: int) -> None:
        with session_factory() as s:
            barrier.wait()
            while batch := outbox.claim_due(s, now=horizon, limit=7):
                results[slot].extend(batch)

    threads = [threading.Thread(target=dispatcher, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    claimed = results[0] + results[1]
    assert len(claimed) == len(set(claimed)) == total


def test_patient_helpers_see_consent(session):
    w = f.world(session)
    pat = f.patient(session, w["department"], sms_consent=True, sms_opted_out=True)
    snap = outbox.patient_snapshot(pat, w["department"])
    assert not snap.sms_allowed
    assert snap.timezone == "America/New_York"
    assert isinstance(pat, Patient)
