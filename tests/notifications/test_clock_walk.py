"""The send path on a moved clock (time-machine): through DST weeks and the window's edges.

Nothing here passes a time to the sender: the dispatcher's claim and the send run on the
process clock, which time-machine moves from one due time to the next, as beat would find them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine

from notifications import outbox, sending
from notifications.channels.local import LocalOutboxChannel
from notifications.channels.twilio_sms import TwilioSmsChannel
from notifications.models import Reminder, ReminderStatus
from scheduler import links
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

ZONE = ZoneInfo("America/New_York")
PUBLIC = "https://clinic.example.org"


def _at(day: date, clock: time) -> datetime:
    return datetime.combine(day, clock, ZONE).astimezone(UTC)


def _channels(fake) -> sending.Channels:
    sms = TwilioSmsChannel(
        fake.account_sid, fake.auth_token, from_number="+12125550199", base_url=fake.base_url
    )
    return sending.Channels(sms=sms, email=LocalOutboxChannel())


def _tick(session_factory, channels) -> list[int]:
    """One dispatcher tick and the sends it hands out, on the (moved) process clock."""
    with session_factory() as session:
        ids = outbox.claim_due(session, now=datetime.now(UTC))
    if ids:
        sending.send_batch(session_factory, ids, channels, public_base_url=PUBLIC)
    return ids


def _book(session, days: list[date], booked_at: datetime) -> int:
    """A liver course with its five sessions at 14:00 local on ``days``, booked at ``booked_at``."""
    w = f.world(session)
    course = f.course(session, f.patient(session, w["department"], sms_consent=True), w["liver"])
    session.commit()
    placements = [
        Placement(n, w["linacs"]["A"].id, _at(day, time(14, 0))) for n, day in enumerate(days, 1)
    ]
    services.book_course(session, course.id, placements, now=booked_at)
    return course.id


SPRING = [
    date(2026, 3, 5),
    date(2026, 3, 6),
    date(2026, 3, 9),
    date(2026, 3, 10),
    date(2026, 3, 11),
]
FALL = [date(2026, 10, 29), date(2026, 10, 30), date(2026, 11, 2), date(2026, 11, 3),
        date(2026, 11, 4)]  # fmt: skip


@pytest.mark.parametrize("days", [SPRING, FALL], ids=["spring-forward", "fall-back"])
def test_walking_the_clock_through_a_dst_week_sends_each_reminder_at_its_local_time(
    session, session_factory, fake_twilio, days
):
    booked_at = _at(days[0] - timedelta(days=3), time(10, 0))
    with time_machine.travel(booked_at, tick=False) as clock:
        _book(session, days, booked_at)
        rows = session.scalars(sa.select(Reminder).where(Reminder.channel == "sms")).all()
        due = sorted({row.due_at for row in rows})
        session.rollback()
        channels = _channels(fake_twilio)
        for at in due:
            clock.move_to(at - timedelta(seconds=1))
            assert _tick(session_factory, channels) == [], f"sent before {at}"
            clock.move_to(at)
            assert _tick(session_factory, channels), f"nothing sent at {at}"

    session.expire_all()
    rows = session.scalars(sa.select(Reminder).where(Reminder.channel == "sms")).all()
    assert {row.status for row in rows} == {ReminderStatus.SENT}
    # The stored copy has the patient link masked; the provider got the working one.
    sent_at = {
        links.mask_patient_links(r.form["Body"][0]): r.at for r in fake_twilio.create_requests
    }
    assert len(sent_at) == len(rows) == len(fake_twilio.create_requests)
    for row in rows:
        local = sent_at[row.rendered_body].astimezone(ZONE)
        if row.kind == "confirmation":
            assert local == booked_at.astimezone(ZONE)
            continue
        fraction_day = datetime.fromisoformat(row.context["starts_at"]).astimezone(ZONE).date()
        # The same wall-clock time whichever side of the change: the day before at 14:00 for
        # the preparation reminder, 12:00 on the day (two hours ahead) for the same-day one.
        expected = {"day_before": (fraction_day - timedelta(days=1), time(14, 0)),
                    "same_day": (fraction_day, time(12, 0))}[row.kind]  # fmt: skip
        assert (local.date(), local.time().replace(tzinfo=None)) == expected, row.kind


@pytest.mark.parametrize(
    ("retry_at", "sent_at"),
    [(time(20, 59), time(20, 59)), (time(21, 1), time(8, 0))],
    ids=["20:59-inside", "21:01-waits-for-08:00"],
)
def test_a_retry_at_the_window_edge_goes_at_once_or_waits_for_the_morning(
    session, session_factory, fake_twilio, retry_at, sent_at
):
    days = SPRING
    booked_at = _at(days[0] - timedelta(days=3), time(10, 0))
    with time_machine.travel(booked_at, tick=False) as clock:
        _book(session, days, booked_at)
        prep = session.scalars(
            sa.select(Reminder)
            .where(Reminder.kind == "day_before", Reminder.channel == "sms")
            .order_by(Reminder.due_at)
        ).first()
        fraction_day = datetime.fromisoformat(prep.context["starts_at"]).astimezone(ZONE).date()
        # The first try was refused (429); its backoff ends at the edge being tested.
        retry = _at(fraction_day - timedelta(days=1), retry_at)
        prep.next_attempt_at = retry
        prep.attempts = 1
        session.execute(
            sa.update(Reminder)
            .where(Reminder.id != prep.id)
            .values(status=ReminderStatus.SUPPRESSED)  # only this one is in play
        )
        session.commit()
        channels = _channels(fake_twilio)
        clock.move_to(retry)
        assert _tick(session_factory, channels) == [prep.id]
        expected = datetime.combine(
            fraction_day - timedelta(days=1 if sent_at > time(12) else 0), sent_at, ZONE
        )
        if sent_at != retry_at:
            session.expire_all()
            row = session.get(Reminder, prep.id)
            assert row.status == ReminderStatus.PENDING
            assert row.next_attempt_at == expected.astimezone(UTC)
            session.rollback()  # the test's own read must not hold SQLite's write lock
            clock.move_to(expected - timedelta(seconds=1))
            assert _tick(session_factory, channels) == []
            clock.move_to(expected)
            assert _tick(session_factory, channels) == [prep.id]
    (request,) = fake_twilio.create_requests
    assert request.at.astimezone(ZONE) == expected
    assert request.at < _at(fraction_day, time(14, 0))
    session.expire_all()
    assert session.get(Reminder, prep.id).status == ReminderStatus.SENT
