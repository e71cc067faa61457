"""The message log: ordered by when each message was or will be sent, filtered by status,
channel, patient and local dates; bad filter values answer a readable 400 page."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

import scheduler.accounts
from notifications.models import Reminder
from tests.api.conftest import Seed
from tests.committing import records
from tests.pages.test_messages_pages import sign_in

# The seeded department is New York: 9 March 2026 00:00 local is 04:00 UTC (EDT from the 8th).
BASE = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fast_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(scheduler.accounts, "_hasher", lambda: cheap)


def _patient(db: Session, seed: Seed, mrn: str) -> tuple[int, int]:
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": mrn, "given_name": "Rosa",
         "family_name": "Delgado", "date_of_birth": date(1968, 9, 23),
         "phone": "+12125550177", "language": "en", "sms_consent": True},
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    ids = patient.id, course.id
    db.rollback()
    return ids


def _message(db: Session, patient_course: tuple[int, int], key: str, **values: object) -> int:
    patient_id, course_id = patient_course
    row = Reminder(
        dedupe_key=f"log:{key}",
        kind="day_before",
        patient_id=patient_id,
        course_id=course_id,
        rendered_body=f"Body {key}",
        **values,
    )
    db.add(row)
    db.commit()
    return row.id


@pytest.fixture
def messages(db: Session, seed: Seed) -> dict[str, int]:
    """Five messages whose due order differs from the order they were (or will be) sent."""
    rosa = _patient(db, seed, "MRN-LOG-1")
    omar = _patient(db, seed, "MRN-LOG-2")
    ids = {
        # Due first but sent last: it is ordered by its sent time.
        "late": _message(db, rosa, "late", channel="sms", status="sent",
                         due_at=BASE, sent_at=BASE + timedelta(hours=5)),
        "early": _message(db, rosa, "early", channel="email", status="sent",
                          due_at=BASE + timedelta(hours=1), sent_at=BASE + timedelta(hours=1)),
        "failed": _message(db, omar, "failed", channel="sms", status="failed",
                           due_at=BASE + timedelta(hours=2), status_reason="30003"),
        "pending": _message(db, omar, "pending", channel="sms", status="pending",
                            due_at=BASE + timedelta(days=1, hours=3)),
        # 02:00 local on 11 March (06:00 UTC): a different local day from its UTC day's start.
        "night": _message(db, rosa, "night", channel="email", status="pending",
                          due_at=datetime(2026, 3, 11, 6, 0, tzinfo=UTC)),
    }  # fmt: skip
    db.rollback()
    return ids


def _order(client: FlaskClient, **query: str) -> list[int]:
    response = client.get("/messages", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return [int(n) for n in re.findall(r'id="message-(\d+)"', response.get_data(as_text=True))]


def test_messages_are_ordered_by_when_they_were_or_will_be_sent(
    client: FlaskClient, db: Session, seed: Seed, messages: dict[str, int]
) -> None:
    sign_in(client, db, "viewer")
    m = messages
    newest = [m["night"], m["pending"], m["late"], m["failed"], m["early"]]
    assert _order(client) == newest
    assert _order(client, sort="oldest") == list(reversed(newest))
    # The toggle on the page leads to the other order, keeping the filters.
    page = client.get("/messages", query_string={"channel": "sms"}).get_data(as_text=True)
    assert 'href="/messages?channel=sms&amp;sort=oldest"' in page


def test_filters_by_status_channel_patient_and_local_dates(
    client: FlaskClient, db: Session, seed: Seed, messages: dict[str, int]
) -> None:
    sign_in(client, db, "viewer")
    m = messages
    omar = db.get(Reminder, m["failed"]).patient_id  # type: ignore[union-attr]
    db.rollback()
    assert _order(client, status="failed") == [m["failed"]]
    assert _order(client, channel="email") == [m["night"], m["early"]]
    assert _order(client, channel="sms", status="pending") == [m["pending"]]
    assert _order(client, patient=str(omar)) == [m["pending"], m["failed"]]
    # Local days of New York: "late" was sent 17:00 UTC on the 9th (13:00 EDT), "night" is
    # due 02:00 EDT on the 11th.
    assert _order(client, **{"from": "2026-03-10"}) == [m["night"], m["pending"]]
    assert _order(client, **{"to": "2026-03-09"}) == [m["late"], m["failed"], m["early"]]
    assert _order(client, **{"from": "2026-03-11", "to": "2026-03-11"}) == [m["night"]]
    empty = client.get("/messages", query_string={"from": "2030-01-01"})
    assert "No messages match these filters." in empty.get_data(as_text=True)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"status": "lost"}, "Status must be one of pending"),
        ({"channel": "fax"}, "Channel must be one of sms, email."),
        ({"patient": "Delgado"}, "Patient must be a patient&#39;s number"),
        ({"patient": "²"}, "Patient must be a patient&#39;s number"),
        ({"from": "2026-02-30"}, "From must be a date such as 2026-03-09"),
        ({"to": "9999-12-31"}, "To must be a date such as 2026-03-09"),
        ({"from": "2026-03-10", "to": "2026-03-09"}, "To must not be before From."),
        ({"sort": "sideways"}, "Order must be one of newest, oldest."),
    ],
)
def test_bad_filter_values_are_explained_not_a_server_error(
    client: FlaskClient, db: Session, seed: Seed, messages: dict[str, int],
    query: dict[str, str], message: str,
) -> None:  # fmt: skip
    sign_in(client, db, "viewer")
    response = client.get("/messages", query_string=query)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert message in html
    assert 'id="message-' not in html  # nothing listed under a filter that was not applied
