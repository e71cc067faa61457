"""Staff pages: admin (linacs and their calendar feeds, department hours and closures,
protocols, users and tokens, message templates, audit log). Admin role only.

Forms post back to the page that shows them. A rejected form is shown again with every value
as typed and the error next to each field (nothing is lost); validation is the use cases' own
(scheduler.records, scheduler.accounts), so the pages and the API accept the same records.
Every change writes an audit entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    make_response,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from werkzeug.datastructures import MultiDict

from config import Settings
from notifications import template_store
from scheduler import accounts, links, records
from scheduler.errors import InvalidInput, ServiceError
from scheduler.models import (
    ApiToken,
    CalendarFeed,
    Closure,
    Department,
    Linac,
    Protocol,
    Role,
    User,
)
from scheduler.timeutil import format_local, zone
from web import SETTINGS_KEY, audit, audit_log, params
from web.auth import keep_own_session, session_user_id
from web.db import get_session, transaction
from web.ui import done, role_required

bp = Blueprint("admin", __name__)

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
AUDIT_PAGE_SIZE = 50
FEED_NAME_MAX = 100  # the column's length
Errors = dict[str, list[str]]
RESOURCE_KIND_LABELS = {"ct_sim": "CT simulator", "ir_room": "Interventional radiology room"}


# --- shared helpers -----------------------------------------------------------------------------


def _get_or_404(model: type[Any], record_id: int) -> Any:
    row = get_session().get(model, record_id)
    if row is None:
        abort(404)
    return row


def _add(errors: Errors, field: str, message: str) -> None:
    errors.setdefault(field, []).append(message)


def _field_errors(exc: InvalidInput) -> Errors:
    errors: Errors = {}
    for e in exc.errors:
        _add(errors, e.field, e.message)
    if not errors:
        _add(errors, "_form", exc.detail)
    return errors


def _page(template: str, *, status: int = 200, **context: Any) -> Any:
    return render_template(template, **context), status


def _zone() -> str:
    """The zone admin pages show times in: the (first) department's."""
    tz = get_session().scalar(sa.select(Department.timezone).order_by(Department.id).limit(1))
    return tz or "UTC"


def _parse_int(
    form: Mapping[str, str], errors: Errors, name: str, *, required: bool = True
) -> int | None:
    raw = (form.get(name) or "").strip()
    if not raw:
        if required:
            _add(errors, name, "is required")
        return None
    try:
        return int(raw)
    except ValueError:
        _add(errors, name, "must be a whole number")
        return None


def _weekday_list(form: MultiDict[str, str], name: str) -> list[int]:
    days = (params.int_or_none(d) for d in form.getlist(name))
    return sorted({d for d in days if d is not None and d < 7})


# Opening hours are entered as one opening and one closing time per weekday; both blank means
# closed that day. The shape records.py validates is {"0": ["07:00", "19:00"], ...}.


def _hours_values(hours: Mapping[str, Any] | None) -> dict[str, str]:
    values = {}
    for day in range(7):
        window = (hours or {}).get(str(day))
        values[f"open_{day}"] = window[0] if window else ""
        values[f"close_{day}"] = window[1] if window else ""
    return values


def _hours_form_values(form: Mapping[str, str]) -> dict[str, str]:
    # <input type="time"> may send seconds ("07:00:00"); the records keep HH:MM.
    return {
        f"{edge}_{day}": (form.get(f"{edge}_{day}") or "").strip()[:5]
        for day in range(7)
        for edge in ("open", "close")
    }


def _hours_from_values(values: Mapping[str, str], errors: Errors) -> dict[str, list[str]]:
    hours = {}
    for day in range(7):
        opens, closes = values[f"open_{day}"], values[f"close_{day}"]
        if not opens and not closes:
            continue
        if not opens or not closes:
            _add(errors, f"opening_hours.{day}", "give both times, or neither for closed")
            continue
        hours[str(day)] = [opens, closes]
    return hours


def _capability_choices(*current: list[str]) -> list[str]:
    extra = {c for values in current for c in values or []}
    return sorted(records.KNOWN_CAPABILITIES | extra)


# --- overview -------------------------------------------------------------------------------


@bp.get("/admin")
@role_required(Role.ADMIN)
def index():
    session = get_session()
    departments = records.list_departments(session)
    counts = {
        "linacs": session.scalar(sa.select(sa.func.count(Linac.id))),
        "protocols": session.scalar(sa.select(sa.func.count(Protocol.id))),
        "users": session.scalar(sa.select(sa.func.count(User.id))),
        "templates": len(template_store.list_overrides(session)),
    }
    return render_template(
        "admin/index.html", title="Admin", departments=departments, counts=counts
    )


