"""No patient data in any log line of a whole run, with every process real.

The web app under gunicorn (as deployed), a Celery worker and beat on Redis, the
Twilio-compatible and SMTP servers on loopback. A patient is registered, booked and sent
their confirmation by SMS and email; they reply by SMS through the signed webhook, their
message is reported delivered, and they open their link. Then every line the processes
logged, at DEBUG, is searched for the patient's names, MRN, phone number (international and
national), email address, link token, the text they were sent and the text they sent.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from notifications.replies import INBOUND_PATH, STATUS_CALLBACK_PATH
from scheduler.observability.logs import formatter
from tests.api.conftest import Seed, seed_reference_data
from tests.fakes.smtp_server import FakeSmtp
from tests.fakes.twilio_server import FakeTwilio
from tests.integration.harness import PUBLIC_BASE_URL, midday_zone
from tests.observability.scrape import start_gunicorn, stop

pytestmark = [pytest.mark.slow, pytest.mark.redis]
on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

GIVEN, FAMILY, MRN = "Marguerite", "Okonkwo-Villanueva", "MRN-775533"
PHONE, NATIONAL = "+12125551234", re.compile(r"\(?212\)?[ .-]?555[ .-]?1234")
EMAIL = "marguerite.okonkwo@example.org"
REPLY = "Hello, this is Marguerite, may my daughter Zaynab come along?"
TIMEOUT = 60.0


def phi_found(text: str, values: list[str]) -> list[str]:
    """Which of the patient's values (and their national phone number) occur in `text`."""
    lowered = text.lower()
    found = [v for v in values if v.lower() in lowered]
    if NATIONAL.search(text):
        found.append("national phone number")
    return found


def _wait(what: str, check, timeout: float = TIMEOUT):  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)


def _signed_post(base: str, path: str, params: dict[str, str], auth_token: str) -> int:
    signature = RequestValidator(auth_token).compute_signature(PUBLIC_BASE_URL + path, params)
    response = requests.post(
        base + path, data=params, headers={"X-Twilio-Signature": signature}, timeout=10
    )
    return response.status_code


def _book(base: str, seed: Seed) -> None:
    auth = seed.auth("scheduler")
    now = datetime.now(UTC)
    patient = requests.post(
        f"{base}/api/v1/patients",
        json={"department_id": seed.department_id, "mrn": MRN, "given_name": GIVEN,
              "family_name": FAMILY, "date_of_birth": "1958-03-14", "phone": PHONE,
              "email": EMAIL, "sms_consent": True, "email_consent": True,
              "timezone": midday_zone(now)},
        headers=auth, timeout=10,
    )  # fmt: skip
    assert patient.status_code == 201, patient.text
    found = requests.post(
        f"{base}/api/v1/patients/search", json={"query": FAMILY}, headers=auth, timeout=10
    )
    assert found.status_code in (200, 404, 405, 422), found.text  # whichever; it is logged
    course = requests.post(
        f"{base}/api/v1/courses",
        json={"patient_id": patient.json()["id"], "protocol_id": seed.protocol_id, "priority": 2},
        headers=auth,
        timeout=10,
    )
    assert course.status_code == 201, course.text
    course_id = course.json()["id"]
    earliest = now.astimezone(ZoneInfo("America/New_York")).date() + timedelta(days=7)
    proposed = requests.post(
        f"{base}/api/v1/courses/{course_id}/proposals",
        json={"count": 1, "earliest": earliest.isoformat()},
        headers=auth,
        timeout=30,
    )
    assert proposed.status_code == 200, proposed.text
    placements = [
        {"number": f["number"], "linac_id": f["linac_id"], "starts_at": f["starts_at"]}
        for f in proposed.json()["schedules"][0]["fractions"]
    ]
    booked = requests.post(
        f"{base}/api/v1/courses/{course_id}/booking",
        json={"fractions": placements},
        headers=auth,
        timeout=30,
    )
    assert booked.status_code == 201, booked.text


