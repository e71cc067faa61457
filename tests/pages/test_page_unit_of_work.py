"""A page's change and its audit entry are one unit of work: when the commit fails, neither is
stored; when it succeeds, both are, and the entry says the action came through the pages."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, Patient
from tests.api.conftest import Seed
from tests.pages.conftest import SignIn


class CommitFailure(RuntimeError):
    pass


@pytest.fixture
def failing_audited_commit() -> Iterator[Callable[[], None]]:
    """Arms a failure: from then on, a commit that would store an audit entry fails, after
    everything was flushed. Armed by the test once signed in, since signing in is audited too."""

    def note(session: Session, _context: object, _instances: object) -> None:
        if any(isinstance(row, AuditEntry) for row in session.new):
            session.info["writes_audit"] = True

    def fail(session: Session) -> None:
        session.flush()
        if session.info.pop("writes_audit", False):
            raise CommitFailure("the database refused the commit")

    armed = False

    def arm() -> None:
        nonlocal armed
        event.listen(Session, "before_flush", note)
        event.listen(Session, "before_commit", fail)
        armed = True

    try:
        yield arm
    finally:
        if armed:
            event.remove(Session, "before_flush", note)
            event.remove(Session, "before_commit", fail)


def _new_patient(client: FlaskClient, csrf: str) -> int:
    data = {
        "csrf_token": csrf, "mrn": "UOW-1", "given_name": "Ana", "family_name": "Lopez",
        "date_of_birth": "1961-02-03", "phone": "(415) 555-0100", "phone_country": "US",
        "email": "ana@example.org", "language": "es", "timezone": "", "sms_consent": "yes",
    }  # fmt: skip
    try:
        return client.post("/patients/new", data=data).status_code
    except CommitFailure:
        return 500


def _counts(db: Session) -> tuple[int, int]:
    patients = db.scalar(sa.select(sa.func.count()).select_from(Patient))
    entries = db.scalar(
        sa.select(sa.func.count()).select_from(AuditEntry).where(AuditEntry.action == "create")
    )
    db.rollback()
    return patients, entries


def test_a_page_change_and_its_audit_entry_fail_together(
    client: FlaskClient,
    seed: Seed,
    db: Session,
    signed_in: SignIn,
    failing_audited_commit: Callable[[], None],
) -> None:
    csrf = signed_in(client, "scheduler")
    failing_audited_commit()
    assert _new_patient(client, csrf) == 500
    assert _counts(db) == (0, 0)


def test_a_page_change_and_its_audit_entry_are_stored_together(
    client: FlaskClient, seed: Seed, db: Session, signed_in: SignIn
) -> None:
    csrf = signed_in(client, "scheduler")
    assert _new_patient(client, csrf) == 302
    assert _counts(db) == (1, 1)
    entry = db.scalars(sa.select(AuditEntry).where(AuditEntry.action == "create")).one()
    assert entry.subject_type == "patient" and entry.detail["via"] == "web"
