"""The scheduler's pages: patients, courses, proposals, booking, moves, cancels, roles.

Driven through the Flask test client the way a browser uses them: sign in through /login,
read each form's hidden fields from the page, post them back with the session's CSRF token.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from notifications.models import Reminder
from scheduler.models import AuditEntry, Course, Downtime, Fraction, Patient
from tests.api.conftest import Seed
from tests.committing import services
from tests.pages.conftest import SignIn

NEW_YORK = ZoneInfo("America/New_York")  # the seeded department's zone


class _Forms(HTMLParser):
    """Every form on a page: its action and its named fields, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, list[tuple[str, str]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((a.get("action", ""), []))
        elif tag in ("input", "textarea", "select") and self.forms and a.get("name"):
            self.forms[-1][1].append((a["name"], a.get("value", "")))


def _forms(html: str, action: str) -> list[MultiDict[str, str]]:
    """The fields of each form posting to ``action``, ready to post back."""
    parser = _Forms()
    parser.feed(html)
    return [MultiDict(fields) for act, fields in parser.forms if act == action]


def _html(response) -> str:  # noqa: ANN001 - a test response
    return response.get_data(as_text=True)


def _id_from(location: str, prefix: str) -> int:
    match = re.search(rf"{prefix}/(\d+)$", location)
    assert match, location
    return int(match.group(1))


def _patient(client: FlaskClient, csrf: str, mrn: str, **fields: str) -> int:
    data = {
        "csrf_token": csrf,
        "mrn": mrn,
        "given_name": "Ana",
        "family_name": "Lopez",
        "date_of_birth": "1961-02-03",
        "phone": "(415) 555-0100",
        "phone_country": "US",
        "email": "ana@example.org",
        "language": "es",
        "timezone": "",
        "sms_consent": "yes",
        **fields,
    }
    response = client.post("/patients/new", data=data)
    assert response.status_code == 302, _html(response)
    return _id_from(response.headers["Location"], "/patients")


def _course(client: FlaskClient, csrf: str, patient_id: int, seed: Seed) -> int:
    response = client.post(
        f"/patients/{patient_id}/courses/new",
        data={"csrf_token": csrf, "protocol_id": str(seed.protocol_id), "priority": "2"},
    )
    assert response.status_code == 302, _html(response)
    return _id_from(response.headers["Location"], "/courses")


def _next_week(now: datetime | None = None) -> date:
    # A week after the department's today: every reminder of the booking is still due, so
    # the counts are exact. Without ``now``, the (possibly pinned) clock the pages read.
    return (now or datetime.now(UTC)).astimezone(NEW_YORK).date() + timedelta(days=7)


def _proposals(
    client: FlaskClient, course_id: int, now: datetime | None = None
) -> list[MultiDict[str, str]]:
    page = client.get(
        f"/courses/{course_id}/propose",
        query_string={
            "earliest": _next_week(now).isoformat(),
            "window_start": "08:00",
            "window_end": "10:00",
        },
    )
    assert page.status_code == 200, _html(page)
    return _forms(_html(page), f"/courses/{course_id}/book")


def _booked(
    client: FlaskClient, csrf: str, seed: Seed, now: datetime | None = None, mrn: str = "PG-1"
) -> int:
    course_id = _course(client, csrf, _patient(client, csrf, mrn), seed)
    option = _proposals(client, course_id, now)[0]
    response = client.post(f"/courses/{course_id}/book", data=option)
    assert response.status_code == 302, _html(response)
    return course_id


def _fractions(db: Session, course_id: int) -> list[Fraction]:
    """The course's fractions as they are now (detached, so the read ends its transaction:
    on SQLite an open one holds the write lock the app's next request needs)."""
    db.expire_all()
    found = list(
        db.scalars(
            sa.select(Fraction).where(Fraction.course_id == course_id).order_by(Fraction.number)
        )
    )
    db.expunge_all()
    db.rollback()
    return found


# --- patients ----------------------------------------------------------------------------


def test_create_patient_shows_phone_in_e164_and_audits(
    client: FlaskClient, signed_in: SignIn, db: Session
) -> None:
    csrf = signed_in(client, "scheduler")
    form = client.get("/patients/new")
    assert form.status_code == 200
    # Every visible control is labelled.
    html = _html(form)
    for control in re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"', html):
        assert f'for="{control}"' in html, control

    patient_id = _patient(client, csrf, "E164-1")
    page = client.get(f"/patients/{patient_id}")
    assert page.status_code == 200
    text = _html(page)
    assert "+14155550100" in text
    assert "Patient created" in text
    assert "consented" in text

    # A number typed in another country's national form, with that country chosen.
    other = _patient(client, csrf, "E164-2", phone="07400 123456", phone_country="GB")
    assert "+447400123456" in _html(client.get(f"/patients/{other}"))

    db.expire_all()
    patient = db.get(Patient, patient_id)
    assert patient is not None and patient.sms_consent_at is not None
    actions = set(
        db.execute(
            sa.select(AuditEntry.action, AuditEntry.subject_type).where(
                AuditEntry.subject_id == patient_id
            )
        ).tuples()
    )
    assert {("create", "patient"), ("view", "patient")} <= actions


def test_bad_phone_is_a_field_error_and_keeps_the_other_fields(
    client: FlaskClient, signed_in: SignIn, db: Session
) -> None:
    csrf = signed_in(client, "scheduler")
    response = client.post(
        "/patients/new",
        data={"csrf_token": csrf, "mrn": "BAD-1", "given_name": "Bea", "family_name": "Stone",
              "phone": "12", "phone_country": "US", "email": "bea@example.org",
              "language": "es", "sms_consent": "yes"},
    )  # fmt: skip
    assert response.status_code == 422
    html = _html(response)
    assert re.search(r'id="phone-error">Phone is not', html)
    assert 'aria-describedby="phone-error"' in html
    for kept in ('value="BAD-1"', 'value="Bea"', 'value="Stone"', 'value="bea@example.org"'):
        assert kept in html
    assert re.search(r'id="sms_consent"[^>]*checked', html)
    assert re.search(r'<option value="es" selected>', html)
    assert db.scalar(sa.select(sa.func.count()).select_from(Patient)) == 0


def test_search_is_posted_and_lists_matches(client: FlaskClient, signed_in: SignIn) -> None:
    csrf = signed_in(client, "scheduler")
    patient_id = _patient(client, csrf, "FIND-77")
    viewer = client.application.test_client()
    viewer_csrf = signed_in(viewer, "viewer")
    page = viewer.post("/patients", data={"csrf_token": viewer_csrf, "q": "find-7"})
    assert page.status_code == 200
    assert f'href="/patients/{patient_id}"' in _html(page)
    assert "FIND-77" in _html(page)
    missing = viewer.post("/patients", data={"csrf_token": viewer_csrf, "q": "nobody"})
    assert "No patient matches" in _html(missing)


# --- courses, proposals, booking ---------------------------------------------------------


@pytest.mark.pinned_dates
def test_create_course_and_book_a_proposal(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session, now: datetime
) -> None:
    csrf = signed_in(client, "scheduler")
    patient_id = _patient(client, csrf, "BOOK-1")
    form = client.get(f"/patients/{patient_id}/courses/new")
    assert form.status_code == 200 and "Liver 5 fx" in _html(form)
    course_id = _course(client, csrf, patient_id, seed)
    draft = _html(client.get(f"/courses/{course_id}"))
    assert "Course created" in draft and "CT simulation" in draft and "draft" in draft

    options = _proposals(client, course_id, now)
    assert len(options) == 3
    assert all(len(o.getlist("number")) == 5 for o in options)

    booked = client.post(f"/courses/{course_id}/book", data=options[1])
    assert booked.status_code == 302
    page = _html(client.get(booked.headers["Location"]))
    assert "Booked 5 fractions" in page
    # A day-before reminder per session, and a same-day one for each session late enough in
    # the day for it to go out on the day (the proposals' times depend on the free slots).
    queued = re.search(r"Queued messages: 1 confirmation \(SMS\), (\d+) reminders \(SMS\)\.", page)
    assert queued is not None and 5 <= int(queued.group(1)) <= 10
    reminders = db.scalar(
        sa.select(sa.func.count())
        .select_from(Reminder)
        .where(Reminder.course_id == course_id, Reminder.fraction_id.is_not(None))
    )
    db.rollback()
    assert int(queued.group(1)) == reminders
    assert "awaiting readiness" in page
    rows = re.findall(r'<tr class="status-(\w+)">\s*<th scope="row">(\d)/5', page)
    assert [n for _, n in rows] == ["1", "2", "3", "4", "5"]
    assert rows[0][0] == "tentative"
    assert len(_fractions(db, course_id)) == 5

    # A booked course offers no more proposals.
    again = client.get(f"/courses/{course_id}/propose")
    assert again.status_code == 200 and "Book option" not in _html(again)

    # Readiness: plan approval and physics QA make fraction 1 booked.
    for step in ("plan_approved", "physics_qa"):
        recorded = client.post(
            f"/courses/{course_id}/readiness",
            data={"csrf_token": csrf, "step": step, "action": "record", "done_at": ""},
        )
        assert recorded.status_code == 302
    page = _html(client.get(f"/courses/{course_id}"))
    assert "ready to treat" in page
    assert _fractions(db, course_id)[0].status == "booked"


@pytest.mark.pinned_dates
def test_lost_race_names_the_taken_time(
    client: FlaskClient, signed_in: SignIn, seed: Seed, now: datetime
) -> None:
    csrf = signed_in(client, "scheduler")
    first = _course(client, csrf, _patient(client, csrf, "RACE-1"), seed)
    second = _course(client, csrf, _patient(client, csrf, "RACE-2"), seed)
    # Both schedulers look at the same free week, then the first one books.
    mine, theirs = _proposals(client, first, now)[0], _proposals(client, second, now)[0]
    assert client.post(f"/courses/{first}/book", data=mine).status_code == 302
    lost = client.post(f"/courses/{second}/book", data=theirs)
    assert lost.status_code == 409
    html = _html(lost)
    assert "taken a moment ago" in html and "TrueBeam" in html
    assert "Book option" in html  # fresh proposals to choose from


@pytest.mark.pinned_dates
def test_no_proposal_explains_and_offers_the_earliest_start(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session, now: datetime
) -> None:
    csrf = signed_in(client, "scheduler")
    course_id = _course(client, csrf, _patient(client, csrf, "NONE-1"), seed)
    # Both machines are down for the whole proposal horizon (eight weeks) from next week.
    earliest = _next_week(now)
    down_from = datetime.combine(earliest, datetime.min.time(), tzinfo=UTC)
    for linac_id in seed.linac_ids:
        db.add(
            Downtime(
                linac_id=linac_id,
                starts_at=down_from,
                ends_at=down_from + timedelta(days=60),
                kind="planned",
                reason="replacement",
            )
        )
    db.commit()
    page = client.get(f"/courses/{course_id}/propose", query_string={"earliest": str(earliest)})
    assert page.status_code == 200
    html = _html(page)
    assert "Book option" not in html
    assert "No schedule fits" in html
    # The cause is named: the machines down, their dates and the reason, not "capacity".
    assert re.search(r"TrueBeam 1 and TrueBeam 2 down [^;<]*\(replacement\)", html)
    assert "linac free" not in html
    # When the engine knows a later feasible start, the page links to proposals from it.
    link = re.search(r'href="(/courses/\d+/propose\?earliest=[^"]+)"', html)
    if "earliest possible start" in html:
        assert link
        later = client.get(link.group(1).replace("&amp;", "&"))
        assert len(_forms(_html(later), f"/courses/{course_id}/book")) == 3

    bad = client.get(f"/courses/{course_id}/propose", query_string={"window_start": "10:00"})
    assert bad.status_code == 422 and "give both times or neither" in _html(bad)


# --- moving ------------------------------------------------------------------------------


@pytest.mark.pinned_dates
def test_move_via_an_alternative(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session, now: datetime
) -> None:
    csrf = signed_in(client, "scheduler")
    course_id = _booked(client, csrf, seed, now)
    last = _fractions(db, course_id)[-1]
    page = client.get(f"/fractions/{last.id}/move")
    assert page.status_code == 200
    # The one-click forms carry an exact instant; the typed form has a date and time instead.
    forms = _forms(_html(page), f"/fractions/{last.id}/move")
    alternatives = [f for f in forms if "starts_at" in f]
    assert alternatives, "the last fraction should have somewhere else to go"
    moved = client.post(f"/fractions/{last.id}/move", data=alternatives[0])
    assert moved.status_code == 302, _html(moved)
    html = _html(client.get(moved.headers["Location"]))
    assert "Moved fraction 5 to" in html
    assert "change notice" in html and "Withdrawn:" in html
    target = alternatives[0]["starts_at"]
    after = _fractions(db, course_id)[-1]
    assert after.starts_at == datetime.fromisoformat(target.replace("Z", "+00:00"))
    assert after.version == 2


@pytest.mark.pinned_dates
def test_typed_move_shows_broken_rules_then_overrides(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session, now: datetime
) -> None:
    csrf = signed_in(client, "scheduler")
    course_id = _booked(client, csrf, seed, now)
    first, second = _fractions(db, course_id)[:2]
    # Fraction 2 three hours after fraction 1, the same day, on the other machine: it keeps
    # every hard rule (hours, no overlap) but breaks the protocol's day spacing.
    other = next(i for i in seed.linac_ids if i != first.linac_id)
    local = first.starts_at.astimezone(ZoneInfo("America/New_York"))
    typed = {
        "csrf_token": csrf,
        "date": local.date().isoformat(),
        "time": (local + timedelta(hours=3)).strftime("%H:%M"),
        "linac_id": str(other),
    }
    refused = client.post(f"/fractions/{second.id}/move", data=typed)
    assert refused.status_code == 422
    html = _html(refused)
    assert "Rules this time breaks" in html
    assert "fraction 2" in html
    assert 'id="override_reason"' in html and "Move anyway" in html
    assert _fractions(db, course_id)[1].starts_at == second.starts_at

    blank = client.post(f"/fractions/{second.id}/move", data={**typed, "override_reason": " "})
    assert blank.status_code == 422

    reason = "Clinician approved: patient travels far"
    moved = client.post(f"/fractions/{second.id}/move", data={**typed, "override_reason": reason})
    assert moved.status_code == 302, _html(moved)
    page = _html(client.get(moved.headers["Location"]))
    assert "Moved fraction 2" in page and "override" in page
    assert reason in page
    assert _fractions(db, course_id)[1].override_reason == reason


@pytest.mark.pinned_dates
def test_typed_time_in_a_dst_gap_or_overlap(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session, now: datetime
) -> None:
    csrf = signed_in(client, "scheduler")
    course_id = _booked(client, csrf, seed, now)
    fraction = _fractions(db, course_id)[2]
    base = {"csrf_token": csrf, "linac_id": str(fraction.linac_id)}
    # New York springs forward at 02:00 on 10 March 2030: 02:30 never happens.
    gap = client.post(
        f"/fractions/{fraction.id}/move", data={**base, "date": "2030-03-10", "time": "02:30"}
    )
    assert gap.status_code == 422
    assert re.search(r'id="move-time-error">Time: 2030-03-10 02:30 does not exist', _html(gap))
    assert 'value="2030-03-10"' in _html(gap)  # what was typed stays
    # ... and falls back at 02:00 on 3 November 2030: 01:30 happens twice.
    overlap = client.post(
        f"/fractions/{fraction.id}/move", data={**base, "date": "2030-11-03", "time": "01:30"}
    )
    assert overlap.status_code == 422
    html = _html(overlap)
    assert "occurs twice" in html
    assert "first (EDT)" in html and "second (EST)" in html
    # Choosing the occurrence settles the time; the rules then judge it (01:30 is closed).
    chosen = client.post(
        f"/fractions/{fraction.id}/move",
        data={**base, "date": "2030-11-03", "time": "01:30", "fold": "1"},
    )
    assert chosen.status_code == 422
    assert "occurs twice" not in _html(chosen) and "cannot be overridden" in _html(chosen)
    assert _fractions(db, course_id)[2].version == 1


# --- cancelling, missed ------------------------------------------------------------------


@pytest.mark.pinned_dates
def test_cancel_a_fraction_after_confirming(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session, now: datetime
) -> None:
    csrf = signed_in(client, "scheduler")
    course_id = _booked(client, csrf, seed, now)
    fraction = _fractions(db, course_id)[3]
    confirm = client.get(f"/fractions/{fraction.id}/cancel")
    assert confirm.status_code == 200 and 'for="reason"' in _html(confirm)
    no_reason = client.post(f"/fractions/{fraction.id}/cancel", data={"csrf_token": csrf})
    assert no_reason.status_code == 422 and "give a reason" in _html(no_reason)
    cancelled = client.post(
        f"/fractions/{fraction.id}/cancel", data={"csrf_token": csrf, "reason": "patient unwell"}
    )
    assert cancelled.status_code == 302
    page = _html(client.get(cancelled.headers["Location"]))
    assert "Cancelled fraction 4" in page and "cancellation notice" in page
    assert _fractions(db, course_id)[3].status == "cancelled"


@pytest.mark.pinned_dates
def test_cancel_a_course(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session, now: datetime
) -> None:
    csrf = signed_in(client, "scheduler")
    course_id = _booked(client, csrf, seed, now)
    assert client.get(f"/courses/{course_id}/cancel").status_code == 200
    done = client.post(
        f"/courses/{course_id}/cancel", data={"csrf_token": csrf, "reason": "plan changed"}
    )
    assert done.status_code == 302
    page = _html(client.get(done.headers["Location"]))
    assert "Course cancelled (5 fractions cancelled)" in page
    db.expire_all()
    assert db.get(Course, course_id).status == "cancelled"


@pytest.mark.pinned_dates
def test_record_missed_fraction(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session, now: datetime
) -> None:
    csrf = signed_in(client, "scheduler")
    course_id = _course(client, csrf, _patient(client, csrf, "MISS-1"), seed)
    # Booked as if a week ago, so fraction 1 has started (the pages always use "now"); two
    # days before a Monday morning, no session had started yet.
    then = now - timedelta(days=7)
    proposal = services.propose_schedules(db, course_id, earliest=then.date(), now=then)
    placements = [
        services.Placement(f.number, f.linac_id, f.start) for f in proposal.schedules[0].fractions
    ]
    services.book_course(db, course_id, placements, now=then)
    started = [f for f in _fractions(db, course_id) if f.starts_at <= now]
    assert started
    course_page = _html(client.get(f"/courses/{course_id}"))
    assert f"/fractions/{started[0].id}/missed" in course_page
    response = client.post(
        f"/fractions/{started[0].id}/missed",
        data={"csrf_token": csrf, "reason": "did_not_attend", "confirm": "yes"},
    )
    assert response.status_code == 302
    page = _html(client.get(response.headers["Location"]))
    assert f"Fraction {started[0].number} recorded as missed (patient did not attend)." in page
    assert "Rebooked for" in page or "needs review" in page


# --- roles, CSRF, unknown ids ------------------------------------------------------------


@pytest.mark.pinned_dates
def test_viewer_reads_but_cannot_change(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session, now: datetime
) -> None:
    csrf = signed_in(client, "scheduler")
    course_id = _course(client, csrf, _patient(client, csrf, "VIEW-1"), seed)
    option = _proposals(client, course_id, now)[0]

    viewer = client.application.test_client()
    viewer_csrf = signed_in(viewer, "viewer")
    patient_id = db.scalar(sa.select(Course.patient_id).where(Course.id == course_id))
    db.rollback()
    assert viewer.get(f"/patients/{patient_id}").status_code == 200
    course_page = viewer.get(f"/courses/{course_id}")
    assert course_page.status_code == 200
    assert "Propose schedules" not in _html(course_page)  # no actions offered
    # With the scheduler's form as it was (another session's token: refused before the role
    # is looked at), and with the viewer's own valid token (refused for the role).
    assert viewer.post(f"/courses/{course_id}/book", data=option).status_code == 400
    option["csrf_token"] = viewer_csrf
    assert viewer.post(f"/courses/{course_id}/book", data=option).status_code == 403
    assert viewer.get("/patients/new").status_code == 403
    assert viewer.get(f"/courses/{course_id}/propose").status_code == 403
    assert _fractions(db, course_id) == []


@pytest.mark.pinned_dates
def test_post_without_csrf_is_400(
    client: FlaskClient, signed_in: SignIn, seed: Seed, now: datetime
) -> None:
    csrf = signed_in(client, "scheduler")
    course_id = _course(client, csrf, _patient(client, csrf, "CSRF-1"), seed)
    option = _proposals(client, course_id, now)[0]
    del option["csrf_token"]
    assert client.post(f"/courses/{course_id}/book", data=option).status_code == 400
    option["csrf_token"] = "not-the-token"
    assert client.post(f"/courses/{course_id}/book", data=option).status_code == 400
    assert client.post("/patients/new", data={"mrn": "X"}).status_code == 400


def test_unknown_ids_are_404_and_signed_out_goes_to_login(
    client: FlaskClient, signed_in: SignIn, seed: Seed
) -> None:
    anonymous = client.application.test_client()
    response = anonymous.get("/courses/1")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    signed_in(client, "admin")
    for url in (
        "/patients/999999",
        "/patients/999999/courses/new",
        "/courses/999999",
        "/courses/999999/propose",
        "/courses/999999/cancel",
        "/fractions/999999/move",
        "/fractions/999999/cancel",
    ):
        assert client.get(url).status_code == 404, url


def test_readiness_in_the_fall_back_hour_records_now_unambiguously(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    # 01:30 New York time on 1 November 2026 happens twice; this is the first (EDT) one.
    first_half_past_one = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    with time_machine.travel(first_half_past_one, tick=False):
        csrf = signed_in(client, "scheduler")
        course_id = _course(client, csrf, _patient(client, csrf, "FALL-1"), seed)
        page = _html(client.get(f"/courses/{course_id}"))
        # The time is not prefilled: blank means the moment of saving, which is one instant.
        assert re.search(r'id="done_at" name="done_at" type="datetime-local" value=""', page)
        form = {"csrf_token": csrf, "record": "physics_qa"}

        # The wall-clock time typed by hand names two instants: refused, with the reason,
        # and the ticked step and the typed time are kept.
        typed = client.post(
            f"/courses/{course_id}/readiness", data=form | {"done_at": "2026-11-01T01:30"}
        )
        assert typed.status_code == 422
        html = _html(typed)
        assert "ambiguous" in html.lower() or "twice" in html
        assert re.search(r'id="record-physics_qa" name="record" value="physics_qa" checked', html)
        assert 'value="2026-11-01T01:30"' in html

        # Left blank, the form records now.
        blank = client.post(f"/courses/{course_id}/readiness", data=form | {"done_at": ""})
        assert blank.status_code == 302
        db.expire_all()
        assert db.get(Course, course_id).physics_qa_at == first_half_past_one
        db.rollback()  # the test's own read must not hold SQLite's write lock

        # An unambiguous typed time is recorded as typed.
        changed = client.post(
            f"/courses/{course_id}/readiness", data=form | {"done_at": "2026-11-01T09:15"}
        )
        assert changed.status_code == 302
        db.expire_all()
        assert db.get(Course, course_id).physics_qa_at == datetime(2026, 11, 1, 14, 15, tzinfo=UTC)


def _score_rows(section: str) -> list[tuple[str, str, int]]:
    """(part, measure, points) of each row of an option's score table."""
    table = section[section.index('<table class="score">') :]
    rows = re.findall(r'<th scope="row">([^<]+)</th>\s*<td>([^<]+)</td>\s*<td>(\d+)</td>', table)
    return [(part, measure, int(points)) for part, measure, points in rows]


def test_each_option_shows_its_score_parts_overall_days_and_gaps(
    client: FlaskClient, signed_in: SignIn, seed: Seed
) -> None:
    # Monday 1 March 2027, 06:00 in New York, before opening: the whole week is free.
    with time_machine.travel(datetime(2027, 3, 1, 11, 0, tzinfo=UTC), tick=False):
        csrf = signed_in(client, "scheduler")
        course_id = _course(client, csrf, _patient(client, csrf, "SCORE-P1"), seed)
        page = client.get(
            f"/courses/{course_id}/propose",
            query_string={"window_start": "09:00", "window_end": "12:00"},
        )
    assert page.status_code == 200, _html(page)
    html = _html(page)
    assert "best score first" in html
    sections = html.split('<section class="card" aria-labelledby="option-')[1:]
    assert len(sections) == 3
    totals = []
    for option, section in enumerate(sections, start=1):
        rows = _score_rows(section)
        assert [part for part, _, _ in rows] == [
            "Wait",
            "Overall time",
            "Linacs",
            "Time of day",
            "Preferred window",
            "Spacing",
            "Linac free time",
        ]
        caption = re.search(rf"Score of option {option}: (\d+) points?", section)
        assert caption and int(caption.group(1)) == sum(points for _, _, points in rows)
        totals.append(int(caption.group(1)))
    assert totals == sorted(totals)
    best = sections[0]
    assert "5 days overall; days between fractions: 1, 1, 1, 1" in best
    assert _score_rows(best) == [
        ("Wait", "starts on the earliest date, 1 March", 0),
        ("Overall time", "5 days overall, the shortest the protocol allows", 0),
        ("Linacs", "one linac", 0),
        ("Time of day", "the same time of day", 0),
        ("Preferred window", "every fraction in the preferred window", 0),
        ("Spacing", "even gaps", 0),
        ("Linac free time", "leaves 5 fragments of linac free time", 10),
    ]
    # The third option is the other start day, not the first one shifted by minutes.
    assert ("Wait", "starts 1 day after 1 March", 20) in _score_rows(sections[2])
