"""Channels against real loopback servers: the Twilio-compatible fake and aiosmtpd."""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
from icalendar import Calendar

from config import load_settings
from notifications.channels.base import EmailMessage, Outcome, SmsMessage
from notifications.channels.factory import email_channel, sms_channel
from notifications.channels.local import LocalOutboxChannel
from notifications.channels.smtp_email import SmtpEmailChannel
from notifications.channels.twilio_sms import TwilioSmsChannel
from notifications.ics import IcsEvent, schedule_ics
from tests.fakes import fixtures
from tests.fakes.smtp_server import FakeSmtp
from tests.fakes.twilio_server import FakeTwilio

# The loopback servers' fixtures (until a conftest lists tests.fakes.fixtures in pytest_plugins).
fake_twilio = fixtures.fake_twilio
fake_smtp = fixtures.fake_smtp

PATIENT = "+15551234567"
CLINIC_NUMBER = "+15005550006"
CALLBACK = "https://clinic.example.org/webhooks/twilio/status"
SID = re.compile(r"^SM[0-9a-f]{32}$")
NEW_YORK = ZoneInfo("America/New_York")


def twilio_channel(fake: FakeTwilio, **overrides: object) -> TwilioSmsChannel:
    options: dict[str, object] = {
        "from_number": CLINIC_NUMBER,
        "base_url": fake.base_url,
        "timeout_seconds": 2,
        "validity_period_seconds": 3600,
    }
    options.update(overrides)
    return TwilioSmsChannel(fake.account_sid, fake.auth_token, **options)  # type: ignore[arg-type]


def reminder(body: str = "Reminder: appointment tomorrow 09:00. Reply C to confirm.") -> SmsMessage:
    return SmsMessage(to=PATIENT, body=body, status_callback_url=CALLBACK)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- Twilio ---------------------------------------------------------------------------------


def test_sms_is_one_schema_valid_create_request(fake_twilio: FakeTwilio) -> None:
    result = twilio_channel(fake_twilio).send_sms(reminder())

    assert result.outcome is Outcome.ACCEPTED
    assert result.provider_id and SID.match(result.provider_id)
    [request] = fake_twilio.requests
    assert request.operation == "CreateMessage"
    assert request.status == 201
    assert fake_twilio.violations == []
    assert request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert request.param("To") == PATIENT
    assert request.param("From") == CLINIC_NUMBER
    assert request.param("StatusCallback") == CALLBACK
    assert request.param("ValidityPeriod") == "3600"
    assert request.param("Body") == reminder().body
    assert result.provider_id in fake_twilio.messages


def test_messaging_service_replaces_from(fake_twilio: FakeTwilio) -> None:
    service = "MG" + "a" * 32
    channel = twilio_channel(fake_twilio, from_number=None, messaging_service_sid=service)

    assert channel.send_sms(reminder()).outcome is Outcome.ACCEPTED
    [request] = fake_twilio.create_requests
    assert request.param("MessagingServiceSid") == service
    assert request.param("From") is None
    assert fake_twilio.violations == []


def test_rate_limit_is_retried_later_with_retry_after(fake_twilio: FakeTwilio) -> None:
    fake_twilio.program(status=429, retry_after="7")

    result = twilio_channel(fake_twilio).send_sms(reminder())

    assert result.outcome is Outcome.RETRY
    assert result.error_code == "20429"
    assert result.retry_after_seconds == 7
    assert len(fake_twilio.requests) == 1  # the SDK did not retry on its own
    assert fake_twilio.messages == {}


@pytest.mark.parametrize("code", [21211, 21610, 21614, 21635])
def test_recipient_errors_are_permanent(fake_twilio: FakeTwilio, code: int) -> None:
    fake_twilio.program(status=400, code=code)

    result = twilio_channel(fake_twilio).send_sms(reminder())

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code == str(code)
    assert len(fake_twilio.requests) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried(fake_twilio: FakeTwilio, status: int) -> None:
    fake_twilio.program(status=status)

    result = twilio_channel(fake_twilio).send_sms(reminder())

    assert result.outcome is Outcome.RETRY
    assert len(fake_twilio.requests) == 1


def test_other_client_errors_fail_without_retry(fake_twilio: FakeTwilio) -> None:
    fake_twilio.program(status=400, code=21606, message="The 'From' number is not valid")

    result = twilio_channel(fake_twilio).send_sms(reminder())

    assert result.outcome is Outcome.FAILED
    assert result.error_code == "21606"


