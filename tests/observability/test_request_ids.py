"""Request ids in the web app: taken from a sane caller, else made; answered; on log lines;
kept on the messages a request plans, so their sends can be traced back to it."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from config import load_settings
from notifications import outbox, sending
from notifications.channels.local import LocalOutboxChannel
from notifications.models import Reminder
from scheduler.observability.logs import make_handler
from tests.api.conftest import Seed
from tests.committing import records
from tests.conftest import at_clinic_hours

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@sqlite_only
def test_a_sane_incoming_id_is_kept_and_any_other_replaced(database_url: str, app: Flask) -> None:
    client = app.test_client()
    kept = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a9c21.42"})
    assert kept.headers["X-Request-ID"] == "lb-7f3a9c21.42"
    made = {client.get("/healthz").headers["X-Request-ID"] for _ in range(3)}
    assert len(made) == 3 and all(len(x) == 32 for x in made)
    for bad in ("short", "x" * 200, "abc def ghi jkl", "abcdefgh<script>", "é" * 10):
        answered = client.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert answered != bad and len(answered) == 32


@sqlite_only
def test_every_line_logged_during_a_request_carries_its_id(database_url: str, app: Flask) -> None:
    stream = io.StringIO()
    handler = make_handler("json", "web", stream)
    logging.getLogger().addHandler(handler)
    try:

        @app.get("/log-something")
        def log_something() -> str:
            logging.getLogger("web.test").warning("something for %s", "a test")
            return "ok"

        app.test_client().get("/log-something", headers={"X-Request-ID": "req-00000001"})
        logging.getLogger("web.test").warning("outside any request")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    inside = next(x for x in lines if x["message"] == "something for a test")
    outside = next(x for x in lines if x["message"] == "outside any request")
    assert inside["request_id"] == "req-00000001" and inside["service"] == "web"
    assert outside["request_id"] == "-"


def test_log_and_metrics_settings_are_checked() -> None:
    base = {"SECRET_KEY": "x" * 40, "INSTANCE_DIR": "/tmp"}
    assert load_settings(base).log_format == "json"
    assert load_settings({**base, "LOG_FORMAT": "TEXT"}).log_format == "text"
    settings = load_settings({**base, "WORKER_METRICS_PORT": "9540", "METRICS_TOKEN": "t"})
    assert settings.worker_metrics_port == 9540 and settings.metrics_token == "t"
    for bad in ({"LOG_FORMAT": "xml"}, {"LOG_LEVEL": "LOUD"}, {"WORKER_METRICS_PORT": "0"}):
        with pytest.raises(ValueError):
            load_settings({**base, **bad})


@sqlite_only
@at_clinic_hours  # the booking's confirmation is due at once, inside the message window
def test_a_booking_request_id_leads_to_its_messages_sends(
    database_url: str,
    client: FlaskClient,
    db: Session,
    seed: Seed,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    patient = records.create_patient(
        db,
        {
            "department_id": seed.department_id, "mrn": "RID-1", "given_name": "Ida",
            "family_name": "Roth", "date_of_birth": date(1958, 3, 4),
            "phone": "+12125550163", "language": "en", "sms_consent": True,
        },
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    course_id = course.id
    db.commit()
    booked = client.post(
        f"/api/v1/courses/{course_id}/booking",
        json={"best": True},
        headers={
            "Authorization": f"Bearer {seed.tokens['scheduler']}",
            "X-Request-ID": "booking-req-0001",
        },
    )
    assert booked.status_code == 201, booked.json
    planned = db.execute(
        sa.select(Reminder.id, Reminder.origin_request_id).where(Reminder.course_id == course_id)
    ).all()
    db.rollback()
    assert planned and {origin for _, origin in planned} == {"booking-req-0001"}

    ids = outbox.claim_due(db, now=datetime.now(UTC))  # due at the booking, after `now`
    db.rollback()
    assert ids, "nothing due: the confirmation should go at once"
    channels = sending.Channels(sms=LocalOutboxChannel(), email=LocalOutboxChannel())
    with caplog.at_level(logging.INFO, logger="notifications.sending"):
        sending.send_batch(session_factory, ids, channels, public_base_url="https://c.example.org")
    sends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reminder ")]
    assert len(sends) == len(ids)
    assert all(line.endswith("planned in request booking-req-0001") for line in sends), sends
