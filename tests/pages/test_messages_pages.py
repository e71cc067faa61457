"""Message pages: timelines with every status, the problem queue's retry and suppress, the
schedulers' inbox. Driven through the test client after signing in through /login."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

import scheduler.accounts
from notifications.models import InboundMessage, Reminder, ReminderStatus
from scheduler.models import AuditEntry, User
from tests.api.conftest import ADMIN_PASSWORD, Seed
from tests.committing import accounts, records
from tests.pages.conftest import csrf_from

DUE = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)  # 10:00 EDT in the seeded New York department
FAILED_REASON = "30003: Unreachable destination handset"


def _patient_with_course(db: Session, seed: Seed, mrn: str = "MRN-41") -> tuple[int, int]:
    """(patient id, course id); the test session's transaction is ended (see _row)."""
    patient = records.create_patient(
        db,
        {
            "department_id": seed.department_id,
            "mrn": mrn,
            "given_name": "Rosa",
            "family_name": "Delgado",
            "date_of_birth": date(1968, 9, 23),
            "phone": "+12125550177",
            "language": "en",
            "sms_consent": True,
        },
    )
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    ids = patient.id, course.id
    db.rollback()
    return ids


def _reminder(
    db: Session, patient_id: int, course_id: int, status: str, n: int, **values: object
) -> int:
    row = Reminder(
        dedupe_key=f"test:{course_id}:{n}",
        kind="day_before",
        channel="sms",
        patient_id=patient_id,
        course_id=course_id,
        due_at=DUE + timedelta(hours=n),
        status=status,
        **values,
    )
    db.add(row)
    db.commit()
    return row.id


@pytest.fixture(autouse=True)
def _fast_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Argon2 at production cost takes most of a second per hash; these tests sign in several
    # users and test nothing about hashing, so they use the cheapest parameters.
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(scheduler.accounts, "_hasher", lambda: cheap)


