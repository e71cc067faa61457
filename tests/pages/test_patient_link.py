"""The patient's link: tokens, the schedule page, confirming once, the calendar file, and the
one generic page for every unusable link. Runs through HTTP on both database backends."""

from __future__ import annotations

import re
import string
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from icalendar import Calendar
from sqlalchemy.orm import Session

from scheduler import links
from scheduler.models import BookingEvent, Course, Fraction, PatientLink
from scheduler.protocols import PREP_INSTRUCTIONS
from tests import factories
from tests.committing import services

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # Monday, before the US DST change on the 8th
# Wed, Thu, Fri | DST starts Sunday 8 March | Mon, Tue: every 24-72 h, 9:00 New York time.
DAYS = (date(2026, 3, 4), date(2026, 3, 5), date(2026, 3, 6), date(2026, 3, 9), date(2026, 3, 10))
FORM_TOKEN_RE = re.compile(r'name="form_token" value="([0-9a-f]+)"')
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
GENERIC = "This link is no longer valid. Please call your clinic."
ENDED = "This link is no longer in use"


@pytest.fixture
def travel():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def book_course(
    db: Session, *, language: str = "en", patient_tz: str | None = None, ready: bool = True
) -> Course:
    """A 5-fraction liver course booked through the booking use case, 9:00 New York."""
    dept = factories.department(db)
    machines = factories.linacs(db, dept)
    liver = factories.protocol(db, prep_instructions=PREP_INSTRUCTIONS["liver"])
    patient = factories.patient(db, dept, language=language, timezone=patient_tz)
    course = factories.course(db, patient, liver, ready=ready)
    db.commit()
    placements = [
        services.Placement(n, machines["A"].id, datetime.combine(day, time(9, 0), NY))
        for n, day in enumerate(DAYS, start=1)
    ]
    return services.book_course(db, course.id, placements, now=NOW)


def issue(db: Session, course: Course, **kwargs: object) -> str:
    token = links.issue_patient_link(
        db, patient_id=course.patient_id, course_id=course.id, now=NOW, **kwargs
    )
    db.commit()
    return token


def fractions(db: Session, course: Course) -> list[Fraction]:
    db.expire_all()
    rows = list(
        db.scalars(
            sa.select(Fraction).where(Fraction.course_id == course.id).order_by(Fraction.number)
        )
    )
    # End the read: on SQLite every transaction holds the write lock, and the app's
    # requests in this test need it (rows stay loaded: expire_on_commit is off).
    db.commit()
    return rows


# --- tokens ----------------------------------------------------------------------------------


def test_token_is_short_random_and_stored_only_as_digest(db: Session, travel) -> None:
    course = book_course(db)
    token = issue(db, course)
    assert len(token) == 16
    assert set(token) <= set(string.ascii_letters + string.digits)
    assert len(links.patient_link_url("https://c.example/", token)) <= 40
    assert links.patient_link_url("https://c.example/", token) == f"https://c.example/p/{token}"
    row = db.scalars(sa.select(PatientLink)).one()
    assert row.token_digest == links.token_digest(token) != token
    # Default expiry: a week after the last session ends (10 March 09:45 New York).
    last_end = max(f.ends_at for f in fractions(db, course))
    assert row.expires_at == last_end + timedelta(days=7)
    assert links.resolve_patient_link(db, token, purpose="schedule", now=NOW) == row
    assert issue(db, course) != token


def test_link_expiry_is_at_least_a_week_and_bound_to_its_patient(db: Session, travel) -> None:
    course = book_course(db)
    issue(db, course, ttl=timedelta(hours=1))
    short = db.scalars(sa.select(PatientLink)).one()
    assert short.expires_at == NOW + timedelta(hours=1)
    other = factories.patient(db, course.patient.department)
    with pytest.raises(ValueError, match="does not belong"):
        links.issue_patient_link(db, patient_id=other.id, course_id=course.id, now=NOW)
    with pytest.raises(ValueError, match="purpose"):
        links.issue_patient_link(
            db, patient_id=course.patient_id, course_id=course.id, purpose="admin", now=NOW
        )
    # A course with no fractions yet: a week from now.
    draft = factories.course(db, course.patient, course.protocol)
    db.commit()
    links.issue_patient_link(db, patient_id=course.patient_id, course_id=draft.id, now=NOW)
    newest = db.scalars(sa.select(PatientLink).order_by(PatientLink.id.desc())).first()
    assert newest is not None and newest.expires_at == NOW + timedelta(days=7)


