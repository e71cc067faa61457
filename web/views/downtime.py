"""Staff pages: linac downtime (create -> preview the re-plan -> apply) and the work queue of
courses a re-plan could not place.

The preview runs the real re-plan with ``preview=True`` (the service rolls it back), so what
the scheduler approves is exactly what "Apply" does, unless bookings changed in between; the
flash after applying reports what actually happened. Times are typed in the department's
zone: a time that does not exist (spring forward) is refused, an ambiguous one (fall back)
must be chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy.orm import Session, selectinload

from notifications import outbox
from notifications.types import Kind
from scheduler import services, unit_of_work
from scheduler.errors import NotFound, RulesBroken, ServiceError
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    Course,
    CourseStatus,
    Department,
    Downtime,
    Fraction,
    Linac,
    Patient,
    Role,
)
from scheduler.plain_text import plain_text_problem
from scheduler.services import DowntimeReport
from scheduler.timeutil import (
    AmbiguousLocalTime,
    NonexistentLocalTime,
    format_local,
    localize,
    to_local,
)
from web import audit, params
from web.auth import session_user_id
from web.db import get_session, transaction
from web.ui import done, role_required

bp = Blueprint("downtime", __name__)

KINDS = ("planned", "unplanned")
MAX_REASON = 300  # Downtime.reason's column length
UPCOMING_LIMIT = 200


def _initials(patient: Patient) -> str:
    return "".join(f"{n.strip()[:1].upper()}." for n in (patient.given_name, patient.family_name))


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


# --- the work queue ---------------------------------------------------------------------------


def overlapping_downtime(session: Session, *, course_id: int | None = None, since: datetime):
    """(fraction, downtime) pairs: active fractions still overlapping a downtime of their linac,
    ending after ``since``, with course, patient and protocol loaded (one query)."""
    query = (
        sa.select(Fraction, Downtime)
        .join(
            Downtime,
            sa.and_(
                Downtime.linac_id == Fraction.linac_id,
                Downtime.starts_at < Fraction.ends_at,
                Downtime.ends_at > Fraction.starts_at,
            ),
        )
        .where(Fraction.status.in_(ACTIVE_FRACTION_STATUSES), Fraction.ends_at > since)
        .options(
            selectinload(Fraction.course).selectinload(Course.patient),
            selectinload(Fraction.course).selectinload(Course.protocol),
            selectinload(Fraction.linac),
        )
        .order_by(Fraction.starts_at)
    )
    if course_id is not None:
        query = query.where(Fraction.course_id == course_id)
    return session.execute(query).all()


def incomplete_courses(session: Session) -> list[Course]:
    """Courses short of fractions and waiting to be rebooked, most urgent first."""
    return list(
        session.scalars(
            sa.select(Course)
            .where(Course.status == CourseStatus.INCOMPLETE)
            .options(
                selectinload(Course.patient),
                selectinload(Course.protocol),
                selectinload(Course.fractions),
            )
            .order_by(Course.priority, Course.updated_at)
        )
    )


@bp.get("/downtime")
@role_required(Role.SCHEDULER)
def index():
    session = get_session()
    now = datetime.now(UTC)
    tz = _timezone(session)
    upcoming = list(
        session.scalars(
            sa.select(Downtime)
            .where(Downtime.ends_at > now)
            .options(selectinload(Downtime.linac))
            .order_by(Downtime.starts_at)
            .limit(UPCOMING_LIMIT)
        )
    )
    review = list(
        session.scalars(
            sa.select(Course)
            .where(Course.status == CourseStatus.NEEDS_REVIEW)
            .options(selectinload(Course.patient), selectinload(Course.protocol))
            .order_by(Course.priority, Course.updated_at)
        )
    )
    unplaceable = overlapping_downtime(session, since=now)
    incomplete = incomplete_courses(session)
    audit.record(
        "view",
        "downtime_queue",
        None,
        actor_id=session_user_id(),
        courses=[c.id for c in review + incomplete],
        fractions=[f.id for f, _ in unplaceable],
    )
    return render_template(
        "downtime/index.html",
        title="Downtime",
        upcoming=upcoming,
        review=review,
        incomplete=incomplete,
        unplaceable=unplaceable,
        local=lambda t: format_local(t, tz),
        initials=_initials,
        timezone=tz,
    )


@bp.post("/downtime/courses/<int:course_id>/reviewed")
@role_required(Role.SCHEDULER)
def reviewed(course_id: int):
    override_reason = request.form.get("override_reason", "").strip() or None
    try:
        with transaction():
            course = services.mark_reviewed(
                get_session(),
                course_id,
                override_reason=override_reason,
                actor_id=session_user_id(),
                now=datetime.now(UTC),
            )
            audit.record(
                "update",
                "course",
                course.id,
                actor_id=session_user_id(),
                status=str(course.status),
                reviewed=True,
                overridden=override_reason is not None,
            )
    except NotFound:
        abort(404)
    except RulesBroken as exc:
        broken = "; ".join(v.message for v in exc.violations)
        if all(v.overridable for v in exc.violations):
            return done_error(
                f"Course {course_id} breaks protocol rules: {broken}. "
                "Give a reason to accept them, or move the fractions from the course page."
            )
        return done_error(f"Course {course_id} cannot be booked as it stands: {broken}.")
    except ServiceError as exc:
        return done_error(str(exc.args[0]) if exc.args else "cannot mark reviewed")
    state = "booked again" if course.status == CourseStatus.BOOKED else "still incomplete"
    return done(f"Course {course.id} marked reviewed; it is {state}.", "downtime.index")


def done_error(message: str) -> Any:
    """Say why nothing changed, back on the queue page."""
    flash(message, "error")
    return redirect(url_for("downtime.index"))


# --- create, preview, apply -------------------------------------------------------------------


@dataclass
class DowntimeForm:
    """The form's values as typed, and what they mean once checked."""

    linac_id: str = ""
    starts_local: str = ""
    ends_local: str = ""
    starts_fold: str = ""
    ends_fold: str = ""
    kind: str = "planned"
    reason: str = ""

    @classmethod
    def from_request(cls) -> DowntimeForm:
        form = request.form
        return cls(**{name: form.get(name, "").strip() for name in cls.__dataclass_fields__})

    def hidden(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class Checked:
    linac: Linac
    starts_at: datetime
    ends_at: datetime


def _linacs(session: Session) -> list[Linac]:
    return list(
        session.scalars(
            sa.select(Linac)
            .where(Linac.active.is_(True))
            .options(selectinload(Linac.department))
            .order_by(Linac.department_id, Linac.id)
        )
    )


def _timezone(session: Session) -> str:
    department = session.scalars(sa.select(Department).order_by(Department.id).limit(1)).first()
    return department.timezone if department else "UTC"


def _local_instant(
    value: str, fold: str, tz: str, field: str, errors: dict[str, str], ambiguous: set[str]
) -> datetime | None:
    if not value:
        errors[field] = "Enter a date and time."
        return None
    try:
        naive = params.parse_datetime(value)
    except ValueError:
        errors[field] = (
            "Enter a date and time such as 2026-03-09 07:30, "
            f"between {params.MIN_YEAR} and {params.MAX_YEAR}."
        )
        return None
    if naive.tzinfo is not None:
        errors[field] = "Enter the local time without a zone."
        return None
    try:
        return localize(naive, tz, fold=int(fold) if fold in ("0", "1") else None)
    except NonexistentLocalTime as exc:
        errors[field] = f"{exc}. Choose a time outside the gap."
    except AmbiguousLocalTime as exc:
        errors[field] = f"{exc}: pick which one below."
        ambiguous.add(field.replace("_local", "_fold"))
    return None


def _check(
    session: Session, form: DowntimeForm, linacs: list[Linac]
) -> tuple[Checked | None, dict[str, str], set[str]]:
    errors: dict[str, str] = {}
    ambiguous: set[str] = set()
    linac = next((x for x in linacs if str(x.id) == form.linac_id), None)
    if linac is None:
        errors["linac_id"] = "Choose a linac."
    if form.kind not in KINDS:
        errors["kind"] = "Choose planned or unplanned."
    if len(form.reason) > MAX_REASON:
        errors["reason"] = f"At most {MAX_REASON} characters."
    elif (problem := plain_text_problem(form.reason)) is not None:
        errors["reason"] = f"The reason {problem}."
    tz = linac.department.timezone if linac is not None else _timezone(session)
    starts = _local_instant(
        form.starts_local, form.starts_fold, tz, "starts_local", errors, ambiguous
    )
    ends = _local_instant(form.ends_local, form.ends_fold, tz, "ends_local", errors, ambiguous)
    if starts and ends and ends <= starts:
        errors["ends_local"] = "The end must be after the start."
    if errors or linac is None or starts is None or ends is None:
        return None, errors, ambiguous
    return Checked(linac, starts, ends), errors, ambiguous


def _form_page(
    form: DowntimeForm,
    linacs,
    errors=None,
    ambiguous=(),
    status=200,
    error=None,
    *,
    editing: Downtime | None = None,
):
    page = render_template(
        "downtime/new.html",
        title="Edit downtime" if editing is not None else "New downtime",
        form=form,
        linacs=linacs,
        kinds=KINDS,
        errors=errors or {},
        ambiguous=set(ambiguous),
        error=error,
        editing=editing,
        action_url=(
            url_for("downtime.edit", downtime_id=editing.id) if editing is not None else None
        ),
    )
    return page, status


def _report_rows(session: Session, report: services.DowntimeReport, tz: str) -> dict[str, list]:
    """The report's fractions with the names the page shows (two small queries)."""
    course_ids = (
        {m.course_id for m in report.moved}
        | {u.course_id for u in report.unplaceable}
        | {r.course_id for r in report.returnable}
    )
    courses = {
        c.id: c
        for c in session.scalars(
            sa.select(Course)
            .where(Course.id.in_(course_ids))
            .options(selectinload(Course.patient), selectinload(Course.protocol))
        )
    }
    names = dict(session.execute(sa.select(Linac.id, Linac.name)).tuples().all())

    def who(course_id: int) -> str:
        course = courses.get(course_id)
        if course is None:
            return f"course {course_id}"
        return f"{_initials(course.patient)} {course.patient.mrn} · {course.protocol.code}"

    moved = [
        {
            "course_id": m.course_id,
            "who": who(m.course_id),
            "number": m.number,
            "before": f"{names.get(m.before.linac_id)} {format_local(m.before.start, tz)}",
            "after": f"{names.get(m.after.linac_id)} {format_local(m.after.start, tz)}",
        }
        for m in report.moved
    ]
    unplaceable = [
        {
            "course_id": u.course_id,
            "who": who(u.course_id),
            "number": u.number,
            "when": format_local(u.starts_at, tz),
            "reason": u.reason,
        }
        for u in report.unplaceable
    ]
    returnable = [
        {
            "course_id": r.course_id,
            "who": who(r.course_id),
            "number": r.number,
            "current": f"{names.get(r.current.linac_id)} {format_local(r.current.start, tz)}",
            "original": f"{names.get(r.original.linac_id)} {format_local(r.original.start, tz)}",
        }
        for r in report.returnable
    ]
    return {"moved": moved, "unplaceable": unplaceable, "returnable": returnable}


@bp.route("/downtime/new", methods=["GET", "POST"])
@role_required(Role.SCHEDULER)
def new():
    session = get_session()
    linacs = _linacs(session)
    if request.method == "GET":
        wanted = request.args.get("linac", "")
        return _form_page(DowntimeForm(linac_id=wanted), linacs)
    form = DowntimeForm.from_request()
    if request.form.get("action") == "edit":
        return _form_page(form, linacs)
    checked, errors, ambiguous = _check(session, form, linacs)
    if checked is None:
        return _form_page(form, linacs, errors, ambiguous, 400, "Check the highlighted fields.")
    apply = request.form.get("action") == "apply"
    tz = checked.linac.department.timezone
    queued = outbox.collect(session)

    def add() -> DowntimeReport:
        report = services.add_downtime(
            session,
            checked.linac.id,
            starts_at=checked.starts_at,
            ends_at=checked.ends_at,
            kind=form.kind,
            reason=form.reason,
            preview=not apply,
            actor_id=session_user_id(),
        )
        if apply:
            audit.record(
                "create",
                "downtime",
                report.downtime_id,
                actor_id=session_user_id(),
                linac_id=checked.linac.id,
                moved=len(report.moved),
                unplaceable=len(report.unplaceable),
            )
        return report

    try:
        # Applied, the re-plan and its audit entry are one unit of work, run again when
        # PostgreSQL broke a deadlock with a booking made meanwhile.
        report = unit_of_work.run(session, add) if apply else add()
    except ServiceError as exc:
        session.rollback()
        return _form_page(form, linacs, status=409 if apply else 400, error=str(exc))
    if not apply:
        rows = _report_rows(session, report, tz)
        # The preview names patients: one audit entry for the page, like the calendar.
        audit.record(
            "view",
            "downtime_preview",
            None,
            actor_id=session_user_id(),
            linac_id=checked.linac.id,
            courses=sorted({r["course_id"] for r in rows["moved"] + rows["unplaceable"]}),
        )
        return render_template(
            "downtime/preview.html",
            title="Preview re-plan",
            form=form,
            linac=checked.linac,
            starts=format_local(checked.starts_at, tz),
            ends=format_local(checked.ends_at, tz),
            counts=report,
            **rows,
        )
    notices = _change_notices(queued, [m.fraction_id for m in report.moved])
    message = (
        f"{_plural(len(report.moved), 'fraction', 'fractions')} moved, "
        f"{len(report.unplaceable)} need a human; "
        f"{_plural(notices, 'change notice', 'change notices')} queued."
    )
    return done(message + _outcomes(report), "downtime.index")


# --- edit and remove ---------------------------------------------------------------------------


def _downtime_or_404(session: Session, downtime_id: int) -> Downtime:
    downtime = session.get(
        Downtime,
        downtime_id,
        options=[selectinload(Downtime.linac).selectinload(Linac.department)],
    )
    if downtime is None:
        abort(404)
    return downtime


def _form_of(downtime: Downtime) -> DowntimeForm:
    """The stored downtime as the form shows it, in its department's zone."""
    tz = downtime.linac.department.timezone
    starts, ends = to_local(downtime.starts_at, tz), to_local(downtime.ends_at, tz)
    return DowntimeForm(
        linac_id=str(downtime.linac_id),
        starts_local=f"{starts:%Y-%m-%dT%H:%M}",
        ends_local=f"{ends:%Y-%m-%dT%H:%M}",
        # The occurrence is known, so an ambiguous stored time needs no question.
        starts_fold=str(starts.fold),
        ends_fold=str(ends.fold),
        kind=downtime.kind,
        reason=downtime.reason,
    )


def _outcomes(report: services.DowntimeReport) -> str:
    """How the displaced fractions fared, when any were."""
    if not report.moved and not report.unplaceable:
        return ""
    return (
        f" Own time kept: {report.kept_time}; moved the same day: {report.same_day}; "
        f"moved to another day: {report.other_day}."
    )


def _change_message(report: services.DowntimeReport, notices: int) -> str:
    message = (
        f"Downtime updated: {_plural(len(report.moved), 'fraction', 'fractions')} moved, "
        f"{len(report.unplaceable)} need a human; "
        f"{_plural(notices, 'change notice', 'change notices')} queued."
    ) + _outcomes(report)
    if report.returnable:
        message += (
            f" {_plural(len(report.returnable), 'fraction', 'fractions')} could return to "
            "their own place; nobody was moved back."
        )
    return message


def _change_notices(queued: outbox.QueuedMessages, fraction_ids: list[int]) -> int:
    """How many change notices the action queued for these fractions."""
    moved = set(fraction_ids)
    return sum(1 for r in queued.written if r.kind == Kind.CHANGE and r.fraction_id in moved)


@bp.route("/downtime/<int:downtime_id>/edit", methods=["GET", "POST"])
@role_required(Role.SCHEDULER)
def edit(downtime_id: int):
    session = get_session()
    downtime = _downtime_or_404(session, downtime_id)
    linacs = [downtime.linac]
    if request.method == "GET":
        return _form_page(_form_of(downtime), linacs, editing=downtime)
    form = DowntimeForm.from_request()
    form.linac_id = str(downtime.linac_id)  # a downtime stays on its linac
    if request.form.get("action") == "edit":
        return _form_page(form, linacs, editing=downtime)
    checked, errors, ambiguous = _check(session, form, linacs)
    if checked is None:
        return _form_page(
            form, linacs, errors, ambiguous, 400, "Check the highlighted fields.", editing=downtime
        )
    apply = request.form.get("action") == "apply"
    tz = checked.linac.department.timezone
    linac = checked.linac
    queued = outbox.collect(session)

    def update() -> DowntimeReport:
        report = services.update_downtime(
            session,
            downtime_id,
            starts_at=checked.starts_at,
            ends_at=checked.ends_at,
            kind=form.kind,
            reason=form.reason,
            preview=not apply,
            actor_id=session_user_id(),
        )
        if apply:
            audit.record(
                "update",
                "downtime",
                downtime_id,
                actor_id=session_user_id(),
                linac_id=linac.id,
                moved=len(report.moved),
                unplaceable=len(report.unplaceable),
                returnable=[r.fraction_id for r in report.returnable],
            )
        return report

    try:
        # Applied, the re-plan and its audit entry are one unit of work, run again when
        # PostgreSQL broke a deadlock with a booking made meanwhile.
        report = unit_of_work.run(session, update) if apply else update()
    except NotFound:
        abort(404)
    except ServiceError as exc:
        session.rollback()
        return _form_page(
            form, linacs, status=409 if apply else 400, error=str(exc), editing=downtime
        )
    if not apply:
        rows = _report_rows(session, report, tz)
        audit.record(
            "view",
            "downtime_preview",
            downtime_id,
            actor_id=session_user_id(),
            linac_id=linac.id,
            courses=sorted(
                {r["course_id"] for r in rows["moved"] + rows["unplaceable"] + rows["returnable"]}
            ),
        )
        return render_template(
            "downtime/preview.html",
            title="Preview the changed downtime",
            form=form,
            linac=linac,
            starts=format_local(checked.starts_at, tz),
            ends=format_local(checked.ends_at, tz),
            counts=report,
            action_url=url_for("downtime.edit", downtime_id=downtime_id),
            **rows,
        )
    notices = _change_notices(queued, [m.fraction_id for m in report.moved])
    return done(_change_message(report, notices), "downtime.index")


@bp.route("/downtime/<int:downtime_id>/delete", methods=["GET", "POST"])
@role_required(Role.SCHEDULER)
def delete(downtime_id: int):
    session = get_session()
    downtime = _downtime_or_404(session, downtime_id)
    tz = downtime.linac.department.timezone
    apply = request.method == "POST" and request.form.get("action") == "apply"
    report = services.delete_downtime(
        session, downtime_id, preview=not apply, actor_id=session_user_id()
    )
    if not apply:
        # The preview rolled back: read the downtime again for the page.
        downtime = _downtime_or_404(session, downtime_id)
        rows = _report_rows(session, report, tz)
        audit.record(
            "view",
            "downtime_delete_preview",
            downtime_id,
            actor_id=session_user_id(),
            courses=sorted({r["course_id"] for r in rows["returnable"]}),
        )
        return render_template(
            "downtime/delete.html",
            title="Remove downtime",
            downtime=downtime,
            starts=format_local(downtime.starts_at, tz),
            ends=format_local(downtime.ends_at, tz),
            returnable=rows["returnable"],
        )
    audit.record(
        "delete",
        "downtime",
        downtime_id,
        actor_id=session_user_id(),
        returnable=[r.fraction_id for r in report.returnable],
    )
    count = len(report.returnable)
    return done(
        f"Downtime removed; nobody was moved back. "
        f"{_plural(count, 'fraction', 'fractions')} could return to their own place.",
        "downtime.index",
    )


__all__ = ["bp", "incomplete_courses", "overlapping_downtime"]