def test_wrong_credentials_fail(fake_twilio: FakeTwilio) -> None:
    channel = TwilioSmsChannel(
        fake_twilio.account_sid, "wrong-token", from_number=CLINIC_NUMBER,
        base_url=fake_twilio.base_url,
    )  # fmt: skip

    result = channel.send_sms(reminder())

    assert result.outcome is Outcome.FAILED
    assert [r.status for r in fake_twilio.requests] == [401]


def test_timeout_after_sending_is_unknown_and_reconciled(fake_twilio: FakeTwilio) -> None:
    channel = twilio_channel(fake_twilio, timeout_seconds=0.5)
    fake_twilio.program(delay=3)  # Twilio creates the message but answers too late
    before = datetime.now(UTC)

    result = channel.send_sms(reminder())

    assert result.outcome is Outcome.UNKNOWN
    assert result.error_code == "timeout"
    assert result.provider_id is None
    assert len(fake_twilio.create_requests) == 1
    [sid] = fake_twilio.messages
    assert channel.find_sent(PATIENT, reminder().body, since=before) == sid
    assert channel.fetch_status(sid) == "queued"
    fake_twilio.set_status(sid, "delivered")
    assert channel.fetch_status(sid) == "delivered"
    assert len(fake_twilio.create_requests) == 1  # reconciling never posts again


def test_find_sent_ignores_other_bodies_and_older_messages(fake_twilio: FakeTwilio) -> None:
    channel = twilio_channel(fake_twilio)
    channel.send_sms(reminder())  # an older copy: not the one being looked for
    later = datetime.now(UTC) + timedelta(minutes=1)
    channel.send_sms(reminder("Another message"))

    assert channel.find_sent(PATIENT, reminder().body, since=later) is None
    assert channel.find_sent(PATIENT, "Another message", since=later - timedelta(minutes=2))


def test_fetch_status_of_unknown_sid_is_none(fake_twilio: FakeTwilio) -> None:
    assert twilio_channel(fake_twilio).fetch_status("SM" + "0" * 32) is None


def test_connection_refused_is_retried() -> None:
    channel = TwilioSmsChannel(
        "AC" + "1" * 32, "token", from_number=CLINIC_NUMBER,
        base_url=f"http://127.0.0.1:{closed_port()}", timeout_seconds=1,
    )  # fmt: skip

    result = channel.send_sms(reminder())

    assert result.outcome is Outcome.RETRY
    assert result.error_code == "connect"


def test_every_sdk_domain_goes_to_the_base_url(fake_twilio: FakeTwilio) -> None:
    """Not only api.twilio.com: any SDK call must stay on the configured server."""
    channel = twilio_channel(fake_twilio)

    with pytest.raises(Exception):  # noqa: B017 - the fake knows no Messaging v1 routes
        channel._client.messaging.v1.services.list(limit=1)

    assert [r.path for r in fake_twilio.requests] == ["/v1/Services"]


