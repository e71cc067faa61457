"""Staff pages of the pathway before treatment: a department's CT simulators and IR rooms
(admin), and a course's pathway (propose, book, cancel; schedulers).

A proposal is shown with its slots; booking sends those slots back, so a room taken in the
meantime is reported and a fresh proposal shown instead of silently booking another time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, make_response, render_template, request
from werkzeug.datastructures import MultiDict

from scheduler import records, services
from scheduler.errors import Conflict, InvalidInput, NotFound, StateConflict
from scheduler.models import Course, Department, Resource, Role
from scheduler.services import PathwayOptions, PathwayProposal, StepChoice
from scheduler.timeutil import format_local
from web import audit, params
from web.auth import session_user, session_user_id
from web.db import get_session
from web.ui import done, role_required
from web.views.admin import (
    RESOURCE_KIND_LABELS,
    WEEKDAYS,
    _hours_form_values,
    _hours_from_values,
    _hours_values,
)
from web.views.patients import PATHWAY_STEP_LABELS, can_see_patient

bp = Blueprint("pathway", __name__)

Errors = dict[str, list[str]]
FIDUCIAL_CHOICES = {"": "as the protocol (liver: yes)", "yes": "yes", "no": "no"}
OPTION_FIELDS = (
    "ct_sim_minutes",
    "planning_working_days",
    "fiducials_minutes",
    "fiducials_days_before_ct",
)
DEFAULT_OPTIONS = PathwayOptions()


def _field_errors(exc: InvalidInput) -> Errors:
    errors: Errors = {}
    for error in exc.errors:
        errors.setdefault(error.field, []).append(error.message)
    if not errors or not exc.detail.endswith("is not valid."):
        # A cause beyond the typed fields (no CT simulator yet, no free room): say it first.
        errors["_form"] = [exc.detail]
    return errors


# --- resources (admin) ----------------------------------------------------------------------


def _resource_values(resource: Resource | None) -> dict[str, Any]:
    if resource is None:
        return {"name": "", "kind": "ct_sim", "active": True, "department_hours": True,
                **_hours_values(None)}  # fmt: skip
    return {
        "name": resource.name,
        "kind": resource.kind,
        "active": resource.active,
        "department_hours": resource.opening_hours is None,
        **_hours_values(resource.opening_hours),
    }


def _resource_page(
    department: Department, resource: Resource | None, values: Mapping[str, Any], errors: Errors,
    status: int = 200,
):  # fmt: skip
    html = render_template(
        "admin/resource_form.html",
        title=f"{resource.name}" if resource else f"New CT simulator or IR room: {department.name}",
        department=department,
        resource=resource,
        values=values,
        errors=errors,
        weekdays=WEEKDAYS,
        kinds=RESOURCE_KIND_LABELS,
    )
    return make_response(html, status)


@bp.route("/admin/departments/<int:department_id>/resources/new", methods=["GET", "POST"])
@bp.route("/admin/resources/<int:resource_id>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def resource_form(department_id: int | None = None, resource_id: int | None = None):
    session = get_session()
    resource = session.get(Resource, resource_id) if resource_id is not None else None
    if resource_id is not None and resource is None:
        abort(404)
    department = session.get(
        Department, resource.department_id if resource is not None else department_id
    )
    if department is None:
        abort(404)
    if request.method == "GET":
        return _resource_page(department, resource, _resource_values(resource), {})
    form = request.form
    values: dict[str, Any] = {
        "name": (form.get("name") or "").strip(),
        "kind": form.get("kind") or "",
        "active": form.get("active") == "on",
        "department_hours": form.get("department_hours") == "on",
        **_hours_form_values(form),
    }
    errors: Errors = {}
    hours = _hours_from_values(values, errors)
    if values["department_hours"]:
        errors = {k: v for k, v in errors.items() if not k.startswith("opening_hours")}
    elif not hours and not errors:
        errors["opening_hours"] = ["open on at least one day, or use the department's hours"]
    if errors:
        return _resource_page(department, resource, values, errors, 422)
    payload: dict[str, Any] = {
        "name": values["name"],
        "active": values["active"],
        "opening_hours": None if values["department_hours"] else hours,
    }
    try:
        if resource is None:
            payload |= {"department_id": department.id, "kind": values["kind"]}
            saved = records.create_resource(session, payload)
            action = "create"
        else:
            saved = records.update_resource(session, resource.id, payload)
            action = "update"
    except InvalidInput as exc:
        session.rollback()
        department = session.get(Department, department.id)
        assert department is not None
        return _resource_page(department, resource, values, _field_errors(exc), 422)
    audit.record(action, "resource", saved.id, actor_id=session_user_id(), department=department.id)
    return done(f"{saved.name} saved.", "admin.department", department_id=department.id)


# --- a course's pathway (schedulers) ---------------------------------------------------------


def _course_or_404(course_id: int) -> Course:
    session = get_session()
    try:
        course = records.get_course(session, course_id)
    except NotFound:
        abort(404)
    # Another department's course answers exactly like one that does not exist.
    if not can_see_patient(session_user(), course.patient):
        abort(404)
    return course


def _option_values(form: MultiDict[str, str] | None) -> dict[str, str]:
    if form is None:
        return {
            **{name: str(getattr(DEFAULT_OPTIONS, name)) for name in OPTION_FIELDS},
            "fiducials": "",
        }
    values = {name: (form.get(name) or "").strip() for name in OPTION_FIELDS}
    values["fiducials"] = form.get("fiducials") or ""
    return values


def _options(values: Mapping[str, str], errors: Errors) -> PathwayOptions:
    numbers: dict[str, int] = {}
    for name in OPTION_FIELDS:
        number = params.int_or_none(values[name])
        if number is None:
            errors.setdefault(name, []).append("must be a whole number")
        else:
            numbers[name] = number
    if values["fiducials"] not in FIDUCIAL_CHOICES:
        errors.setdefault("fiducials", []).append("choose one of the options")
    fiducials = {"yes": True, "no": False}.get(values["fiducials"])
    return replace(DEFAULT_OPTIONS, fiducials=fiducials, **numbers)


def _pathway_page(
    course: Course,
    values: Mapping[str, str],
    *,
    errors: Errors | None = None,
    proposal: PathwayProposal | None = None,
    message: str | None = None,
    status: int = 200,
):
    session = get_session()
    pathway = services.get_pathway(session, course.id)
    html = render_template(
        "courses/pathway.html",
        course=course,
        patient=course.patient,
        pathway=pathway,
        tz=pathway.timezone,
        values=values,
        errors=errors or {},
        proposal=proposal,
        message=message,
        pathway_labels=PATHWAY_STEP_LABELS,
        fiducial_choices=FIDUCIAL_CHOICES,
        format_local=format_local,
    )
    audit.record("view", "course", course.id, actor_id=session_user_id(), page="pathway")
    return make_response(html, status)


@bp.get("/courses/<int:course_id>/pathway")
@role_required(Role.SCHEDULER)
def pathway(course_id: int):
    return _pathway_page(_course_or_404(course_id), _option_values(None))


def _propose(course: Course, values: Mapping[str, str], options: PathwayOptions, status: int):
    """The page with a fresh proposal, or with why there is none."""
    session = get_session()
    try:
        proposal = services.propose_pathway(session, course.id, options=options)
    except (InvalidInput, StateConflict) as exc:
        session.rollback()
        errors = _field_errors(exc) if isinstance(exc, InvalidInput) else {"_form": [exc.detail]}
        course = _course_or_404(course.id)
        return _pathway_page(course, values, errors=errors, status=max(status, 422))
    audit.record("propose_pathway", "course", course.id, actor_id=session_user_id())
    return _pathway_page(course, values, proposal=proposal, status=status)


@bp.post("/courses/<int:course_id>/pathway/propose")
@role_required(Role.SCHEDULER)
def propose(course_id: int):
    course = _course_or_404(course_id)
    values = _option_values(request.form)
    errors: Errors = {}
    options = _options(values, errors)
    if errors:
        return _pathway_page(course, values, errors=errors, status=422)
    return _propose(course, values, options, 200)


def _slot(form: MultiDict[str, str], prefix: str, errors: Errors) -> StepChoice | None:
    resource_id = params.int_or_none(form.get(f"{prefix}_resource_id") or "")
    starts_at = form.get(f"{prefix}_starts_at") or ""
    if resource_id is None and not starts_at:
        return None
    try:
        # The proposal's own instants, with their offsets, sent back as they were shown.
        instant = datetime.fromisoformat(starts_at)
    except ValueError:
        instant = None
    if resource_id is None or instant is None or instant.tzinfo is None:
        errors.setdefault("_form", []).append("The proposal was not understood; propose again.")
        return None
    return StepChoice(resource_id, instant)


@bp.post("/courses/<int:course_id>/pathway/book")
@role_required(Role.SCHEDULER)
def book(course_id: int):
    session = get_session()
    course = _course_or_404(course_id)
    values = _option_values(request.form)
    errors: Errors = {}
    options = _options(values, errors)
    ct_sim = _slot(request.form, "ct_sim", errors)
    fiducials = _slot(request.form, "fiducials", errors)
    if ct_sim is None and not errors:
        errors["_form"] = ["Propose a pathway first, then book it."]
    if errors:
        return _pathway_page(course, values, errors=errors, status=422)
    try:
        booked = services.book_pathway(
            session,
            course.id,
            options=options,
            ct_sim=ct_sim,
            fiducials=fiducials,
            actor_id=session_user_id(),
        )
    except Conflict as exc:
        session.rollback()
        course = _course_or_404(course_id)
        return _conflict_page(course, values, options, exc.detail)
    except (InvalidInput, StateConflict) as exc:
        session.rollback()
        course = _course_or_404(course_id)
        errors = _field_errors(exc) if isinstance(exc, InvalidInput) else {"_form": [exc.detail]}
        return _pathway_page(course, values, errors=errors, status=422)
    audit.record("book_pathway", "course", course.id, actor_id=session_user_id())
    return done(
        f"Pathway booked: ready to treat from {booked.ready_on}.",
        "patients.course",
        course_id=course.id,
    )


def _conflict_page(course: Course, values: Mapping[str, str], options: PathwayOptions, why: str):
    """A room was taken since the proposal: say so, and show the next proposal instead."""
    session = get_session()
    try:
        proposal = services.propose_pathway(session, course.id, options=options)
    except (InvalidInput, StateConflict):
        session.rollback()
        proposal = None
    message = f"Not booked: {why}. A new proposal is shown below."
    return _pathway_page(course, values, proposal=proposal, message=message, status=409)


@bp.post("/courses/<int:course_id>/pathway/cancel")
@role_required(Role.SCHEDULER)
def cancel(course_id: int):
    session = get_session()
    course = _course_or_404(course_id)
    try:
        services.cancel_pathway(session, course.id, actor_id=session_user_id())
    except StateConflict as exc:
        session.rollback()
        course = _course_or_404(course_id)
        return _pathway_page(
            course, _option_values(None), errors={"_form": [exc.detail]}, status=409
        )
    audit.record("cancel_pathway", "course", course.id, actor_id=session_user_id())
    return done(
        "Pathway cancelled; its rooms are free again.", "patients.course", course_id=course.id
    )