def sign_in(client: FlaskClient, db: Session, role: str) -> str:
    """Sign in as the seeded user of ``role``; returns the session's CSRF token.

    Like the ``signed_in`` fixture, but it ends its own read transaction before the app is
    called: on SQLite an open transaction of the test's session holds the write lock.
    """
    user = db.scalar(sa.select(User).where(User.email == f"{role}@example.org"))
    assert user is not None
    email, has_password = user.email, user.password_hash is not None
    if not has_password:
        accounts.update_user(db, user.id, password=ADMIN_PASSWORD)
    db.rollback()
    login = client.get("/login").get_data(as_text=True)
    response = client.post(
        "/login",
        data={"csrf_token": csrf_from(login), "email": email, "password": ADMIN_PASSWORD},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    return csrf_from(client.get("/").get_data(as_text=True))


def _row(db: Session, reminder_id: int) -> dict[str, object]:
    """A reminder's current columns, read in a transaction that is then ended.

    On SQLite every transaction takes the write lock (BEGIN IMMEDIATE), so the test's session
    must not hold one while the app handles a request.
    """
    db.expire_all()
    row = db.get(Reminder, reminder_id)
    assert row is not None
    values = {
        c: getattr(row, c)
        for c in ("status", "status_reason", "next_attempt_at", "send_started_at")
    }
    db.rollback()
    return values


def _statuses(db: Session, patient_id: int, course_id: int) -> dict[str, int]:
    rows = {}
    for n, status in enumerate(ReminderStatus):
        extra: dict[str, object] = {}
        if status == ReminderStatus.FAILED:
            extra = {"status_reason": FAILED_REASON, "attempts": 3}
        elif status not in (ReminderStatus.PENDING, ReminderStatus.CLAIMED):
            extra = {"rendered_body": f"Body of the {status} message"}
        if status == ReminderStatus.UNKNOWN:
            extra["send_started_at"] = DUE
        rows[status.value] = _reminder(db, patient_id, course_id, status, n, **extra)
    db.rollback()
    return rows


def test_timelines_show_every_status_with_reason_and_local_times(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    patient_id, course_id = _patient_with_course(db, seed)
    _statuses(db, patient_id, course_id)
    assert client.get(f"/patients/{patient_id}/messages").status_code == 302  # sign in first
    sign_in(client, db, "viewer")

    for url in (f"/patients/{patient_id}/messages", f"/courses/{course_id}/messages"):
        response = client.get(url)
        html = response.get_data(as_text=True)
        assert response.status_code == 200, url
        for status in (
            "pending",
            "sent",
            "delivered",
            "failed",
            "suppressed",
            "superseded",
            "unknown",
        ):
            assert f"msg-status-{status}" in html, status
        assert FAILED_REASON in html
        assert "Body of the delivered message" in html
        assert "Mon 9 Mar 2026 10:00 EDT" in html  # department zone, not UTC
        # One patient's timeline names the patient with both identifiers.
        assert re.search(
            r'identity-name">Delgado, Rosa</strong>.*DOB <time datetime="1968-09-23">'
            r"23 Sep 1968</time>.*MRN MRN-41",
            html,
        ), url
    # The list of every patient's messages keeps to initials and MRN (shared screens).
    log = client.get("/messages").get_data(as_text=True)
    assert "RD (MRN-41)" in log and "Delgado" not in log and "1968" not in log
    # Viewing a patient's messages is itself recorded.
    db.expire_all()
    viewed = db.scalars(
        sa.select(AuditEntry).where(
            AuditEntry.action == "view", AuditEntry.subject_type == "patient"
        )
    ).all()
    assert [e.subject_id for e in viewed] == [patient_id]
    db.rollback()
    assert client.get("/patients/999999/messages").status_code == 404
    assert client.get("/courses/999999/messages").status_code == 404
    assert client.get("/messages").status_code == 200
    # The problem queue is the admin's.
    assert client.get("/messages/problems").status_code == 403


def test_admin_retries_and_suppresses_problem_messages(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    patient_id, course_id = _patient_with_course(db, seed)
    rows = _statuses(db, patient_id, course_id)
    failed, unknown, pending = rows["failed"], rows["unknown"], rows["pending"]

    scheduler = sign_in(client, db, "scheduler")
    assert client.get("/messages/problems").status_code == 403
    denied = client.post(f"/messages/{failed}/retry", data={"csrf_token": scheduler})
    assert denied.status_code == 403

    csrf = sign_in(client, db, "admin")
    page = client.get("/messages/problems").get_data(as_text=True)
    assert FAILED_REASON in page and f"message-{unknown}" in page
    assert f"/messages/{failed}/retry" in page and f"/messages/{unknown}/suppress" in page
    assert f"message-{pending}" not in page  # only failed and unknown are problems
    assert client.post(f"/messages/{failed}/retry").status_code == 400  # no CSRF token
    assert client.post("/messages/999999/retry", data={"csrf_token": csrf}).status_code == 404

    assert client.post(f"/messages/{failed}/retry", data={"csrf_token": csrf}).status_code == 302
    # An unknown message may have reached the patient: without confirmation nothing changes.
    client.post(f"/messages/{unknown}/retry", data={"csrf_token": csrf})
    assert _row(db, unknown)["status"] == ReminderStatus.UNKNOWN
    retried = _row(db, failed)
    assert retried["status"] == ReminderStatus.PENDING
    assert retried["next_attempt_at"] is not None and retried["send_started_at"] is None

    client.post(f"/messages/{unknown}/retry", data={"csrf_token": csrf, "confirm": "yes"})
    row = _row(db, unknown)
    assert row["status"] == ReminderStatus.PENDING and row["send_started_at"] is None

    # Suppress needs a reason.
    client.post(f"/messages/{unknown}/suppress", data={"csrf_token": csrf, "reason": " "})
    assert _row(db, unknown)["status"] == ReminderStatus.PENDING
    response = client.post(
        f"/messages/{unknown}/suppress",
        data={"csrf_token": csrf, "reason": "patient asked by phone"},
        follow_redirects=True,
    )
    assert "suppressed" in response.get_data(as_text=True)
    row = _row(db, unknown)
    assert row["status"] == ReminderStatus.SUPPRESSED
    assert row["status_reason"] == "suppressed by staff: patient asked by phone"
    # A message that is no longer a problem (delivered meanwhile) is left alone.
    stale = client.post(
        f"/messages/{rows['delivered']}/retry", data={"csrf_token": csrf}, follow_redirects=True
    )
    assert "changed meanwhile" in stale.get_data(as_text=True)
    assert _row(db, rows["delivered"])["status"] == ReminderStatus.DELIVERED
    actions = db.scalars(
        sa.select(AuditEntry.action).where(AuditEntry.subject_type == "reminder")
    ).all()
    assert sorted(actions) == ["retry", "retry", "suppress"]
    db.rollback()


def test_scheduler_marks_inbox_replies_handled(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    patient_id, _ = _patient_with_course(db, seed)
    matched = InboundMessage(
        provider_id="SM-in-1",
        from_number="+12125550177",
        patient_id=patient_id,
        body="Can I bring my daughter?",
        action="inbox",
        needs_attention=True,
    )
    stranger = InboundMessage(
        provider_id="SM-in-2",
        from_number="+13105550999",
        body="who is this",
        action="inbox",
        needs_attention=True,
    )
    settled = InboundMessage(
        provider_id="SM-in-3",
        from_number="+12125550177",
        patient_id=patient_id,
        body="C",
        action="confirm",
        needs_attention=False,
    )
    db.add_all([matched, stranger, settled])
    db.commit()
    matched_id, settled_id = matched.id, settled.id
    db.rollback()

    sign_in(client, db, "viewer")
    assert client.get("/messages/inbox").status_code == 403
    csrf = sign_in(client, db, "scheduler")
    html = client.get("/messages/inbox").get_data(as_text=True)
    assert "Can I bring my daughter?" in html and "who is this" in html
    assert f"inbound-{settled_id}" not in html
    assert "RD (MRN-41)" in html and "no matching patient" in html
    assert "+12125550177" not in html and "0177" in html  # masked number

    response = client.post(
        f"/messages/inbox/{matched_id}/handled", data={"csrf_token": csrf}, follow_redirects=True
    )
    assert response.status_code == 200
    assert "Can I bring my daughter?" not in response.get_data(as_text=True)
    db.expire_all()
    row = db.get(InboundMessage, matched_id)
    scheduler_id = db.scalar(sa.select(User.id).where(User.email == "scheduler@example.org"))
    assert row.needs_attention is False and row.handled_at is not None
    assert row.handled_by_id == scheduler_id
    db.rollback()
    assert (
        client.post("/messages/inbox/999999/handled", data={"csrf_token": csrf}).status_code == 404
    )
