"""Errors the use cases raise; the web layer maps each to an RFC 9457 problem response."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ServiceError(Exception):
    """Base class: ``status`` is the HTTP status the API answers with."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(ServiceError):
    status = 404
    title = "Not found"


class Forbidden(ServiceError):
    status = 403
    title = "Forbidden"


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class InvalidInput(ServiceError):
    """Input that fails validation; ``errors`` name each field."""

    status = 422
    title = "Validation failed"

    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or []


@dataclass(frozen=True)
class ConflictingBooking:
    """What a requested time collides with (no patient details: this may reach any staff)."""

    kind: str  # "linac" | "patient" | "downtime"
    linac_id: int | None
    starts_at: str  # ISO 8601 UTC
    ends_at: str


class Conflict(ServiceError):
    """The slot is taken (possibly by a concurrent booking that won the race)."""

    status = 409
    title = "Conflict"

    def __init__(self, detail: str, conflicts: list[ConflictingBooking] | None = None) -> None:
        super().__init__(detail)
        self.conflicts = conflicts or []


class StateConflict(ServiceError):
    """The record is not in a state that allows this action (e.g. cancelling twice)."""

    status = 409
    title = "Conflict"


@dataclass
class RuleBreak:
    code: str
    message: str
    fraction: int | None = None
    overridable: bool = False


class RulesBroken(ServiceError):
    """The schedule breaks protocol rules; overridable ones may be booked with a reason."""

    status = 422
    title = "Schedule breaks protocol rules"

    def __init__(self, detail: str, violations: list[RuleBreak] | None = None) -> None:
        super().__init__(detail)
        self.violations = list(violations or [])


@dataclass(frozen=True)
class NearbyCourse:
    """Another active course of the same patient close to a schedule being booked."""

    course_id: int
    protocol_code: str
    status: str
    first_start: str  # ISO 8601 UTC
    last_end: str
    days_apart: int  # local calendar days between the two courses; 0 when they overlap


class NearbyCourseWarning(ServiceError):
    """The patient has another active course overlapping or within days of this schedule:
    booking needs that course acknowledged (a second course is rare, often a duplicate)."""

    status = 409
    title = "The patient has another course close to this schedule"

    def __init__(self, detail: str, nearby_courses: list[NearbyCourse]) -> None:
        super().__init__(detail, nearby_courses=list(nearby_courses))
        self.nearby_courses = list(nearby_courses)


class NoScheduleAvailable(ServiceError):
    """Nothing can be booked for the course: ``explanation`` names the cause (a code of
    ``scheduler.search.EXPLANATION_CODES``) and the earliest start that would fit."""

    status = 409
    title = "No schedule can be booked"

    def __init__(self, detail: str, explanation: dict[str, Any]) -> None:
        super().__init__(detail, explanation=explanation)
        self.explanation = explanation


class OptionsTaken(ServiceError):
    """Every option found for the course was booked by concurrent requests before this one
    could take it, however many times it looked again."""

    status = 409
    title = "Every option was taken by other bookings"
