"""Repairing a course on the staff pages: an incomplete course on its page, the work queue and
the calendar; rebooking; a clinician's prescription change; recording a missed fraction with
its reason and confirmation, and undoing it. The clock is set by each test."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, Course, Downtime, Fraction
from tests.api.conftest import Seed
from tests.committing import records, services
from tests.pages.conftest import SignIn
from tests.pages.test_patients_pages import _forms

# A Monday in early March 2026, 07:00 in New York: the whole course fits before the DST change.
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _html(response) -> str:  # noqa: ANN001 - a test response
    return response.get_data(as_text=True)


def _booked_course(db: Session, seed: Seed, mrn: str) -> tuple[int, list[Fraction]]:
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": mrn, "given_name": "Ana",
         "family_name": "Lopez", "phone": "+14155552671", "sms_consent": True,
         "date_of_birth": date(1958, 11, 2)},
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    course_id = course.id
    proposal = services.propose_schedules(db, course_id, now=NOW).schedules[0]
    placements = [services.Placement(f.number, f.linac_id, f.start) for f in proposal.fractions]
    services.book_course(db, course_id, placements, now=NOW)
    return course_id, _fractions(db, course_id)


def _fractions(db: Session, course_id: int) -> list[Fraction]:
    db.expire_all()
    rows = list(
        db.scalars(
            sa.select(Fraction)
            .where(Fraction.course_id == course_id)
            .order_by(Fraction.number, Fraction.id)
        )
    )
    # Detached as loaded: reading them later must not open a transaction, which on SQLite
    # would hold the write lock the app needs.
    db.expunge_all()
    db.rollback()
    return rows


def _status(db: Session, course_id: int) -> str:
    db.expire_all()
    status = db.scalar(sa.select(Course.status).where(Course.id == course_id))
    db.rollback()
    return status


def _audited(db: Session, action: str) -> list[AuditEntry]:
    entries = list(db.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)))
    db.expunge_all()
    db.rollback()
    return entries


def _cancel(client: FlaskClient, csrf: str, fraction_id: int) -> None:
    response = client.post(
        f"/fractions/{fraction_id}/cancel", data={"csrf_token": csrf, "reason": "away that day"}
    )
    assert response.status_code == 302, _html(response)


def test_an_incomplete_course_is_shown_everywhere_and_rebooked(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    with time_machine.travel(NOW, tick=False):
        course_id, fractions = _booked_course(db, seed, "INC-1")
        csrf = signed_in(client, "scheduler")
        _cancel(client, csrf, fractions[2].id)
        assert _status(db, course_id) == "incomplete"

        page = _html(client.get(f"/courses/{course_id}"))
        assert "4 of 5 fractions held; fraction 3 to rebook" in page
        assert f'href="/courses/{course_id}/rebook"' in page

        queue = _html(client.get("/downtime"))
        assert "Incomplete courses" in queue
        assert f"Rebook course {course_id}" in queue

        week = _html(client.get("/calendar/week", query_string={"start": "2026-03-02"}))
        assert week.count("course-incomplete") == 4  # the four sessions the course holds
        assert "course incomplete" in week

        proposals = client.get(f"/courses/{course_id}/rebook")
        assert proposals.status_code == 200
        options = _forms(_html(proposals), f"/courses/{course_id}/rebook")
        assert options and options[0].getlist("number") == ["3"]
        done = client.post(f"/courses/{course_id}/rebook", data=options[0])
        assert done.status_code == 302, _html(done)
        page = _html(client.get(done.headers["Location"]))
        assert "Rebooked fraction 3 for" in page and "The course is complete again." in page
        assert "change notice" in page  # the patient is told of the new session
        assert "to rebook" not in page
        assert _status(db, course_id) == "booked"
        assert [e.subject_id for e in _audited(db, "rebook")] == [course_id]

        week = _html(client.get("/calendar/week", query_string={"start": "2026-03-02"}))
        assert "course-incomplete" not in week
        assert f"Rebook course {course_id}" not in _html(client.get("/downtime"))


def test_a_course_that_cannot_be_rebooked_waits_for_a_prescription_change(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    with time_machine.travel(NOW, tick=False):
        course_id, fractions = _booked_course(db, seed, "INC-2")
        # Fraction 3 can only fall between fractions 2 and 4: make that time unavailable.
        for linac_id in seed.linac_ids:
            db.add(
                Downtime(
                    linac_id=linac_id,
                    starts_at=fractions[1].ends_at,
                    ends_at=fractions[3].starts_at,
                    kind="planned",
                    reason="service",
                )
            )
        db.commit()
        csrf = signed_in(client, "scheduler")
        _cancel(client, csrf, fractions[2].id)
        assert _status(db, course_id) == "needs_review"

        rebook = _html(client.get(f"/courses/{course_id}/rebook"))
        assert "No rebooking fits: a clinician must decide" in rebook
        queue = _html(client.get("/downtime"))
        assert "cannot be rebooked within the protocol" in queue

        # Reviewing it on the work queue does not make it whole: it stays incomplete.
        reviewed = client.post(f"/downtime/courses/{course_id}/reviewed", data={"csrf_token": csrf})
        assert reviewed.status_code == 302
        assert _status(db, course_id) == "incomplete"
        assert f"Rebook course {course_id}" in _html(client.get("/downtime"))

        url = f"/courses/{course_id}/prescription"
        refused = client.post(url, data={"csrf_token": csrf, "fractions": "4", "reason": " "})
        assert refused.status_code == 422
        assert "Reason: give the clinical reason for the change" in _html(refused)
        wrong = client.post(url, data={"csrf_token": csrf, "fractions": "2", "reason": "dose"})
        assert wrong.status_code == 422
        assert "Fractions: one of 4 or 5" in _html(wrong)
        assert 'name="reason" rows="2" maxlength="500" required aria-invalid="true"' not in _html(
            wrong
        )
        assert ">dose</textarea>" in _html(wrong)  # what was typed is kept
        assert _status(db, course_id) == "incomplete"

        changed = client.post(
            url, data={"csrf_token": csrf, "fractions": "4", "reason": "4 fractions agreed"}
        )
        assert changed.status_code == 302, _html(changed)
        page = _html(client.get(changed.headers["Location"]))
        assert "Prescription changed to 4 fractions" in page
        assert "4 fractions: 4 fractions agreed" in page
        assert "to rebook" not in page
        assert _status(db, course_id) == "booked"
        assert [e.subject_id for e in _audited(db, "prescription")] == [course_id]


def test_missed_takes_a_reason_and_a_confirmation_and_is_undone_that_day_only(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    with time_machine.travel(NOW, tick=False):
        course_id, fractions = _booked_course(db, seed, "MISS-2")
    second, third = fractions[1], fractions[2]
    during = second.starts_at + timedelta(minutes=20)
    with time_machine.travel(during, tick=False):
        csrf = signed_in(client, "scheduler")
        url = f"/fractions/{second.id}/missed"
        assert f'href="{url}"' in _html(client.get(f"/courses/{course_id}"))
        form = client.get(url)
        assert form.status_code == 200
        assert 'value="machine_fault"' in _html(form) and 'name="confirm"' in _html(form)

        unconfirmed = client.post(url, data={"csrf_token": csrf, "reason": "unwell"})
        assert unconfirmed.status_code == 422
        assert "Confirmation: confirm that the patient was not treated" in _html(unconfirmed)
        no_words = client.post(url, data={"csrf_token": csrf, "reason": "other", "confirm": "yes"})
        assert no_words.status_code == 422
        assert "Details: say why, when the reason is other" in _html(no_words)
        no_reason = client.post(url, data={"csrf_token": csrf, "confirm": "yes"})
        assert no_reason.status_code == 422
        assert "Reason: choose why the fraction was missed" in _html(no_reason)
        assert _fractions(db, course_id)[1].status == "booked"

        recorded = client.post(
            url,
            data={"csrf_token": csrf, "reason": "other", "reason_text": "no transport",
                  "confirm": "yes"},
        )  # fmt: skip
        assert recorded.status_code == 302, _html(recorded)
        page = _html(client.get(recorded.headers["Location"]))
        assert "Fraction 2 recorded as missed (other). Rebooked for" in page
        assert "no transport" in page  # the reason is shown with the fraction
        assert "Undo missed fraction 2" in page

        undo = client.post(f"/fractions/{second.id}/missed/undo", data={"csrf_token": csrf})
        assert undo.status_code == 302
        page = _html(client.get(undo.headers["Location"]))
        assert "Fraction 2 is no longer recorded as missed; it is booked again." in page
        assert [e.subject_id for e in _audited(db, "undo_missed")] == [second.id]

    during = third.starts_at + timedelta(minutes=20)
    with time_machine.travel(during, tick=False):
        # Days later the idle session has ended: the scheduler signs in again.
        csrf = signed_in(client, "scheduler")
        recorded = client.post(
            f"/fractions/{third.id}/missed",
            data={"csrf_token": csrf, "reason": "did_not_attend", "confirm": "yes"},
        )
        assert recorded.status_code == 302
        assert urlsplit(recorded.headers["Location"]).path == f"/courses/{course_id}"
    with time_machine.travel(during + timedelta(days=1), tick=False):
        csrf = signed_in(client, "scheduler")
        page = _html(client.get(f"/courses/{course_id}"))
        assert "patient did not attend" in page
        assert "Undo missed fraction 3" not in page
        late = client.post(f"/fractions/{third.id}/missed/undo", data={"csrf_token": csrf})
        assert late.status_code == 302
        page = _html(client.get(late.headers["Location"]))
        assert "The missed fraction was not restored" in page
        assert "it can be undone only on that day" in page
    assert {r.id: r.status for r in _fractions(db, course_id)}[third.id] == "missed"