@on_postgresql
def test_a_whole_run_logs_nothing_about_the_patient(
    redis_broker: str,
    make_pipeline,  # type: ignore[no-untyped-def]
    engine: sa.Engine,
    database_url: str,
    fake_twilio: FakeTwilio,
    fake_smtp: FakeSmtp,
    tmp_path: Path,
) -> None:
    with sa.orm.Session(engine) as session:
        seed = seed_reference_data(session)
    pipeline = make_pipeline(
        redis_broker,
        SMTP_HOST=fake_smtp.host,
        SMTP_PORT=str(fake_smtp.port),
        SMTP_FROM="clinic@example.org",
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
    )
    pipeline.start_worker("worker")
    pipeline.start_beat("beat")
    web_log = tmp_path / "web.log"
    server, base = start_gunicorn(pipeline.env, web_log, workers=2)
    try:
        pipeline.wait_ready()
        _book(base, seed)
        sms = _wait("the confirmation SMS", lambda: list(fake_twilio.messages.values()))[0]
        mail = _wait("the confirmation email", lambda: fake_smtp.messages)[0]
        token = re.search(r"/p/([A-Za-z0-9]{16})\b", sms["body"])
        assert token, sms["body"]
        auth_token = fake_twilio.auth_token
        for body in ("C", REPLY):
            inbound = {"MessageSid": "SM" + secrets.token_hex(16), "From": PHONE, "Body": body,
                       "To": "+12125550199", "AccountSid": fake_twilio.account_sid}  # fmt: skip
            assert _signed_post(base, INBOUND_PATH, inbound, auth_token) == 200
        sid = next(iter(fake_twilio.messages))
        status = {"MessageSid": sid, "MessageStatus": "delivered",
                  "AccountSid": fake_twilio.account_sid}  # fmt: skip
        assert _signed_post(base, STATUS_CALLBACK_PATH, status, auth_token) == 200
        assert requests.get(f"{base}/p/{token.group(1)}", timeout=10).status_code == 200
        ics = requests.get(f"{base}/p/{token.group(1)}/schedule.ics", timeout=10)
        assert ics.status_code == 200
    finally:
        stop(server)
        pipeline.stop_all()

    patient_values = [
        GIVEN, FAMILY, MRN, PHONE, PHONE.removeprefix("+"), EMAIL, token.group(1), REPLY,
        sms["body"], str(mail.parsed()["Subject"]),
    ]  # fmt: skip
    # The values are real: the messages the patient got hold them (the search works).
    assert set(phi_found(sms["body"], patient_values)) >= {token.group(1), sms["body"]}
    assert phi_found(f"{GIVEN} (212) 555-1234", []) == ["national phone number"]

    logs = {p.name: p.read_text(errors="replace") for p in (web_log, *tmp_path.glob("*.log"))}
    assert set(logs) >= {"web.log", "worker.log", "beat.log"}
    lines = [line for text in logs.values() for line in text.splitlines()]
    # A real run was logged: requests, sends and the replies' handling.
    assert any("/api/v1/courses/" in line and "booking" in line for line in lines)
    assert any("reminder " in line and "accepted" in line for line in lines)
    assert any("inbound SMS" in line for line in lines)
    # Every log record is a JSON line; Celery's start-up banner and its shutdown notice are
    # printed, not logged, before and after them.
    for name, text in logs.items():
        records = text.splitlines()
        first = next((i for i, line in enumerate(records) if line.startswith("{")), 0)
        stray = [
            line
            for line in records[first:]
            if line.strip()
            and not line.startswith("{")
            and line != "worker: Warm shutdown (MainProcess)"
        ]
        assert not stray, f"{name}: {stray[:5]}"
    for name, text in logs.items():
        found = phi_found(text, patient_values)
        assert not found, f"{name} logs patient data: {found}"


def test_the_log_format_itself_redacts_what_slipped_into_a_message() -> None:
    import logging

    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1,
        "could not send to %s at %s: %s", (PHONE, EMAIL, f"{PUBLIC_BASE_URL}/p/Zq7TgK2mWv9PxL4c"),
        None,
    )  # fmt: skip
    for log_format in ("json", "text"):
        line = formatter(log_format).format(record)
        assert phi_found(line, [PHONE, EMAIL, "Zq7TgK2mWv9PxL4c"]) == [], line
        assert "[phone]" in line and "[email]" in line and "/p/[redacted]" in line
    parsed = json.loads(formatter("json").format(record))
    assert parsed["level"] == "WARNING" and "time" in parsed
