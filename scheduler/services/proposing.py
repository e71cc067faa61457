"""Proposing schedules for a course, with an explanation when they start late or not at all."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time

import sqlalchemy as sa
from sqlalchemy.orm import Session

from scheduler import search
from scheduler.context import local_day_bounds, rules_from_protocol, search_context
from scheduler.models import (
    Department,
    Downtime,
    Linac,
)
from scheduler.services.common import (
    FIRST_LOOK_DAYS,
    ProposalResult,
    _department_of,
    _get_course,
    _now,
)
from scheduler.timeutil import local_date
from scheduler.types import (
    DowntimeSpan,
    ScheduleRequest,
    SearchContext,
)


def propose_schedules(
    session: Session,
    course_id: int,
    *,
    earliest: date | None = None,
    count: int = 3,
    preferred_window: tuple[time, time] | None = None,
    horizon_days: int = 56,
    now: datetime | None = None,
) -> ProposalResult:
    """Complete valid schedules for a course, best first; and why there are none, or why
    they start later than the requested date (the explanation names the cause)."""
    now = _now(now)
    course = _get_course(session, course_id, fractions=False)
    department = _department_of(session, course)
    rules = rules_from_protocol(course.protocol)
    timezone = department.timezone
    today = local_date(now, timezone)
    first = max(d for d in (earliest, today, course.ready_to_treat_on) if d is not None)

    def context_for(request: ScheduleRequest) -> SearchContext:
        lo, hi = search.search_dates(request)
        return search_context(
            session, department, lo, hi, patient_id=course.patient_id, exclude_course_id=course.id
        )

    request = ScheduleRequest(
        rules=rules,
        earliest=first,
        not_before=now,
        count=count,
        horizon_days=min(FIRST_LOOK_DAYS, horizon_days),
        preferred_window=preferred_window,
    )
    # A first day's wait bounds the score of every course starting then, so once the first
    # days hold enough proposals that no later start could outrank (the search says the
    # ranking is settled), they are exactly the ones the whole horizon would give; reading a
    # few weeks of bookings instead of months is what keeps a proposal fast in a busy
    # department.
    ctx = context_for(request)
    found = search.propose_ranked(request, ctx)
    schedules = found.schedules
    if not found.settled and request.horizon_days < horizon_days:
        request = replace(request, horizon_days=horizon_days)
        ctx = context_for(request)
        schedules = search.propose(request, ctx)
    explanation = None
    if not schedules:
        # The explanation looks for the earliest feasible start beyond the horizon too.
        wide = replace(request, horizon_days=horizon_days + search.EXPLAIN_HORIZON_DAYS)
        explanation = search.explain(
            request,
            context_for(wide),
            horizon_days=wide.horizon_days,
            downtimes=_downtime_spans(session, department, *search.search_dates(wide)),
        )
    else:
        start = min(local_date(s.first_start, timezone) for s in schedules)
        if start > first:
            # A late start is explained by its cause (downtime, closures, bookings).
            explanation = search.explain_late_start(
                request,
                ctx,
                start,
                downtimes=_downtime_spans(session, department, *search.search_dates(request)),
            )
    return ProposalResult(schedules, explanation, timezone)


def _downtime_spans(
    session: Session, department: Department, first: date, last: date
) -> list[DowntimeSpan]:
    """The department's linac downtime touching local days first..last, with reasons."""
    start, end = local_day_bounds(department.timezone, first, last)
    rows = session.execute(
        sa.select(Downtime.linac_id, Downtime.starts_at, Downtime.ends_at, Downtime.reason)
        .join(Linac, Linac.id == Downtime.linac_id)
        .where(
            Linac.department_id == department.id,
            Downtime.starts_at < end,
            Downtime.ends_at > start,
        )
        .order_by(Downtime.starts_at, Downtime.linac_id)
    ).all()
    return [DowntimeSpan(r.linac_id, r.starts_at, r.ends_at, r.reason or "") for r in rows]
