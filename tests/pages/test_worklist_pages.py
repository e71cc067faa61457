"""The home page's worklist, its two actions and the menu's counts.

A committed department on a Monday at noon in New York: one course whose sessions this
morning have started (actions offered), one whose sessions this afternoon have not (no action
yet), one whose first fraction tomorrow is tentative and not ready to treat, a failed message
and an unread reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from notifications.models import InboundMessage, Reminder, ReminderStatus
from scheduler import access, heartbeats, worklist
from scheduler.models import AuditEntry, Fraction, User
from tests.access_world import build_other_department
from tests.api.conftest import Seed
from tests.committing import records, services
from tests.pages.conftest import SignIn

NY = ZoneInfo("America/New_York")
# Monday 2 March 2026, 12:00 in New York.
NOW = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
BOOKED_AT = NOW - timedelta(days=4)
WEEK = [date(2026, 3, d) for d in (2, 3, 4, 5, 6)]


@dataclass(frozen=True)
class Day:
    morning: list[int]  # fraction ids of the ready course, 09:00 on TrueBeam 1 each day
    afternoon: list[int]  # another course's, 14:00 on TrueBeam 2
    unready_course: int  # first fraction tomorrow 10:00, plan not approved
    morning_course: int
    afternoon_course: int
    reminder_id: int
    reply_id: int


def _html(response) -> str:  # noqa: ANN001 - a test response
    return response.get_data(as_text=True)


def _course(
    db: Session, seed: Seed, mrn: str, given: str, days: list[date], hour: int, linac: int, *,
    ready: bool,
) -> tuple[int, list[int]]:  # fmt: skip
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": mrn, "given_name": given,
         "family_name": "Worklist", "date_of_birth": date(1950, 1, 1),
         "phone": "+12125550142", "sms_consent": True},
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    if ready:
        for step in ("plan_approved", "physics_qa"):
            services.record_readiness(db, course.id, step=step, done_at=BOOKED_AT, now=BOOKED_AT)
    placements = [
        services.Placement(n, linac, datetime(d.year, d.month, d.day, hour, tzinfo=NY))
        for n, d in enumerate(days, start=1)
    ]
    services.book_course(db, course.id, placements, now=BOOKED_AT)
    ids = list(
        db.scalars(
            sa.select(Fraction.id).where(Fraction.course_id == course.id).order_by(Fraction.number)
        )
    )
    db.rollback()
    return course.id, ids


@pytest.fixture
def day(db: Session, seed: Seed) -> Day:
    with time_machine.travel(BOOKED_AT, tick=False):
        morning_course, morning = _course(
            db, seed, "WL-1", "Alma", WEEK, 9, seed.linac_ids[0], ready=True
        )
        afternoon_course, afternoon = _course(
            db, seed, "WL-2", "Bruno", WEEK, 14, seed.linac_ids[1], ready=True
        )
        later = [*WEEK[1:], date(2026, 3, 9)]
        unready_course, _ = _course(
            db, seed, "WL-3", "Carla", later, 10, seed.linac_ids[0], ready=False
        )
    reminder = db.scalars(
        sa.select(Reminder).where(Reminder.course_id == afternoon_course).order_by(Reminder.id)
    ).first()
    assert reminder is not None
    reminder.status = ReminderStatus.FAILED
    reminder.status_reason = "30003: Unreachable destination handset"
    reply = InboundMessage(
        provider_id="SM-worklist-1",
        from_number="+12125550142",
        patient_id=reminder.patient_id,
        body="Can I come later?",
        action="inbox",
        needs_attention=True,
    )
    db.add(reply)
    db.commit()
    found = Day(
        morning, afternoon, unready_course, morning_course, afternoon_course, reminder.id, reply.id
    )
    db.rollback()
    return found


@pytest.fixture
def clock():  # noqa: ANN201 - a context
    with time_machine.travel(NOW, tick=False):
        yield


def _row(page: str, element_id: str) -> str:
    match = re.search(rf'<tr[^>]*id="{element_id}".*?</tr>', page, re.S)
    assert match, f"no row {element_id}"
    return match[0]


def _nav_counts(page: str) -> dict[str, str]:
    """Menu label -> the count shown beside it."""
    nav = page[page.index('<nav aria-label="Main">') : page.index("</nav>")]
    return dict(re.findall(r'>([^<>]+)</a> <span class="nav-count">(\d+)<span', nav))


def _status(db: Session, fraction_id: int) -> str:
    db.expire_all()
    status = db.scalar(sa.select(Fraction.status).where(Fraction.id == fraction_id))
    db.rollback()
    return status


def _audited(db: Session, action: str) -> list[int | None]:
    ids = list(db.scalars(sa.select(AuditEntry.subject_id).where(AuditEntry.action == action)))
    db.rollback()
    return ids


def test_signed_out_the_home_page_asks_to_sign_in(client: FlaskClient, seed: Seed) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_a_scheduler_sees_the_day_and_what_waits(
    client: FlaskClient, signed_in: SignIn, day: Day, clock: None, db: Session
) -> None:
    signed_in(client, "scheduler")
    page = _html(client.get("/"))

    # Today per linac, in time order, by initials and MRN only (a shared screen).
    truebeam1 = page[page.index('id="linac-') : page.index("Tomorrow: not ready to treat")]
    assert truebeam1.index("TrueBeam 1") < truebeam1.index("TrueBeam 2")
    morning = _row(page, f"fraction-{day.morning[0]}")
    assert "09:00–10:00" in morning and "AW (WL-1)" in morning
    assert f"Course {day.morning_course}</a> · fraction 1/5" in morning
    assert "Alma" not in page and "Worklist," not in page
    # Started: both actions. Not yet started: neither, only when it starts.
    assert f'action="/worklist/fractions/{day.morning[0]}/completed"' in morning
    assert f'action="/worklist/fractions/{day.morning[0]}/missed"' in morning
    afternoon = _row(page, f"fraction-{day.afternoon[0]}")
    assert "14:00–15:00" in afternoon and "from 14:00" in afternoon
    assert "/completed" not in afternoon and "/missed" not in afternoon
    # Tomorrow's fraction of the course not yet ready, with what is missing.
    tomorrow = page[page.index("Tomorrow: not ready to treat") : page.index('id="courses"')]
    assert "CW (WL-3)" in tomorrow and "plan approval, physics QA" in tomorrow
    assert f"Course {day.unready_course}</a> · fraction 1" in tomorrow
    # The ready courses' sessions tomorrow are not listed there.
    assert "AW (WL-1)" not in tomorrow
    failed = page[page.index('id="failed"') : page.index('id="replies"')]
    assert "BW (WL-2)" in failed and "30003: Unreachable destination handset" in failed
    replies = page[page.index('id="replies"') :]
    assert f'id="reply-{day.reply_id}"' in replies and "+1••••••0142" in replies
    assert "Can I come later?" not in page  # the text is read in the inbox, not here
    summary = re.search(r'aria-label="Summary">(.*?)</ul>', page, re.S)
    assert summary
    assert " ".join(re.sub("<[^>]+>", " ", summary[1]).split()) == (
        "2 sessions today 0 completed 2 not yet recorded 1 not ready tomorrow"
    )
    assert _nav_counts(page) == {"Messages": "1", "Inbox": "1"}
    assert '<a href="/" aria-current="page">Today</a>' in page
    # One audit entry a page view (signing in fetched the page once already), naming the
    # sessions it showed.
    viewed = db.scalars(
        sa.select(AuditEntry).where(AuditEntry.subject_type == "worklist").order_by(AuditEntry.id)
    ).all()[-1]
    assert viewed.action == "view" and sorted(viewed.detail["fractions"]) == sorted(
        [day.morning[0], day.afternoon[0]]
    )
    db.rollback()


def test_a_viewer_sees_the_day_without_actions_or_replies(
    client: FlaskClient, signed_in: SignIn, day: Day, clock: None
) -> None:
    signed_in(client, "viewer")
    page = _html(client.get("/"))
    assert "AW (WL-1)" in page and "BW (WL-2)" in page
    assert "/worklist/fractions/" not in page
    assert 'id="replies"' not in page
    # Viewers have no inbox or work queue in their menu, so no counts for them.
    assert _nav_counts(page) == {"Messages": "1"}


def test_completed_from_the_worklist(
    client: FlaskClient, signed_in: SignIn, day: Day, clock: None, db: Session
) -> None:
    csrf = signed_in(client, "scheduler")
    done = client.post(f"/worklist/fractions/{day.morning[0]}/completed", data={"csrf_token": csrf})
    assert done.status_code == 302 and done.headers["Location"] == "/"
    page = _html(client.get("/"))
    assert (
        f"Fraction 1 of course {day.morning_course} (Mon 2 Mar 2026 09:00–10:00 EST) "
        "recorded as completed." in page
    )
    assert _status(db, day.morning[0]) == "completed"
    assert _audited(db, "completed") == [day.morning[0]]
    row = _row(page, f"fraction-{day.morning[0]}")
    assert ">completed<" in row and "/completed" not in row
    assert "1 completed" in re.sub("<[^>]+>", "", page)

    # Twice is refused, and so is a session that has not started; nothing is recorded.
    again = client.post(
        f"/worklist/fractions/{day.morning[0]}/completed", data={"csrf_token": csrf}
    )
    assert again.status_code == 302
    assert "Nothing was recorded" in _html(client.get("/"))
    early = client.post(
        f"/worklist/fractions/{day.afternoon[0]}/completed", data={"csrf_token": csrf}
    )
    assert early.status_code == 302
    assert "a fraction cannot be completed before it starts" in _html(client.get("/"))
    assert _status(db, day.afternoon[0]) == "booked"
    assert _audited(db, "completed") == [day.morning[0]]


def test_missed_from_the_worklist_is_rebooked_and_said_so(
    client: FlaskClient, signed_in: SignIn, day: Day, clock: None, db: Session
) -> None:
    csrf = signed_in(client, "scheduler")
    url = f"/worklist/fractions/{day.morning[0]}/missed"
    # Without the confirmation, or without words for "other", nothing is recorded.
    refused = client.post(url, data={"csrf_token": csrf, "reason": "did_not_attend"})
    assert refused.status_code == 302
    assert "confirm that the patient was not treated" in _html(client.get("/"))
    other = client.post(url, data={"csrf_token": csrf, "reason": "other", "confirm": "yes"})
    assert other.status_code == 302
    assert "required when the reason is other" in _html(client.get("/"))
    assert _status(db, day.morning[0]) == "booked"

    done = client.post(url, data={"csrf_token": csrf, "reason": "did_not_attend", "confirm": "yes"})
    assert done.status_code == 302 and done.headers["Location"] == "/"
    page = _html(client.get("/"))
    flash = re.search(r'<p class="flash success"[^>]*>(.*?)</p>', page, re.S)
    assert flash, page
    assert flash[1].startswith(
        f"Fraction 1 of course {day.morning_course} recorded as missed (patient did not "
        "attend). Rebooked for "
    ), flash[1]
    assert "change notice" in flash[1]
    assert _status(db, day.morning[0]) == "missed"
    rebooked = db.scalars(
        sa.select(Fraction).where(
            Fraction.course_id == day.morning_course, Fraction.number == 1,
            Fraction.status == "booked",
        )
    ).one()  # fmt: skip
    when = rebooked.starts_at.astimezone(NY)
    db.rollback()
    assert f"{when:%H:%M}" in flash[1] and f"{when.day} {when:%b %Y}" in flash[1]
    row = _row(page, f"fraction-{day.morning[0]}")
    assert ">missed<" in row and "patient did not attend" in row
    assert _audited(db, "missed") == [day.morning[0]]


def test_actions_need_a_scheduler_the_token_and_a_visible_fraction(
    client: FlaskClient, signed_in: SignIn, day: Day, clock: None, db: Session, seed: Seed
) -> None:
    csrf = signed_in(client, "viewer")
    url = f"/worklist/fractions/{day.morning[0]}/completed"
    assert client.post(url, data={"csrf_token": csrf}).status_code == 403
    csrf = signed_in(client, "scheduler")
    assert client.post(url, data={}).status_code == 400
    assert client.post(url, data={"csrf_token": "forged"}).status_code == 400
    # A member of no department: the fraction does not exist for them.
    outsider = db.scalars(sa.select(User).where(User.email == "scheduler@example.org")).one()
    access.set_departments(db, outsider, [])
    db.commit()
    assert client.post(url, data={"csrf_token": csrf}).status_code == 404
    assert (
        client.post(
            f"/worklist/fractions/{day.morning[0]}/missed",
            data={"csrf_token": csrf, "reason": "unwell", "confirm": "yes"},
        ).status_code
        == 404
    )
    assert _status(db, day.morning[0]) == "booked"
    page = _html(client.get("/"))
    assert "You are not a member of any department yet" in page
    assert "WL-1" not in page and _nav_counts(page) == {}


def test_the_counts_follow_the_users_departments(
    client: FlaskClient, signed_in: SignIn, db: Session, seed: Seed, clock: None
) -> None:
    # Department B has a failed message, an unread reply and, once a fraction is cancelled,
    # an incomplete course; department A (the users' own) has none of them.
    other = build_other_department(db, seed)
    services.cancel_fraction(db, other.ids["fraction_id"], reason="away")
    signed_in(client, "scheduler")
    assert _nav_counts(_html(client.get("/"))) == {}
    signed_in(client, "admin")
    page = _html(client.get("/"))
    assert _nav_counts(page) == {"Downtime": "1", "Messages": "1", "Inbox": "1"}
    assert '1<span class="visually-hidden"> courses to review</span>' in page


def test_the_counts_are_one_statement(db: Session, day: Day) -> None:
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # noqa: ANN001 - event arguments
        statements.append(statement)

    engine = db.get_bind()
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        counts = worklist.attention_counts(db, courses=True, failed=True, replies=True)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    db.rollback()
    assert (counts.courses, counts.failed, counts.replies) == (0, 1, 1)
    assert len([s for s in statements if "count(" in s.lower()]) == 1


def _health_panel(page: str) -> str:
    found = re.search(r'<section class="card worklist-health".*?</section>', page, re.S)
    assert found, "no health panel"
    return " ".join(re.sub("<[^>]+>", " ", found[0]).split())


def test_the_health_panel_says_whether_reminders_go_out(
    client: FlaskClient, signed_in: SignIn, db: Session, seed: Seed, clock: None
) -> None:
    signed_in(client, "scheduler")
    # Nothing has ever ticked: the reminders would not go out.
    panel = _health_panel(_html(client.get("/")))
    assert panel.startswith("System health Reminders are stalled")
    assert "fail Scheduler (beat): has never ticked" in panel
    assert "fail Worker: no worker has ever run" in panel
    assert "System page" not in panel  # admins only

    now = datetime.now(UTC)
    heartbeats.stamp(db, heartbeats.BEAT, now)
    heartbeats.stamp(db, heartbeats.WORKER, now)
    db.commit()
    panel = _health_panel(_html(client.get("/")))
    assert panel.startswith("System health Reminders are going out.")
    assert "ok Scheduler (beat): ticked 0 s ago" in panel
    assert "ok Database: answers" in panel

    signed_in(client, "admin")
    assert "System page" in _health_panel(_html(client.get("/")))