# --- the page --------------------------------------------------------------------------------


def test_spanish_patient_sees_schedule_in_spanish_and_local_time(
    client: FlaskClient, db: Session, travel
) -> None:
    # The patient lives in Los Angeles: 9:00 New York is 6:00 for them, on both sides of
    # the DST change (both zones change on the same night).
    course = book_course(db, language="es", patient_tz="America/Los_Angeles")
    response = client.get(f"/p/{issue(db, course)}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert '<html lang="es">' in page
    assert "Sus citas" in page and "Sesión 1 de 5" in page
    assert "viernes 6 de marzo de 2026" in page and "lunes 9 de marzo de 2026" in page
    assert page.count('<span class="patient-time">6:00</span>') == 5
    assert "La primera sesión es más larga: unos 60 minutos." in page
    assert "No coma nada durante unas 2 horas" in page  # preparation, translated
    assert "Test Radiation Oncology" in page and 'href="tel:+12125550100"' in page
    assert "Confirmar mi próxima cita" in page and "Añadir a mi calendario" in page
    assert "Las horas se muestran en hora del Pacífico." in page  # not "America/Los_Angeles"
    # Patients are not staff: no staff navigation, and the tab title names no treatment.
    assert "Sign out" not in page and "SBRT" not in page
    assert course.patient.family_name not in page
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "style=" not in page and "<script" not in page  # the CSP forbids inline ones


def test_english_page_marks_tentative_first_session(
    client: FlaskClient, db: Session, travel
) -> None:
    course = book_course(db, ready=False)  # plan not approved: the first session is tentative
    page = client.get(f"/p/{issue(db, course)}").get_data(as_text=True)
    assert '<html lang="en">' in page and "Your appointments" in page
    assert "Wednesday 4 March 2026" in page and "9:00 AM" in page
    assert page.count('patient-tbc">to be confirmed<') == 1
    assert "The first session is longer: about 60 minutes." in page
    assert "Eat nothing for about 2 hours" in page
    # The next appointment is not final yet: the patient cannot confirm it.
    assert "still to be confirmed by your clinic" in page
    assert "Confirm my next appointment" not in page


def test_confirm_works_once(client: FlaskClient, db: Session, travel) -> None:
    course = book_course(db)
    token = issue(db, course)
    page = client.get(f"/p/{token}").get_data(as_text=True)
    form_token = FORM_TOKEN_RE.search(page).group(1)  # type: ignore[union-attr]
    csrf = CSRF_RE.search(page).group(1)  # type: ignore[union-attr]

    first = client.post(f"/p/{token}/confirm", data={"form_token": form_token, "csrf_token": csrf})
    assert first.status_code == 303 and first.headers["Location"].endswith("?confirmed=1")
    assert [f.status for f in fractions(db, course)][:2] == ["confirmed", "booked"]
    after = client.get(first.headers["Location"]).get_data(as_text=True)
    assert "Thank you! Your appointment is confirmed." in after
    assert "Confirm my next appointment" not in after

    # The same form again (a double tap, a replay): no second effect.
    second = client.post(f"/p/{token}/confirm", data={"form_token": form_token, "csrf_token": csrf})
    assert second.status_code == 303 and "confirmed=1" not in second.headers["Location"]
    assert [f.status for f in fractions(db, course)][:2] == ["confirmed", "booked"]
    events = list(
        db.scalars(sa.select(BookingEvent.kind).where(BookingEvent.course_id == course.id))
    )
    db.commit()
    assert events.count("fraction_confirmed") == 1


def test_confirm_rejects_forged_and_stale_forms(client: FlaskClient, db: Session, travel) -> None:
    course = book_course(db)
    token = issue(db, course)
    page = client.get(f"/p/{token}").get_data(as_text=True)
    form_token = FORM_TOKEN_RE.search(page).group(1)  # type: ignore[union-attr]
    csrf = CSRF_RE.search(page).group(1)  # type: ignore[union-attr]
    for forged in ("", "0" * 64, form_token[:-1] + ("0" if form_token[-1] != "0" else "1")):
        response = client.post(
            f"/p/{token}/confirm", data={"form_token": forged, "csrf_token": csrf}
        )
        assert response.status_code == 303
    # Without the CSRF token even the right form token changes nothing.
    refused = client.post(f"/p/{token}/confirm", data={"form_token": form_token})
    assert refused.status_code == 400
    assert "Please open the link in your message again." in refused.get_data(as_text=True)
    assert fractions(db, course)[0].status == "booked"
    # Another link of the same patient does not accept this link's form either.
    other = issue(db, course)
    client.post(f"/p/{other}/confirm", data={"form_token": form_token, "csrf_token": csrf})
    assert fractions(db, course)[0].status == "booked"

    # The appointment moved after the page was shown: the old form is stale.
    first = fractions(db, course)[0]
    services.move_fraction(
        db, first.id, linac_id=first.linac_id, starts_at=datetime(2026, 3, 4, 15, tzinfo=UTC)
    )
    client.post(f"/p/{token}/confirm", data={"form_token": form_token, "csrf_token": csrf})
    assert fractions(db, course)[0].status == "booked"


# --- unusable links --------------------------------------------------------------------------


def test_every_unknown_link_gets_the_same_generic_page(
    client: FlaskClient, db: Session, travel
) -> None:
    course = book_course(db)
    good = issue(db, course)
    revoked = issue(db, course)
    db.execute(
        sa.update(PatientLink)
        .where(PatientLink.token_digest == links.token_digest(revoked))
        .values(revoked_at=NOW)
    )
    wrong_purpose = issue(db, course)
    db.execute(
        sa.update(PatientLink)
        .where(PatientLink.token_digest == links.token_digest(wrong_purpose))
        .values(purpose="other")
    )
    db.commit()
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    urls = [
        f"/p/{tampered}",
        f"/p/{wrong_purpose}",
        f"/p/{good}x",
        "/p/short",
        "/p/",
        f"/p/{tampered}/schedule.ics",
        f"/p/{good}/nothing-here",
    ]
    bodies = set()
    patient = course.patient
    db.commit()
    for url in urls:
        response = client.get(url)
        assert response.status_code == 404, url
        bodies.add(response.get_data(as_text=True))
    csrf = CSRF_RE.search(client.get(f"/p/{good}").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    response = client.post(
        f"/p/{tampered}/confirm", data={"form_token": "0" * 64, "csrf_token": csrf}
    )
    assert response.status_code == 404
    bodies.add(response.get_data(as_text=True))
    assert len(bodies) == 1  # one page, whatever went wrong
    page = bodies.pop()
    assert GENERIC in page and "Este enlace ya no es válido" in page
    for secret in (patient.given_name, patient.family_name, patient.mrn, "Test Radiation",
                   "+1212555", "2026"):  # fmt: skip
        assert secret not in page

    # A real link that ended (revoked, expired) says so and who to call: no schedule.
    for url in (f"/p/{revoked}", f"/p/{revoked}/schedule.ics"):
        ended = client.get(url)
        assert ended.status_code == 410, url
        assert ENDED in ended.get_data(as_text=True)
        assert "Session 1 of 5" not in ended.get_data(as_text=True)
    assert client.get(f"/p/{good}").status_code == 200
    digest = links.token_digest(good)
    expiry = db.scalar(sa.select(PatientLink.expires_at).where(PatientLink.token_digest == digest))
    db.commit()
    travel.move_to(expiry + timedelta(seconds=1))
    expired = client.get(f"/p/{good}")
    assert expired.status_code == 410 and ENDED in expired.get_data(as_text=True)
    assert client.get(f"/p/{good}/schedule.ics").status_code == 410


def test_revoking_a_patients_links(client: FlaskClient, db: Session, travel) -> None:
    course = book_course(db)
    token = issue(db, course)
    assert links.revoke_patient_links(db, patient_id=course.patient_id, now=NOW) == 1
    db.commit()
    assert client.get(f"/p/{token}").status_code == 410


def test_rate_limit_per_address(app: Flask, client: FlaskClient, db: Session, travel) -> None:
    course = book_course(db)
    token = issue(db, course)
    guesser = {"REMOTE_ADDR": "203.0.113.7"}
    for n in range(30):
        assert client.get(f"/p/guess{n:011d}", environ_base=guesser).status_code == 404
    limited = client.get(f"/p/{token}", environ_base=guesser)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "60"
    body = limited.get_data(as_text=True)
    assert "Too many requests" in body and "Test Radiation" not in body
    # Other addresses are unaffected.
    neighbour = {"REMOTE_ADDR": "198.51.100.2"}
    assert client.get(f"/p/{token}", environ_base=neighbour).status_code == 200


def test_the_limit_ends_with_its_minute(client: FlaskClient, db: Session, travel) -> None:
    token = issue(db, book_course(db))
    guesser = {"REMOTE_ADDR": "203.0.113.8"}
    for n in range(30):
        assert client.get(f"/p/guess{n:011d}", environ_base=guesser).status_code == 404
    assert client.get(f"/p/{token}", environ_base=guesser).status_code == 429
    travel.shift(61)
    assert client.get(f"/p/{token}", environ_base=guesser).status_code == 200


# --- the calendar file -----------------------------------------------------------------------


def _events(client: FlaskClient, token: str) -> tuple[Calendar, dict[str, object]]:
    response = client.get(f"/p/{token}/schedule.ics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/calendar; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="appointments.ics"'
    calendar = Calendar.from_ical(response.data)
    return calendar, {str(e["UID"]): e for e in calendar.walk("VEVENT")}


def test_calendar_file_keeps_local_times_across_dst(
    client: FlaskClient, db: Session, settings, travel
) -> None:
    course = book_course(db)
    calendar, events = _events(client, issue(db, course))
    assert len(events) == 5
    zones = calendar.walk("VTIMEZONE")
    assert [str(z["TZID"]) for z in zones] == ["America/New_York"]
    vtimezone = zones[0].to_tz(lookup_tzid=False)  # the file's own rules, not the system's
    host = urlsplit(settings.public_base_url).hostname
    for fraction in fractions(db, course):
        event = events[f"fraction-{fraction.id}@{host}"]  # the emailed attachment's UIDs
        assert event["DTSTART"].params["TZID"] == "America/New_York"
        wall = event.decoded("DTSTART").replace(tzinfo=None)
        assert wall.time() == time(9, 0)
        assert wall.replace(tzinfo=vtimezone).astimezone(UTC) == fraction.starts_at
        assert int(event["SEQUENCE"]) == fraction.version == 1
        assert str(event["STATUS"]) == "CONFIRMED"
        assert "SBRT" not in str(event["SUMMARY"]) and "Radiation" not in str(event["SUMMARY"])
    by_day = {e.decoded("DTSTART").date(): e.decoded("DTSTART") for e in events.values()}
    before, after = by_day[date(2026, 3, 6)], by_day[date(2026, 3, 9)]
    assert before.astimezone(NY).time() == after.astimezone(NY).time() == time(9, 0)
    assert before.utcoffset() == timedelta(hours=-5) and after.utcoffset() == timedelta(hours=-4)


def test_calendar_file_follows_moves_and_cancellations(
    client: FlaskClient, db: Session, travel
) -> None:
    course = book_course(db)
    token = issue(db, course)
    _, before = _events(client, token)
    last = fractions(db, course)[-1]
    uid = next(uid for uid in before if uid.startswith(f"fraction-{last.id}@"))
    moved_to = datetime.combine(date(2026, 3, 11), time(9, 0), NY)
    services.move_fraction(db, last.id, linac_id=last.linac_id, starts_at=moved_to, now=NOW)
    _, moved = _events(client, token)
    assert set(moved) == set(before)  # the same UIDs: calendars update, not duplicate
    assert int(moved[uid]["SEQUENCE"]) == int(before[uid]["SEQUENCE"]) + 1 == 2
    assert moved[uid].decoded("DTSTART") == moved_to

    services.cancel_fraction(db, last.id, reason="patient request", now=NOW)
    _, cancelled = _events(client, token)
    assert str(cancelled[uid]["STATUS"]) == "CANCELLED"
    assert int(cancelled[uid]["SEQUENCE"]) == 3
    assert [str(e["STATUS"]) for u, e in cancelled.items() if u != uid] == ["CONFIRMED"] * 4


def test_calendar_file_for_spanish_patient(client: FlaskClient, db: Session, travel) -> None:
    course = book_course(db, language="es", patient_tz="America/Los_Angeles", ready=False)
    response = client.get(f"/p/{issue(db, course)}/schedule.ics")
    assert response.headers["Content-Disposition"] == 'attachment; filename="citas.ics"'
    calendar = Calendar.from_ical(response.data)
    assert [str(z["TZID"]) for z in calendar.walk("VTIMEZONE")] == ["America/Los_Angeles"]
    events = sorted(calendar.walk("VEVENT"), key=lambda e: e.decoded("DTSTART"))
    assert [str(e["STATUS"]) for e in events] == ["TENTATIVE"] + ["CONFIRMED"] * 4
    assert all(e.decoded("DTSTART").time() == time(6, 0) for e in events)
    assert str(events[0]["SUMMARY"]).startswith("Cita - ")