# --- linacs --------------------------------------------------------------------------------------


@bp.get("/admin/linacs")
@role_required(Role.ADMIN)
def linacs():
    session = get_session()
    rows = records.list_linacs(session)
    departments = {d.id: d for d in records.list_departments(session)}
    return render_template(
        "admin/linacs.html",
        title="Linacs",
        linacs=rows,
        departments=departments,
        weekdays=WEEKDAYS,
    )


def _linac_values(linac: Linac | None, department_id: int | None) -> dict[str, Any]:
    if linac is None:
        return {
            "department_id": str(department_id or ""),
            "name": "",
            "beam_group": "",
            "capabilities": ["sbrt", "cbct"],
            "active": True,
            "department_hours": True,
            **_hours_values(None),
        }
    return {
        "department_id": str(linac.department_id),
        "name": linac.name,
        "beam_group": linac.beam_group or "",
        "capabilities": list(linac.capabilities or []),
        "active": linac.active,
        "department_hours": linac.opening_hours is None,
        **_hours_values(linac.opening_hours),
    }


def _linac_form_values(form: MultiDict[str, str]) -> dict[str, Any]:
    return {
        "department_id": (form.get("department_id") or "").strip(),
        "name": (form.get("name") or "").strip(),
        "beam_group": (form.get("beam_group") or "").strip(),
        "capabilities": form.getlist("capabilities"),
        "active": form.get("active") == "on",
        "department_hours": form.get("department_hours") == "on",
        **_hours_form_values(form),
    }


