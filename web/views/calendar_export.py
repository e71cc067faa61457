"""Staff pages: a day's or a week's sessions of a department as a CSV file (optionally one linac).

One row per session the calendar shows (tentative, booked, confirmed, completed, missed), by
start time. Times are given twice: as ISO 8601 instants with the department's UTC offset, for
other programs, and as local date and clock time, for people. Patients are named as the
course page names them (family name, given name, MRN): the file is for the department's own
staff, who see the same on every page about one patient.

Spreadsheets run a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula (and some
treat a leading tab or carriage return the same way), so such a cell is written with a
leading apostrophe: a patient or linac name can never become a formula on a colleague's
machine.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, timedelta

import sqlalchemy as sa
from flask import Blueprint, Response, abort, request
from sqlalchemy.orm import Session

from scheduler.context import local_day_bounds
from scheduler.models import Course, Department, Fraction, Linac, Patient, Protocol, Role
from scheduler.timeutil import zone
from web import audit, params
from web.auth import session_user_id
from web.db import get_session
from web.ui import role_required
from web.views.calendar import SHOWN_STATUSES, _department, _today, _week_start

bp = Blueprint("calendar_export", __name__)

COLUMNS = (
    "date",
    "start_local",
    "end_local",
    "start",
    "end",
    "linac",
    "patient",
    "mrn",
    "course",
    "protocol",
    "fraction",
    "status",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Byte order mark: spreadsheet programs then read the file as UTF-8 (accented names).
UTF8_BOM = "\ufeff"
_NOT_IN_FILENAME = re.compile(r"[^A-Za-z0-9]+")


def safe_cell(value: object) -> str:
    """``value`` as text a spreadsheet shows and never evaluates."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _linac(session: Session, department: Department) -> Linac | None:
    """The linac asked for (``?linac=``) of this department; None for all linacs."""
    if not request.args.get("linac", ""):
        return None
    linac_id = params.query_int("linac", 0)
    linac = session.get(Linac, linac_id)
    if linac is None or linac.department_id != department.id:
        abort(404, "No such linac in this department.")
    return linac


def session_rows(
    session: Session, department: Department, first: date, last: date, linac: Linac | None
) -> list[list[str]]:
    """The CSV rows (without the header) of local days ``first``..``last``."""
    tz = zone(department.timezone)
    start, end = local_day_bounds(department.timezone, first, last)
    linac_ids = [linac.id] if linac is not None else [x.id for x in department.linacs]
    query = (
        sa.select(
            Fraction.starts_at,
            Fraction.ends_at,
            Fraction.number,
            Fraction.status,
            Linac.name,
            Patient.family_name,
            Patient.given_name,
            Patient.mrn,
            Course.id,
            Protocol.name,
            sa.func.coalesce(Course.prescribed_fractions, Protocol.fractions),
        )
        .join(Linac, Linac.id == Fraction.linac_id)
        .join(Course, Course.id == Fraction.course_id)
        .join(Protocol, Protocol.id == Course.protocol_id)
        .join(Patient, Patient.id == Fraction.patient_id)
        .where(
            Fraction.linac_id.in_(linac_ids),
            Fraction.status.in_(SHOWN_STATUSES),
            Fraction.starts_at >= start,
            Fraction.starts_at < end,
        )
        .order_by(Fraction.starts_at, Linac.name, Fraction.id)
    )
    rows = []
    for (starts_at, ends_at, number, status, linac_name, family, given, mrn, course_id,
         protocol, of) in session.execute(query):  # fmt: skip
        local_start, local_end = starts_at.astimezone(tz), ends_at.astimezone(tz)
        values = (
            local_start.date().isoformat(),
            f"{local_start:%H:%M}",
            f"{local_end:%H:%M}",
            local_start.isoformat(timespec="minutes"),
            local_end.isoformat(timespec="minutes"),
            linac_name,
            f"{family}, {given}",
            mrn,
            course_id,
            protocol,
            f"{number}/{of}",
            status,
        )
        rows.append([safe_cell(value) for value in values])
    return rows


def csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return UTF8_BOM + out.getvalue()


def _filename(department: Department, linac: Linac | None, span: str, first: date) -> str:
    # ASCII only: a department or linac name with quotes or accents cannot break the header.
    parts = ["sessions", department.name] + ([linac.name] if linac else []) + [span]
    slug = "-".join(_NOT_IN_FILENAME.sub("-", part).strip("-").lower() for part in parts)
    return f"{slug}-{first.isoformat()}.csv".replace("--", "-")


def _export(
    session: Session, department: Department, first: date, last: date, span: str
) -> Response:
    linac = _linac(session, department)
    rows = session_rows(session, department, first, last, linac)
    # Many patients at once: one entry for the export, as for a calendar view.
    audit.record(
        "export",
        "calendar",
        None,
        actor_id=session_user_id(),
        department_id=department.id,
        linac_id=linac.id if linac else None,
        first=first.isoformat(),
        last=last.isoformat(),
        rows=len(rows),
    )
    response = Response(csv_text(rows), mimetype="text/csv")
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    filename = _filename(department, linac, span, first)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    # Patients' names: never kept by a shared cache or the browser's.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/calendar/day.csv")
@role_required(Role.VIEWER)
def day_csv() -> Response:
    session = get_session()
    department = _department(session)
    shown = params.query_date("date", _today(department))
    return _export(session, department, shown, shown, "day")


@bp.get("/calendar/week.csv")
@role_required(Role.VIEWER)
def week_csv() -> Response:
    session = get_session()
    department = _department(session)
    first = _week_start(params.query_date("start", _today(department)))
    return _export(session, department, first, first + timedelta(days=6), "week")
