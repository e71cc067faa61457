"""Booking use cases: propose, book, move, cancel, record missed/completed, repair, downtime.

Each function is one step of its caller's unit of work (:mod:`scheduler.unit_of_work`): it
reads what it needs, checks the rules with the pure engine, writes the change together with
its BookingEvent row and flushes; the caller commits. Callers run the booking and moving
use cases through ``unit_of_work.run`` so that a transaction PostgreSQL aborted to break a
deadlock is run again from the start. A lost race surfaces as :class:`Conflict` (HTTP
409) naming the taken time, never as an overlap: PostgreSQL's exclusion constraints reject
it, and on SQLite the write lock taken at BEGIN makes the overlap check and the insert one
step.

One module per job (proposing, booking, booking the best option, moving, outcomes, repair,
downtime, pathway) over the shared loaders, events and guards in ``common``; callers use this
package's names.
"""

from scheduler.services.best_option import BEST_OPTION_ATTEMPTS, BestBooking, book_best_option
from scheduler.services.booking import NEARBY_COURSE_DAYS, book_course, nearby_courses
from scheduler.services.common import (
    CONFLICT_RULES,
    DOWNTIME_KINDS,
    FIRST_LOOK_DAYS,
    MAX_REASON_TEXT,
    OVERRIDABLE_RULES,
    READINESS_STEPS,
    REBOOK_LEAD_TIME,
    SCHEDULED_STATUSES,
    DowntimeReport,
    MissedResult,
    MovedFraction,
    Placement,
    ProposalResult,
    ReturnableFraction,
    UnplaceableFraction,
)
from scheduler.services.downtime import (
    add_downtime,
    delete_downtime,
    returnable_fractions,
    update_downtime,
)
from scheduler.services.moving import fraction_alternatives, move_fraction
from scheduler.services.outcomes import (
    cancel_course,
    cancel_fraction,
    confirm_next_fraction,
    list_fractions,
    record_completed,
    record_missed,
    record_readiness,
)
from scheduler.services.pathway import (
    CoursePathway,
    PathwayOptions,
    PathwayProposal,
    ProposedStep,
    StepChoice,
    book_pathway,
    cancel_pathway,
    get_pathway,
    planning_ready_on,
    propose_pathway,
)
from scheduler.services.proposing import propose_schedules
from scheduler.services.repair import (
    RebookingProposal,
    change_prescription,
    mark_reviewed,
    propose_rebooking,
    rebook_fractions,
    undo_missed,
)
from scheduler.unit_of_work import RACE_RETRIES, RETRYABLE_SQLSTATES

__all__ = [
    "BEST_OPTION_ATTEMPTS",
    "BestBooking",
    "book_best_option",
    "CONFLICT_RULES",
    "CoursePathway",
    "PathwayOptions",
    "PathwayProposal",
    "ProposedStep",
    "StepChoice",
    "book_pathway",
    "cancel_pathway",
    "get_pathway",
    "planning_ready_on",
    "propose_pathway",
    "DOWNTIME_KINDS",
    "DowntimeReport",
    "FIRST_LOOK_DAYS",
    "MAX_REASON_TEXT",
    "MissedResult",
    "MovedFraction",
    "NEARBY_COURSE_DAYS",
    "OVERRIDABLE_RULES",
    "Placement",
    "ProposalResult",
    "RACE_RETRIES",
    "READINESS_STEPS",
    "REBOOK_LEAD_TIME",
    "RETRYABLE_SQLSTATES",
    "RebookingProposal",
    "ReturnableFraction",
    "SCHEDULED_STATUSES",
    "UnplaceableFraction",
    "add_downtime",
    "book_course",
    "cancel_course",
    "cancel_fraction",
    "change_prescription",
    "confirm_next_fraction",
    "delete_downtime",
    "fraction_alternatives",
    "list_fractions",
    "mark_reviewed",
    "move_fraction",
    "nearby_courses",
    "propose_rebooking",
    "propose_schedules",
    "rebook_fractions",
    "record_completed",
    "record_missed",
    "record_readiness",
    "returnable_fractions",
    "undo_missed",
    "update_downtime",
]