def _linac_page(
    linac: Linac | None,
    values: dict[str, Any],
    errors: Errors,
    status: int = 200,
    *,
    new_feed_url: str | None = None,
    feed_values: Mapping[str, str] | None = None,
    feed_errors: Errors | None = None,
):
    session = get_session()
    feeds = links.list_feeds(session, linac.id) if linac is not None else []
    # Feed times read in the linac's own department's zone, where its bookings happen.
    timezone = (
        session.scalar(sa.select(Department.timezone).where(Department.id == linac.department_id))
        if linac is not None
        else None
    ) or _zone()
    response = make_response(
        render_template(
            "admin/linac_form.html",
            title=f"Linac {linac.name}" if linac else "New linac",
            linac=linac,
            values=values,
            errors=errors,
            weekdays=WEEKDAYS,
            departments=records.list_departments(session),
            capability_choices=_capability_choices(values["capabilities"]),
            feeds=feeds,
            new_feed_url=new_feed_url,
            feed_values=feed_values or {"feed_name": ""},
            feed_errors=feed_errors or {},
            timezone=timezone,
            format_local=format_local,
        ),
        status,
    )
    if new_feed_url:
        # The only copy of the secret URL: keep it out of every cache.
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/admin/linacs/new", methods=["GET", "POST"])
@bp.route("/admin/linacs/<int:linac_id>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def linac_form(linac_id: int | None = None):
    session = get_session()
    linac = _get_or_404(Linac, linac_id) if linac_id is not None else None
    if request.method == "GET":
        first = session.scalar(sa.select(Department.id).order_by(Department.id).limit(1))
        return _linac_page(linac, _linac_values(linac, first), {})
    values = _linac_form_values(request.form)
    errors: Errors = {}
    hours = _hours_from_values(values, errors)
    payload: dict[str, Any] = {
        "name": values["name"],
        "beam_group": values["beam_group"] or None,
        "capabilities": values["capabilities"],
        "active": values["active"],
        "opening_hours": None if values["department_hours"] else hours,
    }
    if linac is None:
        payload["department_id"] = _parse_int(values, errors, "department_id")
    if values["department_hours"]:
        errors = {k: v for k, v in errors.items() if not k.startswith("opening_hours")}
    if not values["department_hours"] and not hours and not errors:
        _add(errors, "opening_hours", "open on at least one day, or use the department's hours")
    if errors:
        return _linac_page(linac, values, errors, 422)
    live_feeds = _live_feed_ids(linac_id=linac.id) if linac is not None else []
    try:
        if linac is None:
            linac = records.create_linac(session, payload)
            action = "create"
        else:
            linac = records.update_linac(session, linac.id, payload)
            action = "update"
    except InvalidInput as exc:
        session.rollback()
        return _linac_page(linac, values, _field_errors(exc), 422)
    _audit_revoked_feeds(live_feeds, reason="linac deactivated")
    audit.record(action, "linac", linac.id, actor_id=session_user_id())
    return done(f"Linac {linac.name} saved.", "admin.linacs")


def _feed_url(token: str) -> str:
    """The full feed URL on the configured public root, as patient links are built.

    This request's Host may be an internal name behind the proxy; calendar apps outside the
    hospital need the public one. The public root already includes any path the app is mounted
    under, so that prefix is taken off the path url_for builds.
    """
    settings: Settings = current_app.extensions[SETTINGS_KEY]
    path = url_for("feeds.linac_feed", token=token).removeprefix(request.script_root)
    return settings.public_base_url.rstrip("/") + path


def _live_feed_ids(*, linac_id: int | None = None, created_by_id: int | None = None) -> list[int]:
    """The feeds of a linac or of a user still live now, to audit those a change revokes."""
    query = sa.select(CalendarFeed.id).where(CalendarFeed.revoked_at.is_(None))
    if linac_id is not None:
        query = query.where(CalendarFeed.linac_id == linac_id)
    if created_by_id is not None:
        query = query.where(CalendarFeed.created_by_id == created_by_id)
    return list(get_session().scalars(query))


def _audit_revoked_feeds(feed_ids: list[int], *, reason: str) -> None:
    """One "revoke" entry per feed of ``feed_ids`` that is revoked now; the caller's own audit
    entry commits them."""
    if not feed_ids:
        return
    rows = get_session().execute(
        sa.select(CalendarFeed.id, CalendarFeed.linac_id).where(
            CalendarFeed.id.in_(feed_ids), CalendarFeed.revoked_at.is_not(None)
        )
    )
    for feed_id, linac_id in rows.all():
        audit.record(
            "revoke",
            "calendar_feed",
            feed_id,
            actor_id=session_user_id(),
            linac=linac_id,
            reason=reason,
        )


@bp.post("/admin/linacs/<int:linac_id>/feeds")
@role_required(Role.ADMIN)
def create_feed(linac_id: int):
    session = get_session()
    linac = _get_or_404(Linac, linac_id)
    name = (request.form.get("feed_name") or "").strip()
    errors: Errors = {}
    if not name:
        _add(errors, "feed_name", "Enter a name, such as who or what subscribes to the feed.")
    elif len(name) > FEED_NAME_MAX:
        _add(errors, "feed_name", f"Use at most {FEED_NAME_MAX} characters.")
    if not linac.active:
        # An inactive linac's feeds are never served: a new one would be a dead URL.
        _add(errors, "feed_name", "This linac is inactive; activate it before adding a feed.")
    if errors:
        return _linac_page(
            linac,
            _linac_values(linac, None),
            {},
            422,
            feed_values={"feed_name": name},
            feed_errors=errors,
        )
    token = links.issue_feed_token(session, linac.id, name, created_by_id=session_user_id())
    feed_id = session.scalar(
        sa.select(CalendarFeed.id).where(CalendarFeed.token_digest == links.token_digest(token))
    )
    audit.record("create", "calendar_feed", feed_id, actor_id=session_user_id(), linac=linac.id)
    # Shown in this response only (not flashed: flashes travel in the session cookie).
    return _linac_page(linac, _linac_values(linac, None), {}, 201, new_feed_url=_feed_url(token))


@bp.post("/admin/feeds/<int:feed_id>/revoke")
@role_required(Role.ADMIN)
def revoke_feed(feed_id: int):
    session = get_session()
    feed = _get_or_404(CalendarFeed, feed_id)
    linac_id, name, live = feed.linac_id, feed.name, feed.revoked_at is None
    links.revoke_feed(session, feed.id, now=datetime.now(UTC))
    if not live:
        # A second click (or a stale page) changes nothing, so there is nothing to audit.
        return done(f"Feed {name} was already revoked.", "admin.linac_form", linac_id=linac_id)
    audit.record("revoke", "calendar_feed", feed_id, actor_id=session_user_id(), linac=linac_id)
    return done(
        f"Feed {name} revoked; its URL no longer works.", "admin.linac_form", linac_id=linac_id
    )


# --- departments and closures -------------------------------------------------------------------


def _department_values(department: Department) -> dict[str, Any]:
    return {
        "name": department.name,
        "phone": department.phone or "",
        "holiday_country": department.holiday_country or "",
        "holiday_subdivision": department.holiday_subdivision or "",
        "message_window_start": department.message_window_start,
        "message_window_end": department.message_window_end,
        **_hours_values(department.opening_hours),
        **_cadence_values(department),
    }


def _department_page(
    department: Department,
    values: dict[str, Any],
    errors: Errors,
    status: int = 200,
    closure_values: Mapping[str, str] | None = None,
    closure_errors: Errors | None = None,
):
    return _page(
        "admin/department.html",
        status=status,
        title=f"Department {department.name}",
        department=department,
        values=values,
        errors=errors,
        weekdays=WEEKDAYS,
        # From the department's today: the server's own date can already be tomorrow.
        closures=records.list_closures(
            get_session(), department.id, start=datetime.now(zone(department.timezone)).date()
        ),
        closure_values=closure_values or {"day": "", "reason": ""},
        closure_errors=closure_errors or {},
        resources=records.list_resources(get_session(), department_id=department.id),
        resource_kinds=RESOURCE_KIND_LABELS,
    )


@bp.route("/admin/departments/<int:department_id>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def department(department_id: int):
    session = get_session()
    row = _get_or_404(Department, department_id)
    if request.method == "GET":
        return _department_page(row, _department_values(row), {})
    form = request.form
    values: dict[str, Any] = {
        name: (form.get(name) or "").strip()
        for name in (
            "name",
            "phone",
            "holiday_country",
            "holiday_subdivision",
            "message_window_start",
            "message_window_end",
        )
    }
    values["message_window_start"] = values["message_window_start"][:5]
    values["message_window_end"] = values["message_window_end"][:5]
    values.update(_hours_form_values(form))
    values.update(_cadence_form_values(form, _cadence_values(row)))
    errors: Errors = {}
    hours = _hours_from_values(values, errors)
    cadence = _cadence_changes(values, errors)
    if errors:
        return _department_page(row, values, errors, 422)
    changes = {
        "name": values["name"],
        "phone": values["phone"] or None,
        "holiday_country": values["holiday_country"] or None,
        "holiday_subdivision": values["holiday_subdivision"] or None,
        "message_window_start": values["message_window_start"],
        "message_window_end": values["message_window_end"],
        "opening_hours": hours,
        **cadence,
    }
    try:
        row = records.update_department(session, row.id, changes)
    except InvalidInput as exc:
        session.rollback()
        return _department_page(
            _get_or_404(Department, department_id), values, _field_errors(exc), 422
        )
    audit.record("update", "department", row.id, actor_id=session_user_id())
    return done("Department settings saved.", "admin.department", department_id=row.id)


@bp.post("/admin/departments/<int:department_id>/closures")
@role_required(Role.ADMIN)
def add_closure(department_id: int):
    session = get_session()
    row = _get_or_404(Department, department_id)
    values = {
        "day": (request.form.get("day") or "").strip(),
        "reason": (request.form.get("reason") or "").strip(),
    }
    errors: Errors = {}
    try:
        day = params.parse_date(values["day"])
    except ValueError:
        _add(errors, "day", "must be a date (YYYY-MM-DD) " + params.DATE_RANGE_TEXT)
    if not errors:
        try:
            closure = records.add_closure(session, row.id, day=day, reason=values["reason"])
        except InvalidInput as exc:
            session.rollback()
            errors = _field_errors(exc)
    if errors:
        row = _get_or_404(Department, department_id)
        return _department_page(
            row, _department_values(row), {}, 422, closure_values=values, closure_errors=errors
        )
    audit.record("create", "closure", closure.id, actor_id=session_user_id(), department=row.id)
    return done(f"Closure on {day.isoformat()} added.", "admin.department", department_id=row.id)


@bp.post("/admin/closures/<int:closure_id>/delete")
@role_required(Role.ADMIN)
def remove_closure(closure_id: int):
    session = get_session()
    closure = _get_or_404(Closure, closure_id)
    department_id, day = closure.department_id, closure.day
    audit.record(
        "delete",
        "closure",
        closure.id,
        actor_id=session_user_id(),
        department=department_id,
    )
    records.remove_closure(session, closure.id)  # commits the audit entry with it
    return done(
        f"Closure on {day.isoformat()} removed.", "admin.department", department_id=department_id
    )


# --- protocols ------------------------------------------------------------------------------

PROTOCOL_INT_FIELDS = {
    # name: required
    "fractions": True,
    "min_interval_days": True,
    "max_interval_days": False,
    "min_overall_days": False,
    "max_overall_days": False,
    "first_session_minutes": True,
    "session_minutes": True,
}
# The reminder cadence: each kind switched on or off, and its offset in minutes. On a protocol
# an empty choice means "as the department"; records checks the values for both.
REMINDER_SWITCHES = ("day_before_reminder", "same_day_reminder")
REMINDER_MINUTES = ("day_before_reminder_minutes", "same_day_reminder_minutes")
SWITCH_VALUES = {"on": True, "off": False, "": None}


def _switch_value(value: bool | None) -> str:
    return {True: "on", False: "off", None: ""}[value]


def _cadence_values(row: Department | Protocol | None) -> dict[str, str]:
    """The cadence fields of a department or protocol as the forms show them."""
    values = {name: _switch_value(getattr(row, name, None)) for name in REMINDER_SWITCHES}
    for name in REMINDER_MINUTES:
        minutes = getattr(row, name, None)
        values[name] = "" if minutes is None else str(minutes)
    return values


def _cadence_form_values(form: MultiDict[str, str], current: Mapping[str, str]) -> dict[str, str]:
    # A field missing from the form (an older page still open) keeps its value in `current`.
    return {
        name: (form.get(name) if name in form else current.get(name, "")).strip()
        for name in (*REMINDER_SWITCHES, *REMINDER_MINUTES)
    }


def _cadence_changes(values: Mapping[str, str], errors: Errors) -> dict[str, Any]:
    """Form text -> the cadence record values (None: empty, as the department)."""
    changes: dict[str, Any] = {}
    for name in REMINDER_SWITCHES:
        if values[name] not in SWITCH_VALUES:
            _add(errors, name, "choose on or off")
        changes[name] = SWITCH_VALUES.get(values[name])
    for name in REMINDER_MINUTES:
        changes[name] = _parse_int(values, errors, name, required=False)
    return changes


def _protocol_values(protocol: Protocol | None) -> dict[str, Any]:
    source: Mapping[str, Any] = (
        {name: getattr(protocol, name) for name in records.PROTOCOL_FIELDS}
        if protocol is not None
        else {
            **records.PROTOCOL_DEFAULTS,
            "code": "",
            "name": "",
            "fractions": 5,
        }
    )
    values: dict[str, Any] = _cadence_values(protocol)
    for name, value in source.items():
        if name in records.REMINDER_CADENCE_FIELDS:
            continue
        if name in ("weekdays", "start_weekdays", "capabilities"):
            values[name] = list(value or [])
        elif name == "active":
            values[name] = bool(value)
        elif name == "min_hours_between":
            values[name] = f"{float(value):g}"
        else:
            values[name] = "" if value is None else str(value)
    return values


def _protocol_form_values(form: MultiDict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: (form.get(name) or "").strip()
        for name in (
            "code",
            "name",
            "site",
            "min_hours_between",
            *PROTOCOL_INT_FIELDS,
        )
    }
    values.update(_cadence_form_values(form, {}))
    values["prep_instructions"] = (form.get("prep_instructions") or "").replace("\r\n", "\n")
    values["weekdays"] = _weekday_list(form, "weekdays")
    values["start_weekdays"] = _weekday_list(form, "start_weekdays")
    values["capabilities"] = form.getlist("capabilities")
    values["active"] = form.get("active") == "on"
    return values


def _protocol_payload(values: Mapping[str, Any], errors: Errors) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "code": values["code"],
        "name": values["name"],
        "site": values["site"],
        "prep_instructions": values["prep_instructions"],
        "weekdays": values["weekdays"],
        # None of the start days ticked means the first fraction may fall on any treatment day.
        "start_weekdays": values["start_weekdays"] or None,
        "capabilities": values["capabilities"],
        "active": values["active"],
    }
    for name, required in PROTOCOL_INT_FIELDS.items():
        payload[name] = _parse_int(values, errors, name, required=required)
    try:
        payload["min_hours_between"] = float(values["min_hours_between"] or 0)
    except ValueError:
        _add(errors, "min_hours_between", "must be a number of hours")
    payload.update(_cadence_changes(values, errors))
    return payload


def _protocol_page(
    protocol: Protocol | None, values: dict[str, Any], errors: Errors, status: int = 200
):
    return _page(
        "admin/protocol_form.html",
        status=status,
        title=f"Protocol {protocol.code}" if protocol else "New protocol",
        protocol=protocol,
        values=values,
        errors=errors,
        weekdays=WEEKDAYS,
        capability_choices=_capability_choices(values["capabilities"]),
    )


@bp.get("/admin/protocols")
@role_required(Role.ADMIN)
def protocols():
    rows = list(get_session().scalars(sa.select(Protocol).order_by(Protocol.code)))
    return render_template(
        "admin/protocols.html", title="Protocols", protocols=rows, weekdays=WEEKDAYS
    )


@bp.route("/admin/protocols/new", methods=["GET", "POST"])
@bp.route("/admin/protocols/<int:protocol_id>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def protocol_form(protocol_id: int | None = None):
    session = get_session()
    protocol = _get_or_404(Protocol, protocol_id) if protocol_id is not None else None
    if request.method == "GET":
        return _protocol_page(protocol, _protocol_values(protocol), {})
    values = _protocol_form_values(request.form)
    errors: Errors = {}
    payload = _protocol_payload(values, errors)
    if errors:
        return _protocol_page(protocol, values, errors, 422)
    try:
        if protocol is None:
            protocol = records.create_protocol(session, payload)
            action = "create"
        else:
            protocol = records.update_protocol(session, protocol.id, payload)
            action = "update"
    except InvalidInput as exc:
        session.rollback()
        return _protocol_page(protocol, values, _field_errors(exc), 422)
    audit.record(action, "protocol", protocol.id, actor_id=session_user_id())
    return done(f"Protocol {protocol.code} saved.", "admin.protocols")


# --- users and API tokens ---------------------------------------------------------------------


# Which departments a scheduler or viewer works in; admins see every department regardless.
DEPARTMENTS_HINT = (
    "Schedulers and viewers see only the patients, schedules and messages of the departments "
    "ticked here; admins see every department."
)


def _department_choices() -> list[tuple[int, str]]:
    return [(d.id, d.name) for d in records.list_departments(get_session())]


def _department_ids_from_form() -> list[int]:
    """The ticked departments; anything but a listed id cannot come from the form."""
    ids = [params.int_or_none(value) for value in request.form.getlist("department_ids")]
    if any(i is None for i in ids):
        abort(400, "Choose departments from the list.")
    return sorted({i for i in ids if i is not None})


def _users_page(
    values: Mapping[str, Any] | None = None, errors: Errors | None = None, status: int = 200
):
    return _page(
        "admin/users.html",
        status=status,
        title="Users and roles",
        users=accounts.list_users(get_session()),
        roles=[r.value for r in Role],
        values=values or {"email": "", "name": "", "role": Role.VIEWER.value, "department_ids": []},
        errors=errors or {},
        department_choices=_department_choices(),
        departments_hint=DEPARTMENTS_HINT,
    )


@bp.route("/admin/users", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def users():
    if request.method == "GET":
        return _users_page()
    session = get_session()
    values: dict[str, Any] = {
        name: (request.form.get(name) or "").strip() for name in ("email", "name", "role")
    }
    values["department_ids"] = _department_ids_from_form()
    try:
        user = accounts.create_user(
            session,
            email=values["email"],
            name=values["name"],
            role=values["role"],
            password=request.form.get("password") or "",
            department_ids=values["department_ids"],
        )
    except InvalidInput as exc:
        session.rollback()
        return _users_page(values, _field_errors(exc), 422)
    audit.record(
        "create",
        "user",
        user.id,
        actor_id=session_user_id(),
        role=user.role,
        departments=user.department_ids,
    )
    return done(f"User {user.name} created.", "admin.users")


def _user_page(
    user: User,
    *,
    errors: Errors | None = None,
    status: int = 200,
    new_token: str | None = None,
    values: Mapping[str, Any] | None = None,
):
    tokens = accounts.list_api_tokens(get_session(), user_id=user.id)
    response = make_response(
        render_template(
            "admin/user.html",
            title=f"User {user.name}",
            user=user,
            tokens=tokens,
            roles=[r.value for r in Role],
            values=values
            or {
                "name": user.name,
                "role": user.role,
                "active": user.active,
                "department_ids": user.department_ids,
            },
            errors=errors or {},
            department_choices=_department_choices(),
            departments_hint=DEPARTMENTS_HINT,
            new_token=new_token,
            feeds=links.list_owned_feeds(get_session(), user.id),
            timezone=_zone(),
            format_local=format_local,
        ),
        status,
    )
    if new_token:
        # The only copy of the token: keep it out of every cache.
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/admin/users/<int:user_id>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def user(user_id: int):
    session = get_session()
    row = _get_or_404(User, user_id)
    if request.method == "GET":
        return _user_page(row)
    values = {
        "name": (request.form.get("name") or "").strip(),
        "role": request.form.get("role") or "",
        "active": request.form.get("active") == "on",
    }
    # Only the account form carries the departments; a post without them leaves them alone.
    department_ids = _department_ids_from_form() if request.form.get("departments_shown") else None
    values["department_ids"] = row.department_ids if department_ids is None else department_ids
    password = request.form.get("password") or None
    before = (row.role, row.active, row.department_ids)
    live_feeds = _live_feed_ids(created_by_id=row.id)
    try:
        accounts.update_user(
            session,
            row.id,
            name=values["name"],
            role=values["role"],
            active=values["active"],
            password=password,
            department_ids=department_ids,
            actor_id=session_user_id(),
        )
    except InvalidInput as exc:
        session.rollback()
        return _user_page(
            _get_or_404(User, user_id), errors=_field_errors(exc), status=422, values=values
        )
    detail: dict[str, Any] = {}
    if before[2] != row.department_ids:
        detail["departments"] = row.department_ids
    if before[0] != row.role:
        detail["role"] = f"{before[0]} -> {row.role}"
    if before[1] != row.active:
        detail["active"] = row.active
        if not row.active:
            detail["api_tokens"] = "revoked"
    if password:
        detail["password"] = "changed"
        # An admin changing their own password stays signed in here; every other session ends.
        keep_own_session(row)
    _audit_revoked_feeds(live_feeds, reason="owner deactivated")
    audit.record("update", "user", row.id, actor_id=session_user_id(), **detail)
    return done(f"User {row.name} saved.", "admin.user", user_id=row.id)


@bp.post("/admin/users/<int:user_id>/tokens")
@role_required(Role.ADMIN)
def create_token(user_id: int):
    session = get_session()
    row = _get_or_404(User, user_id)
    try:
        issued = accounts.issue_api_token(session, row.id, request.form.get("token_name") or "")
    except InvalidInput as exc:
        session.rollback()
        errors = {"token_name": [e.message for e in exc.errors] or [exc.detail]}
        return _user_page(row, errors=errors, status=422)
    except ServiceError as exc:  # a deactivated user gets no new tokens
        session.rollback()
        return _user_page(row, errors={"token_name": [exc.detail]}, status=409)
    audit.record("create", "api_token", issued.token.id, actor_id=session_user_id(), user=row.id)
    # Shown in this response only (not flashed: flashes travel in the session cookie).
    return _user_page(row, new_token=issued.plaintext, status=201)


@bp.post("/admin/tokens/<int:token_id>/revoke")
@role_required(Role.ADMIN)
def revoke_token(token_id: int):
    session = get_session()
    token = _get_or_404(ApiToken, token_id)
    user_id = token.user_id
    accounts.revoke_api_token(session, token.id)
    audit.record("revoke", "api_token", token.id, actor_id=session_user_id(), user=user_id)
    return done(f"Token {token.name} revoked.", "admin.user", user_id=user_id)


# --- message templates --------------------------------------------------------------------------


@bp.get("/admin/templates")
@role_required(Role.ADMIN)
def templates():
    session = get_session()
    overrides = template_store.list_overrides(session)
    names = dict(session.execute(sa.select(User.id, User.name)).tuples().all())
    return render_template(
        "admin/templates.html",
        title="Message templates",
        kinds=template_store.KINDS,
        parts=template_store.PART_LABELS,
        languages=template_store.LANGUAGES,
        overrides=overrides,
        names=names,
        timezone=_zone(),
        format_local=format_local,
    )


def _template_page(
    kind: str,
    part: str,
    sources: Mapping[str, str],
    *,
    status: int = 200,
    checks: Mapping[str, Any] | None = None,
):
    session = get_session()
    edited = {
        lang: template_store.get_override(session, kind, part, lang) is not None
        for lang in template_store.LANGUAGES
    }
    if checks is None:
        checks = {
            lang: template_store.check_source(kind, part, lang, sources[lang])
            for lang in template_store.LANGUAGES
        }
    return _page(
        "admin/template_form.html",
        status=status,
        title=f"Template: {kind.replace('_', ' ')} · {template_store.PART_LABELS[part]}",
        kind=kind,
        part=part,
        sources=sources,
        checks=checks,
        edited=edited,
        languages=template_store.LANGUAGES,
        sms_max=template_store.SMS_MAX_CHARACTERS,
    )


def _known_template(kind: str, part: str, language: str = "en") -> None:
    if not template_store.is_known(kind, part, language):
        abort(404)


@bp.route("/admin/templates/<kind>/<part>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def template_form(kind: str, part: str):
    _known_template(kind, part)
    session = get_session()
    if request.method == "GET":
        sources = {
            lang: template_store.current_source(session, kind, part, lang)
            for lang in template_store.LANGUAGES
        }
        return _template_page(kind, part, sources)
    sources = {
        lang: template_store.normalise_source(request.form.get(f"source_{lang}") or "")
        for lang in template_store.LANGUAGES
    }
    if request.form.get("action") != "save":
        checks = {
            lang: template_store.check_source(kind, part, lang, sources[lang])
            for lang in template_store.LANGUAGES
        }
        return _template_page(kind, part, sources, checks=checks)
    result = template_store.save_edits(session, kind, part, sources, user_id=session_user_id())
    if not result.ok:
        return _template_page(kind, part, sources, checks=result.checks, status=422)
    for edit in result.saved:
        audit.record(
            "update" if edit.template_id is not None else "reset",
            "message_template",
            edit.template_id,
            actor_id=session_user_id(),
            kind=kind,
            part=part,
            language=edit.language,
        )
    changed = [edit.language for edit in result.saved]
    message = f"Saved ({', '.join(changed)})." if changed else "No changes to save."
    return done(message, "admin.template_form", kind=kind, part=part)


@bp.post("/admin/templates/<kind>/<part>/<language>/reset")
@role_required(Role.ADMIN)
def template_reset(kind: str, part: str, language: str):
    _known_template(kind, part, language)
    session = get_session()
    template_id = template_store.reset_override(session, kind, part, language)
    if template_id is None:
        return done("Already the shipped template.", "admin.template_form", kind=kind, part=part)
    audit.record(
        "reset",
        "message_template",
        template_id,
        actor_id=session_user_id(),
        kind=kind,
        part=part,
        language=language,
    )
    return done(
        f"The shipped {language} template applies again.",
        "admin.template_form",
        kind=kind,
        part=part,
    )


# --- audit log ------------------------------------------------------------------------------


def _audit_filters() -> tuple[audit_log.AuditFilters, dict[str, str], dict[str, Any]]:
    """The page's filters from the query string, their errors, and what the form offers."""
    users, types, actions = audit_log.choices(get_session())
    filters, errors = audit_log.parse_filters(
        request.args, record_types=set(types), actions=set(actions)
    )
    offered = {"users": users, "record_types": types, "actions": actions}
    return filters, errors, offered


@bp.get("/admin/audit", endpoint="audit_log")
@role_required(Role.ADMIN)
def audit_log_page():
    session = get_session()
    # Far beyond the last page is an empty page; beyond this, the offset itself would overflow.
    number = params.query_int("page", 1, low=1, high=1_000_000)
    filters, errors, offered = _audit_filters()
    tz = _zone()
    rows = []
    if not errors:
        rows = session.execute(
            audit_log.statement(filters, tz)
            .limit(AUDIT_PAGE_SIZE + 1)
            .offset((number - 1) * AUDIT_PAGE_SIZE)
        ).all()
    entries = [
        {
            "at": format_local(entry.at, tz),
            "who": name or ("system" if entry.actor_id is None else f"user {entry.actor_id}"),
            "action": entry.action,
            "subject_type": entry.subject_type,
            "subject_id": entry.subject_id,
            # The page (path) and method are shown as such; the rest is what the action noted.
            "path": (entry.detail or {}).get("path"),
            "detail": {
                k: v for k, v in (entry.detail or {}).items() if k not in ("path", "method")
            },
        }
        for entry, name, _email in rows[:AUDIT_PAGE_SIZE]
    ]
    return _page(
        "admin/audit.html",
        status=400 if errors else 200,
        title="Audit log",
        entries=entries,
        page=number,
        has_more=len(rows) > AUDIT_PAGE_SIZE,
        timezone=tz,
        values={k: (request.args.get(k) or "").strip() for k in AUDIT_FILTER_FIELDS},
        errors=errors,
        filter_args=filters.query_args(),
        **offered,
    )


AUDIT_FILTER_FIELDS = ("user", "record_type", "record_id", "action", "from", "to")


@bp.get("/admin/audit.csv")
@role_required(Role.ADMIN)
def audit_log_csv():
    filters, errors, _offered = _audit_filters()
    if errors:
        abort(400, " ".join(errors.values()))
    tz = _zone()
    # The export is itself worth finding in the log: who took a copy, of what.
    with transaction():
        audit.record("export", "audit_log", None, actor_id=session_user_id(), **filters.as_detail())
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    response = Response(
        stream_with_context(audit_log.csv_lines(get_session(), filters, tz)),
        mimetype="text/csv",
    )
    response.headers["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_template_filter("weekday_names")
def _weekday_names(days: list[int] | None) -> str:
    if not days:
        return "any"
    return ", ".join(WEEKDAYS[d][:3] for d in days if 0 <= d < 7)


@bp.app_template_filter("admin_hours")
def _hours_text(hours: Mapping[str, Any] | None) -> str:
    if not hours:
        return "department hours"
    return "; ".join(
        f"{WEEKDAYS[int(d)][:3]} {w[0]}–{w[1]}" for d, w in sorted(hours.items()) if d.isdigit()
    )
