"""The physicist roster page: when physicists are present to supervise SBRT sessions.

Schedulers and admins edit it; viewers read it. The weekly blocks and the dated exceptions
are typed one per line ("Mon 08:00-17:00 2", "2027-03-01 08:00-12:00 0"), which keeps a
roster of any shape on one form. Validation is the roster use case's own, so the page and
the API accept the same rosters; a rejected form comes back as typed, each error naming its
line. Saving never moves a booking: the page then lists the booked supervised fractions the
new roster leaves without a physicist.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from flask import Blueprint, abort, render_template, request, url_for

from scheduler import records
from scheduler.errors import InvalidInput, NotFound
from scheduler.models import Department, Role
from web import audit
from web.auth import session_user
from web.db import get_session
from web.ui import done, has_role, role_required

bp = Blueprint("roster", __name__)

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_WEEKDAY_BY_NAME = {
    **{name.lower(): i for i, name in enumerate(WEEKDAYS)},
    **{name[:3].lower(): i for i, name in enumerate(WEEKDAYS)},
}
# "Mon 08:00-17:00 2" or "2027-03-01 08:00–12:00 0" (either dash; "x2" or "×2" allowed).
_LINE = re.compile(
    r"^\s*(?P<when>\S+)\s+(?P<start>\d{1,2}:\d{2})\s*[-–]\s*(?P<end>\d{1,2}:\d{2})"
    r"\s+[x×]?(?P<count>\d{1,3})\s*$",
    re.IGNORECASE | re.ASCII,  # int() would take other scripts' digits; the roster does not
)
# A field error of the use case, such as "blocks[2].end", to the form's line numbers.
_ROW_FIELD = re.compile(r"^(?P<list>blocks|exceptions)\[(?P<index>\d+)\](?:\.(?P<part>\w+))?$")
_ROW_REF = re.compile(r"(blocks|exceptions)\[(\d+)\]")
Errors = dict[str, list[str]]


def _lines(document: dict[str, Any]) -> dict[str, str]:
    blocks = "\n".join(
        f"{WEEKDAYS[b['weekday']][:3]} {b['start']}-{b['end']} {b['physicists']}"
        for b in document["blocks"]
    )
    exceptions = "\n".join(
        f"{e['day']} {e['start']}-{e['end']} {e['physicists']}" for e in document["exceptions"]
    )
    return {"blocks": blocks, "exceptions": exceptions}


def _values(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "enabled": document["enabled"],
        "every_fraction": document["every_fraction"],
        **_lines(document),
    }


def _parse(text: str, kind: str, errors: Errors) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows of one text area and the line number of each; errors name the line."""
    rows: list[dict[str, Any]] = []
    numbers: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            example = "Mon 08:00-17:00 2" if kind == "blocks" else "2027-03-01 08:00-12:00 0"
            errors.setdefault(kind, []).append(
                f"line {number}: write it as, for example, “{example}”"
            )
            continue
        start, end = (_padded(match[name]) for name in ("start", "end"))
        row: dict[str, Any] = {"start": start, "end": end, "physicists": int(match["count"])}
        when = match["when"]
        if kind == "blocks":
            weekday = _WEEKDAY_BY_NAME.get(when.lower())
            if weekday is None:
                errors.setdefault(kind, []).append(
                    f"line {number}: “{when}” is not a weekday (Mon … Sun)"
                )
                continue
            row["weekday"] = weekday
        else:
            try:
                row["day"] = date.fromisoformat(when).isoformat()
            except ValueError:
                errors.setdefault(kind, []).append(
                    f"line {number}: “{when}” is not a date (YYYY-MM-DD)"
                )
                continue
        rows.append(row)
        numbers.append(number)
    return rows, numbers


def _padded(hhmm: str) -> str:
    hours, minutes = hhmm.split(":")
    return f"{int(hours):02d}:{minutes}"


def _use_case_errors(exc: InvalidInput, lines: dict[str, list[int]]) -> Errors:
    """The use case's field errors, each put on its text area and named by line."""
    errors: Errors = {}

    def line_of(kind: str, index: str) -> str:
        return f"line {lines[kind][int(index)]}"

    for e in exc.errors:
        match = _ROW_FIELD.match(e.field)
        if match is None:
            errors.setdefault(e.field if e.field in ("enabled", "every_fraction") else "_form",
                              []).append(f"{e.field}: {e.message}")  # fmt: skip
            continue
        kind = match["list"]
        part = f"{match['part']} " if match["part"] else ""
        message = _ROW_REF.sub(lambda m: line_of(m[1], m[2]), e.message)
        errors.setdefault(kind, []).append(f"{line_of(kind, match['index'])}: {part}{message}")
    return errors


def _department(department_id: int) -> Department:
    department = get_session().get(Department, department_id)
    if department is None:
        abort(404)
    return department


def _page(department: Department, values: dict[str, Any], errors: Errors, *, status: int = 200,
          uncovered: list[dict[str, Any]] | None = None) -> Any:  # fmt: skip
    return (
        render_template(
            "roster.html",
            title=f"Physicist roster: {department.name}",
            department=department,
            values=values,
            errors=errors,
            uncovered=uncovered,
            can_edit=has_role(Role.SCHEDULER),
            calendar_url=url_for("calendar.week", department=department.id),
        ),
        status,
    )


@bp.route("/departments/<int:department_id>/physicist-roster", methods=["GET", "POST"])
@role_required(Role.VIEWER)
def physicist_roster(department_id: int):
    session = get_session()
    try:
        current = records.get_physicist_roster(session, department_id)
    except NotFound:
        abort(404)
    department = _department(department_id)
    if request.method == "GET":
        return _page(department, _values(current), {})
    if not has_role(Role.SCHEDULER):
        abort(403)
    form = request.form
    values = {
        "enabled": form.get("enabled") == "on",
        "every_fraction": form.get("every_fraction") == "on",
        "blocks": form.get("blocks", ""),
        "exceptions": form.get("exceptions", ""),
    }
    errors: Errors = {}
    blocks, block_lines = _parse(values["blocks"], "blocks", errors)
    exceptions, exception_lines = _parse(values["exceptions"], "exceptions", errors)
    if errors:
        return _page(department, values, errors, status=422)
    document: dict[str, Any] | None = None
    if values["enabled"]:
        document = {
            "every_fraction": values["every_fraction"],
            "blocks": blocks,
            "exceptions": exceptions,
        }
    elif values["every_fraction"] or blocks or exceptions:
        errors["enabled"] = [
            "Tick “Keep a physicist roster” to save these blocks; untick it and clear "
            "them to remove the roster."
        ]
        return _page(department, values, errors, status=422)
    try:
        result = records.set_physicist_roster(session, department.id, document)
    except InvalidInput as exc:
        session.rollback()
        errors = _use_case_errors(exc, {"blocks": block_lines, "exceptions": exception_lines})
        return _page(_department(department_id), values, errors, status=422)
    user = session_user()
    audit.record(
        "update",
        "physicist_roster",
        department.id,
        actor_id=user.id if user is not None else None,
        enabled=result["enabled"],
    )
    if result["uncovered"]:
        return _page(department, _values(result), {}, uncovered=result["uncovered"])
    return done(
        "Physicist roster saved." if result["enabled"] else "Physicist roster removed.",
        "roster.physicist_roster",
        department_id=department.id,
    )
