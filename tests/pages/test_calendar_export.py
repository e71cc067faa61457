"""CSV export of a day's or a week's sessions: columns, local and ISO times across a DST
change, formula cells neutralised, the linac filter, headers, links and access."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, Linac
from tests.api.conftest import Seed
from tests.committing import records, services
from tests.pages.conftest import SignIn
from tests.pages.test_calendar_pages import NY
from web.views.calendar_export import COLUMNS, safe_cell

# New York springs forward on Sunday 8 March 2026: a week of sessions on each side of it.
BEFORE_DST = [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4), date(2026, 3, 5),
              date(2026, 3, 6)]  # fmt: skip
AFTER_DST = [date(2026, 3, 9), date(2026, 3, 10), date(2026, 3, 11), date(2026, 3, 12),
             date(2026, 3, 13)]  # fmt: skip


def _book(db: Session, seed: Seed, days: list[date], *, linac: int, hour: int, mrn: str,
          family: str, given: str = "Ada") -> int:  # fmt: skip
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": mrn, "given_name": given,
         "family_name": family, "date_of_birth": date(1965, 12, 10),
         "email": f"patient{abs(hash(mrn))}@example.org", "email_consent": True},
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    placements = [
        services.Placement(n, linac, datetime(d.year, d.month, d.day, hour, tzinfo=NY))
        for n, d in enumerate(days, start=1)
    ]
    services.book_course(db, course.id, placements, now=datetime(2026, 1, 5, tzinfo=UTC))
    db.rollback()
    return course.id


def _rows(response) -> list[dict[str, str]]:  # noqa: ANN001 - a test response
    text = response.get_data().decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    return list(reader)


def test_day_export_has_local_and_iso_times_and_neutralised_formulas(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    course = _book(db, seed, AFTER_DST, linac=seed.linac_ids[0], hour=9, mrn="=HYPERLINK(1)",
                   family="+Smith", given="@Ann")  # fmt: skip
    other = _book(db, seed, AFTER_DST, linac=seed.linac_ids[1], hour=8, mrn="MRN-2",
                  family="Lovelace")  # fmt: skip
    signed_in(client, "viewer")
    response = client.get("/calendar/day.csv", query_string={"date": "2026-03-10"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="sessions-demo-radiation-oncology-day-2026-03-10.csv"'
    )
    assert response.get_data().startswith(b"\xef\xbb\xbf")  # UTF-8 for spreadsheets
    rows = _rows(response)
    assert [r["course"] for r in rows] == [str(other), str(course)]  # by start time
    first, second = rows
    assert first == {
        "date": "2026-03-10", "start_local": "08:00", "end_local": "08:45",
        "start": "2026-03-10T08:00-04:00", "end": "2026-03-10T08:45-04:00",
        "linac": "TrueBeam 2", "patient": "Lovelace, Ada", "mrn": "MRN-2",
        "course": str(other), "protocol": "Liver 5 fx", "fraction": "2/5", "status": "booked",
    }  # fmt: skip
    # Cells that a spreadsheet would run as formulas start with an apostrophe.
    assert second["patient"] == "'+Smith, @Ann"
    assert second["mrn"] == "'=HYPERLINK(1)"
    assert second["start"] == "2026-03-10T09:00-04:00"
    # The export is recorded, as calendar views are: one entry, no patient named.
    entry = db.scalars(
        sa.select(AuditEntry).where(AuditEntry.action == "export").order_by(AuditEntry.id.desc())
    ).first()
    assert entry is not None
    assert entry.detail["rows"] == 2 and entry.detail["first"] == "2026-03-10"
    assert "Smith" not in str(entry.detail)
    db.rollback()


def test_week_export_crosses_dst_and_filters_by_linac(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    _book(db, seed, BEFORE_DST, linac=seed.linac_ids[0], hour=9, mrn="MRN-W1", family="Alpha")
    _book(db, seed, [*BEFORE_DST[3:], *AFTER_DST[:3]], linac=seed.linac_ids[1], hour=10,
          mrn="MRN-W2", family="Beta")  # fmt: skip
    signed_in(client, "viewer")
    # Any day of the week asks for the whole week, Monday to Sunday.
    rows = _rows(client.get("/calendar/week.csv", query_string={"start": "2026-03-04"}))
    assert [(r["date"], r["start_local"], r["mrn"]) for r in rows] == [
        ("2026-03-02", "09:00", "MRN-W1"),
        ("2026-03-03", "09:00", "MRN-W1"),
        ("2026-03-04", "09:00", "MRN-W1"),
        ("2026-03-05", "09:00", "MRN-W1"),
        ("2026-03-05", "10:00", "MRN-W2"),
        ("2026-03-06", "09:00", "MRN-W1"),
        ("2026-03-06", "10:00", "MRN-W2"),
    ]
    assert rows[0]["start"] == "2026-03-02T09:00-05:00"  # EST before the change
    after = _rows(client.get("/calendar/week.csv", query_string={"start": "2026-03-09"}))
    assert {r["start"] for r in after} == {
        "2026-03-09T10:00-04:00", "2026-03-10T10:00-04:00", "2026-03-11T10:00-04:00"
    }  # fmt: skip
    one = client.get(
        "/calendar/week.csv", query_string={"start": "2026-03-02", "linac": seed.linac_ids[1]}
    )
    assert [r["mrn"] for r in _rows(one)] == ["MRN-W2", "MRN-W2"]
    assert "truebeam-2-week-2026-03-02.csv" in one.headers["Content-Disposition"]


def test_links_bad_input_and_roles(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    assert client.get("/calendar/day.csv").status_code == 302  # sign in first
    signed_in(client, "viewer")
    day = client.get("/calendar/day", query_string={"date": "2026-03-10"}).get_data(as_text=True)
    assert 'href="/calendar/day.csv?date=2026-03-10"' in day
    week = client.get("/calendar/week", query_string={"start": "2026-03-09"})
    assert 'href="/calendar/week.csv?start=2026-03-09"' in week.get_data(as_text=True)
    linac_week = client.get(f"/calendar/linac/{seed.linac_ids[0]}/week?start=2026-03-09")
    assert (
        f"/calendar/week.csv?start=2026-03-09&amp;department={seed.department_id}"
        f"&amp;linac={seed.linac_ids[0]}" in linac_week.get_data(as_text=True)
    )
    assert client.get("/calendar/day.csv", query_string={"date": "2026-02-30"}).status_code == 400
    assert client.get("/calendar/week.csv", query_string={"linac": "x"}).status_code == 400
    # A linac of no department the caller sees, and one that does not exist: not found alike.
    other = records.create_department(db, {"name": "Elsewhere", "timezone": "Europe/Berlin"})
    theirs = records.create_linac(db, {"department_id": other.id, "name": "Far Linac"})
    db.rollback()
    assert client.get(f"/calendar/day.csv?linac={theirs.id}").status_code == 404
    assert client.get("/calendar/day.csv?linac=999999").status_code == 404
    assert db.get(Linac, theirs.id) is not None
    db.rollback()


def test_safe_cell_prefixes_every_formula_start() -> None:
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert safe_cell(f"{start}1+1") == f"'{start}1+1"
    assert safe_cell("Smith-Jones") == "Smith-Jones"
    assert safe_cell(3) == "3"
    assert safe_cell(None) == ""
