"""Translating between API values and use-case values: request times in, ORM rows out."""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler.errors import FieldError, InvalidInput
from scheduler.models import Course, Downtime, Fraction
from scheduler.services import MissedResult
from scheduler.timeutil import AmbiguousLocalTime, NonexistentLocalTime, localize, to_local
from scheduler.types import PlannedFraction, Schedule
from web.api import schemas


def instant(value: datetime, tz: str, *, field: str, fold: int | None = None) -> datetime:
    """The UTC instant a request time denotes; a naive one is local time in ``tz``."""
    if value.tzinfo is not None:
        return value.astimezone(UTC)
    try:
        return localize(value, tz, fold=fold)
    except NonexistentLocalTime as exc:
        raise InvalidInput(str(exc), [FieldError(field, str(exc))]) from exc
    except AmbiguousLocalTime as exc:
        message = f"{exc}; send fold 0 (first) or 1 (second), or a time with an offset"
        raise InvalidInput(str(exc), [FieldError(field, message)]) from exc


def planned_out(planned: PlannedFraction, tz: str) -> schemas.PlannedFractionOut:
    return schemas.PlannedFractionOut(
        number=planned.number,
        linac_id=planned.linac_id,
        starts_at=planned.start,
        ends_at=planned.end,
        local_start=to_local(planned.start, tz),
        local_end=to_local(planned.end, tz),
    )


def schedule_out(schedule: Schedule, tz: str) -> schemas.ScheduleOut:
    """A proposed schedule with its score; proposals always carry one."""
    score = schedule.score
    assert score is not None
    return schemas.ScheduleOut(
        first_start=schedule.first_start,
        overall_days=score.overall_days,
        gap_days=list(score.gap_days),
        score=schemas.ScoreOut(
            total=score.total,
            parts=[schemas.ScorePartOut.model_validate(part) for part in score.parts],
        ),
        fractions=[planned_out(p, tz) for p in schedule.fractions],
    )


def fraction_out(fraction: Fraction, tz: str | None = None) -> schemas.FractionOut:
    course = fraction.course
    tz = tz or course.patient.department.timezone
    return schemas.FractionOut(
        id=fraction.id,
        course_id=fraction.course_id,
        patient_id=fraction.patient_id,
        number=fraction.number,
        linac_id=fraction.linac_id,
        status=fraction.status,
        starts_at=fraction.starts_at,
        ends_at=fraction.ends_at,
        local_start=to_local(fraction.starts_at, tz),
        local_end=to_local(fraction.ends_at, tz),
        timezone=tz,
        version=fraction.version,
        override_reason=fraction.override_reason,
        status_reason=fraction.status_reason,
        missed_reason=fraction.missed_reason,
        awaiting_readiness=fraction.number == 1
        and fraction.is_active
        and not course.ready_to_treat,
    )


def fractions_out(fractions: list[Fraction]) -> list[schemas.FractionOut]:
    zones: dict[int, str] = {}  # per course: listings span many courses of few departments
    out = []
    for fraction in fractions:
        if fraction.course_id not in zones:
            zones[fraction.course_id] = fraction.course.patient.department.timezone
        out.append(fraction_out(fraction, zones[fraction.course_id]))
    return out


def course_out(course: Course) -> schemas.CourseOut:
    tz = course.patient.department.timezone
    return schemas.CourseOut(
        id=course.id,
        patient_id=course.patient_id,
        protocol_id=course.protocol_id,
        status=course.status,
        priority=course.priority,
        ready_to_treat_on=course.ready_to_treat_on,
        notes=course.notes,
        readiness=schemas.ReadinessOut(
            ct_simulation=course.ct_simulation_at,
            plan_approved=course.plan_approved_at,
            physics_qa=course.physics_qa_at,
            consent=course.consent_at,
            fiducials_placed=course.fiducials_placed_at,
        ),
        ready_to_treat=course.ready_to_treat,
        review_reason=course.review_reason,
        prescribed_fractions=course.fraction_count,
        prescription_reason=course.prescription_reason,
        incomplete=course.incomplete,
        missing_fractions=course.missing_numbers,
        timezone=tz,
        fractions=[fraction_out(f, tz) for f in course.fractions],
        created_at=course.created_at,
        updated_at=course.updated_at,
    )


def missed_out(result: MissedResult) -> schemas.MissedOut:
    return schemas.MissedOut(
        missed=fraction_out(result.missed),
        rebooked=None if result.rebooked is None else fraction_out(result.rebooked),
        needs_review=result.needs_review,
    )


def downtime_out(downtime: Downtime, tz: str) -> schemas.DowntimeOut:
    return schemas.DowntimeOut(
        id=downtime.id,
        linac_id=downtime.linac_id,
        starts_at=downtime.starts_at,
        ends_at=downtime.ends_at,
        local_start=to_local(downtime.starts_at, tz),
        local_end=to_local(downtime.ends_at, tz),
        kind=downtime.kind,
        reason=downtime.reason,
        created_at=downtime.created_at,
        version=downtime.version,
    )