def test_host_edge_and_region_settings_do_not_redirect(
    fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")

    assert twilio_channel(fake_twilio).send_sms(reminder()).outcome is Outcome.ACCEPTED
    assert len(fake_twilio.create_requests) == 1


def test_validator_catches_bad_requests(fake_twilio: FakeTwilio) -> None:
    """The fake's spec checks are not vacuous: a malformed request is reported."""
    url = f"{fake_twilio.base_url}/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages.json"
    response = requests.post(
        url,
        data={"To": "5551234567", "Body": "x", "Frm": CLINIC_NUMBER, "ValidityPeriod": "abc"},
        auth=(fake_twilio.account_sid, fake_twilio.auth_token),
        timeout=5,
    )

    assert response.status_code == 201
    problems = " | ".join(fake_twilio.violations)
    assert "unknown parameter Frm" in problems
    assert "To='5551234567' is not an E.164" in problems
    assert "ValidityPeriod='abc' is not an integer" in problems
    assert "either From or MessagingServiceSid is required" in problems


def test_twilio_settings(tmp_path: Path) -> None:
    base = {"SECRET_KEY": "k", "INSTANCE_DIR": str(tmp_path)}
    assert TwilioSmsChannel.from_settings(load_settings(base)) is None
    assert isinstance(sms_channel(load_settings(base)), LocalOutboxChannel)

    configured = load_settings(
        base
        | {
            "TWILIO_ACCOUNT_SID": "AC" + "2" * 32,
            "TWILIO_AUTH_TOKEN": "token",
            "TWILIO_FROM_NUMBER": CLINIC_NUMBER,
            "TWILIO_BASE_URL": "http://127.0.0.1:9",
        }
    )
    channel = sms_channel(configured)
    assert isinstance(channel, TwilioSmsChannel)
    assert channel.base_url == "http://127.0.0.1:9"
    assert channel.validity_period_seconds is not None


# -- SMTP -----------------------------------------------------------------------------------


def smtp_channel(fake: FakeSmtp, **overrides: object) -> SmtpEmailChannel:
    options: dict[str, object] = {"from_address": "Clinic <reminders@clinic.example.org>"}
    options.update(overrides)
    return SmtpEmailChannel(fake.host, fake.port, **options)  # type: ignore[arg-type]


def sample_ics() -> bytes:
    start = datetime(2026, 3, 9, 13, 0, tzinfo=UTC)
    event = IcsEvent(
        uid="fraction-1@clinic.example.org",
        sequence=2,
        start=start,
        end=start + timedelta(minutes=30),
        summary="Appointment – Riverside Clinic",
        location="Riverside Clinic, Linac 2",
    )
    return schedule_ics([event], tz="America/New_York", calendar_name="Your appointments")


def email(**overrides: object) -> EmailMessage:
    fields: dict[str, object] = {
        "to": "patient@example.com",
        "subject": "Your appointments",
        "text": "Hello Ana,\nyour next appointment is Monday at 09:00.",
        "html": "<p>Hello Ana,</p><p>your next appointment is Monday at 09:00.</p>",
        "ics": sample_ics(),
        "list_unsubscribe": "https://clinic.example.org/u/abc123",
    }
    fields.update(overrides)
    return EmailMessage(**fields)  # type: ignore[arg-type]


def test_email_parts_headers_and_calendar(fake_smtp: FakeSmtp) -> None:
    result = smtp_channel(fake_smtp).send_email(email())

    assert result.outcome is Outcome.ACCEPTED
    [mail] = fake_smtp.messages
    assert mail.mail_from == "reminders@clinic.example.org"
    assert mail.rcpt_tos == ["patient@example.com"]
    message = mail.parsed()
    assert message["Message-ID"] == result.provider_id
    assert result.provider_id.endswith("@clinic.example.org>")
    assert message["Date"] and message["Subject"] == "Your appointments"
    assert message["To"] == "patient@example.com"
    assert "reminders@clinic.example.org" in message["From"]
    assert message["List-Unsubscribe"] == "<https://clinic.example.org/u/abc123>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/mixed"
    assert message.get_body(("plain",)).get_content().startswith("Hello Ana")
    assert "<p>Hello Ana,</p>" in message.get_body(("html",)).get_content()
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "text/calendar"
    assert attachment.get_param("method") == "PUBLISH"
    assert attachment.get_filename() == "schedule.ics"
    calendar = Calendar.from_ical(attachment.get_payload(decode=True))
    [event] = calendar.walk("VEVENT")
    assert str(event["UID"]) == "fraction-1@clinic.example.org"


def test_plain_email_without_extras(fake_smtp: FakeSmtp) -> None:
    message = email(html=None, ics=None, list_unsubscribe="http://127.0.0.1:5000/u/x")

    assert smtp_channel(fake_smtp).send_email(message).outcome is Outcome.ACCEPTED
    parsed = fake_smtp.messages[0].parsed()
    assert parsed.get_content_type() == "text/plain"
    assert parsed["List-Unsubscribe"] == "<http://127.0.0.1:5000/u/x>"
    assert parsed["List-Unsubscribe-Post"] is None  # one-click is defined for HTTPS only


@pytest.mark.parametrize(
    ("code", "stage", "outcome"),
    [
        (451, "rcpt", Outcome.RETRY),
        (451, "data", Outcome.RETRY),
        (550, "rcpt", Outcome.PERMANENT),
        (554, "data", Outcome.FAILED),
    ],
)
def test_smtp_replies(fake_smtp: FakeSmtp, code: int, stage: str, outcome: Outcome) -> None:
    fake_smtp.program(code, stage=stage)  # type: ignore[arg-type]

    result = smtp_channel(fake_smtp).send_email(email())

    assert result.outcome is outcome
    assert result.error_code == str(code)
    assert fake_smtp.messages == []


def test_smtp_timeout_after_data_is_unknown(fake_smtp: FakeSmtp) -> None:
    fake_smtp.program(stage="data", delay=3)

    result = smtp_channel(fake_smtp, timeout=0.5).send_email(email())

    assert result.outcome is Outcome.UNKNOWN
    assert result.error_code == "timeout"
    assert result.provider_id  # the Message-ID, to find the message in the server's logs


def test_smtp_connection_refused_is_retried() -> None:
    channel = SmtpEmailChannel("127.0.0.1", closed_port(), from_address="a@clinic.example.org")

    assert channel.send_email(email()).outcome is Outcome.RETRY


def test_required_starttls_not_offered_fails(fake_smtp: FakeSmtp) -> None:
    result = smtp_channel(fake_smtp, use_starttls=True).send_email(email())

    assert result.outcome is Outcome.FAILED
    assert fake_smtp.messages == []


def test_email_settings(tmp_path: Path) -> None:
    base = {"SECRET_KEY": "k", "INSTANCE_DIR": str(tmp_path)}
    assert isinstance(email_channel(load_settings(base)), LocalOutboxChannel)
    configured = load_settings(base | {"SMTP_HOST": "127.0.0.1", "SMTP_FROM": "a@b.example"})
    assert isinstance(email_channel(configured), SmtpEmailChannel)


# -- local outbox ---------------------------------------------------------------------------


def test_local_outbox_accepts_everything() -> None:
    channel = LocalOutboxChannel()
    sms = channel.send_sms(reminder())
    mail = channel.send_email(email())

    assert sms.outcome is Outcome.ACCEPTED and mail.outcome is Outcome.ACCEPTED
    assert sms.provider_id and sms.provider_id.startswith("local-")
    assert sms.provider_id != mail.provider_id
    assert channel.fetch_status(sms.provider_id) == "delivered"


# -- iCalendar ------------------------------------------------------------------------------


def _local(year: int, month: int, day: int, hour: int) -> datetime:
    return datetime(year, month, day, hour, tzinfo=NEW_YORK).astimezone(UTC)


def test_ics_keeps_local_time_across_dst() -> None:
    # 2026-03-08 is the spring-forward Sunday in New York: 09:00 is 14:00Z before, 13:00Z after.
    before, after = _local(2026, 3, 6, 9), _local(2026, 3, 9, 9)
    assert (before.hour, after.hour) == (14, 13)
    events = [
        IcsEvent("fraction-1@x", 0, before, before + timedelta(minutes=30), "Appointment – X"),
        IcsEvent("fraction-2@x", 3, after, after + timedelta(minutes=30), "Appointment – X",
                 status="TENTATIVE"),
    ]  # fmt: skip

    data = schedule_ics(events, tz="America/New_York", calendar_name="Your appointments")

    calendar = Calendar.from_ical(data)
    [timezone] = calendar.walk("VTIMEZONE")
    assert str(timezone["TZID"]) == "America/New_York"
    assert {c.name for c in timezone.subcomponents} == {"STANDARD", "DAYLIGHT"}
    assert calendar.get_missing_tzids() == set()
    assert str(calendar["METHOD"]) == "PUBLISH"
    parsed = calendar.walk("VEVENT")
    assert [str(e["UID"]) for e in parsed] == ["fraction-1@x", "fraction-2@x"]
    assert [int(e["SEQUENCE"]) for e in parsed] == [0, 3]
    assert [str(e["STATUS"]) for e in parsed] == ["CONFIRMED", "TENTATIVE"]
    for event, expected in zip(parsed, (before, after), strict=True):
        start = event.decoded("DTSTART")
        assert event["DTSTART"].params["TZID"] == "America/New_York"
        assert (start.hour, start.minute) == (9, 0)
        assert start.astimezone(UTC) == expected
        assert "DTSTAMP" in event
    assert b"DTSTART;TZID=America/New_York:20260306T090000" in data
    assert b"DTSTART;TZID=America/New_York:20260309T090000" in data


def test_ics_rejects_naive_times() -> None:
    naive = datetime(2026, 3, 9, 9)
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule_ics(
            [IcsEvent("u", 0, naive, naive + timedelta(hours=1), "Appointment")],
            tz="America/New_York",
            calendar_name="x",
        )


def test_ics_is_stable_for_the_same_schedule() -> None:
    start = _local(2026, 3, 9, 9)
    events = [IcsEvent("fraction-9@x", 1, start, start + timedelta(minutes=20), "Appointment")]
    stamp = datetime(2026, 3, 1, tzinfo=UTC)

    first = schedule_ics(events, tz="America/New_York", calendar_name="c", stamp=stamp)
    second = schedule_ics(events, tz="America/New_York", calendar_name="c", stamp=stamp)

    assert first == second


def test_ics_in_utc_needs_no_vtimezone() -> None:
    start = datetime(2026, 3, 9, 13, tzinfo=UTC)
    event = IcsEvent("u@x", 0, start, start + timedelta(hours=1), "Appointment")

    data = schedule_ics([event], tz="UTC", calendar_name="c")

    assert b"DTSTART:20260309T130000Z" in data
    assert Calendar.from_ical(data).get_missing_tzids() == set()
