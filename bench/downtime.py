"""Downtime re-plan in the busy year: a two-day outage of TrueBeam 1, re-planned for the whole
department (own times kept first) next to a plain first-come re-plan of the same outage.

For each outage (two consecutive open days, spread over the seeded year) and each repetition,
in alternating order, on the same database state:

- ``add_downtime(preview=True)``: the whole use case as a scheduler's preview runs it (reads,
  re-plan, the moves, events and change notices written, then rolled back);
- the re-plan alone, whole-department and first-come (``replan_displaced`` with
  ``first_come=True``), after the same downtime row is flushed.

The figures: time per call, and the share of displaced fractions that kept their own time
(on the beam-matched partner), next to the share the first-come re-plan keeps and the share
whose own time was free on the partner before anything moved (the most any re-plan can keep).
"""

from __future__ import annotations

import time as clock
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from bench.seed import SeedResult, open_days
from bench.stats import summary_ms
from bootstrap import make_engine, make_session_factory
from scheduler import replan, services
from scheduler.models import ACTIVE_FRACTION_STATUSES, Department, Downtime, Fraction

OUTAGES = 5  # two-day outages spread over the year
REPEATS = 3
NY = ZoneInfo("America/New_York")


@dataclass
class Outage:
    first: date
    second: date
    displaced: int = 0
    free_on_partner: int = 0
    kept_whole: int = 0
    kept_first_come: int = 0
    kept_on_partner_whole: int = 0
    kept_on_partner_first_come: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class DowntimeResult:
    backend: str
    outages: list[Outage]
    use_case: list[float] = field(default_factory=list)  # seconds per add_downtime preview
    whole: list[float] = field(default_factory=list)  # seconds per whole-department re-plan
    first_come: list[float] = field(default_factory=list)  # seconds per first-come re-plan

    def share(self, attr: str) -> float:
        total = sum(o.displaced for o in self.outages)
        return sum(getattr(o, attr) for o in self.outages) / total if total else float("nan")


def _outages(s: SeedResult) -> list[Outage]:
    """Pairs of consecutive open days (Monday-Thursday starts) spread over the year."""
    days = open_days(s.first_day, s.last_day)
    pairs = [(a, b) for a, b in zip(days, days[1:], strict=False) if (b - a).days == 1]
    # Skip the first weeks: courses there started before the seeded year and are incomplete.
    usable = pairs[10:-20]
    step = max(1, len(usable) // OUTAGES)
    return [Outage(a, b) for a, b in usable[::step][:OUTAGES]]


def _window(outage: Outage) -> tuple[datetime, datetime]:
    start = datetime.combine(outage.first, time(0), NY).astimezone(UTC)
    return start, start + timedelta(days=2)


def _now(outage: Outage) -> datetime:
    """The afternoon before: a fault reported the day before, or a planned service."""
    return datetime.combine(outage.first - timedelta(days=1), time(15), NY).astimezone(UTC)


def _displaced(session: Session, linac_id: int, start: datetime, end: datetime) -> list[Fraction]:
    return list(
        session.scalars(
            sa.select(Fraction)
            .where(
                Fraction.linac_id == linac_id,
                Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
                Fraction.starts_at < end,
                Fraction.ends_at > start,
            )
            .order_by(Fraction.starts_at, Fraction.id)
        )
    )


def _free_on(session: Session, linac_id: int, fractions: list[Fraction]) -> int:
    free = 0
    for f in fractions:
        taken = session.scalar(
            sa.select(sa.func.count())
            .select_from(Fraction)
            .where(
                Fraction.linac_id == linac_id,
                Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
                Fraction.starts_at < f.ends_at,
                Fraction.ends_at > f.starts_at,
            )
        )
        free += not taken
    return free


def _replan_once(
    session: Session,
    department_id: int,
    linac_id: int,
    partner_id: int,
    outage: Outage,
    *,
    first_come: bool,
) -> tuple[float, int, int]:
    """Time of one re-plan alone, how many displaced fractions kept their own time, and how
    many of those on the partner."""
    start, end = _window(outage)
    department = session.get(Department, department_id, options=[selectinload(Department.linacs)])
    assert department is not None
    session.add(
        Downtime(linac_id=linac_id, starts_at=start, ends_at=end, kind="planned", reason="bench")
    )
    session.flush()
    displaced = _displaced(session, linac_id, start, end)
    began = clock.perf_counter()
    plan = replan.replan_displaced(
        session, department, linac_id, displaced, now=_now(outage), first_come=first_come
    )
    took = clock.perf_counter() - began
    on_partner = sum(
        m.target.start == m.fraction.starts_at and m.target.linac_id == partner_id
        for m in plan.moves
    )
    session.rollback()
    return took, plan.counts[replan.Outcome.KEPT_TIME], on_partner


def run(url: str, s: SeedResult, backend: str) -> DowntimeResult:
    engine = make_engine(url)
    factory = make_session_factory(engine)
    linac_id, partner_id = s.linac_ids[0], s.linac_ids[1]  # TrueBeam 1 and 2
    result = DowntimeResult(backend, _outages(s))
    try:
        with factory() as session:
            for outage in result.outages:
                start, end = _window(outage)
                displaced = _displaced(session, linac_id, start, end)
                outage.displaced = len(displaced)
                outage.free_on_partner = _free_on(session, partner_id, displaced)
                session.rollback()
            # Warm-up: statement caches, holiday tables, imports.
            _replan_once(
                session, s.department_id, linac_id, partner_id, result.outages[0], first_come=True
            )
            for repeat in range(REPEATS):
                for outage in result.outages:
                    order = (False, True) if repeat % 2 == 0 else (True, False)
                    for first_come in order:
                        took, kept, on_partner = _replan_once(
                            session,
                            s.department_id,
                            linac_id,
                            partner_id,
                            outage,
                            first_come=first_come,
                        )
                        if first_come:
                            result.first_come.append(took)
                            outage.kept_first_come = kept
                            outage.kept_on_partner_first_come = on_partner
                        else:
                            result.whole.append(took)
                            outage.kept_whole = kept
                            outage.kept_on_partner_whole = on_partner
                    start, end = _window(outage)
                    began = clock.perf_counter()
                    report = services.add_downtime(
                        session,
                        linac_id,
                        starts_at=start,
                        ends_at=end,
                        kind="planned",
                        reason="bench",
                        preview=True,
                        now=_now(outage),
                    )
                    result.use_case.append(clock.perf_counter() - began)
                    outage.counts = {
                        "kept_time": report.kept_time,
                        "same_day": report.same_day,
                        "other_day": report.other_day,
                        "needs_human": report.needs_human,
                    }
    finally:
        engine.dispose()
    return result


def report(results: list[DowntimeResult], command: str, machine: dict[str, str], when: str) -> str:
    out = [
        "## Downtime re-plan",
        "",
        f"Downtime benchmark measured {when} with `{command}`. Machine: "
        + "; ".join(f"{k} {v}" for k, v in machine.items())
        + ".",
        "",
        f"The busy-year seed of the scheduling part (85% of SBRT opening hours booked). "
        f"{OUTAGES} two-day outages of TrueBeam 1 (beam-matched with TrueBeam 2), spread over "
        f"the year, each re-planned {REPEATS} times per strategy, interleaved, after a "
        "warm-up; `now` is 15:00 local the day before. Whole-department: own times kept on the "
        "partner for every course first, then the rest where they disturb least "
        "(scheduler/replan.py). Baseline: the plain first-come re-plan (course by course, "
        "each fraction at its own time on the partner if free, else the first free time after "
        "it), same database state, same run. Use case: `add_downtime(preview=True)`, i.e. the "
        "whole-department re-plan plus writing the moves, events and change notices, rolled "
        "back.",
        "",
        "| backend | what | n | p50 ms | p95 ms |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        for name, values in (
            ("add_downtime preview (whole use case)", r.use_case),
            ("re-plan alone: whole department", r.whole),
            ("re-plan alone: first-come (baseline)", r.first_come),
        ):
            d = summary_ms(values)
            out.append(f"| {r.backend} | {name} | {d['n']} | {d['p50']:.0f} | {d['p95']:.0f} |")
    out += [
        "",
        "Kept = same start time (on the partner, or on another capable linac when the group "
        "had no room); in brackets, how many of those on the partner. Free on the partner = "
        "the own time was free on TrueBeam 2 before anything moved: the most a re-plan can "
        "keep there.",
        "",
        "| backend | outage | displaced | free on the partner | kept: whole department | "
        "kept: first-come | whole department: same day / other day / needs a human |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for o in r.outages:
            c = o.counts
            out.append(
                f"| {r.backend} | {o.first} .. {o.second} | {o.displaced} | {o.free_on_partner} "
                f"| {o.kept_whole} ({o.kept_on_partner_whole}) | {o.kept_first_come} "
                f"({o.kept_on_partner_first_come}) | {c.get('same_day')} / "
                f"{c.get('other_day')} / {c.get('needs_human')} |"
            )
    out += ["", "| backend | figure | value |", "|---|---|---|"]
    for r in results:
        whole, first = r.share("kept_whole"), r.share("kept_first_come")
        ratio = summary_ms(r.whole)["p50"] / summary_ms(r.first_come)["p50"]
        out += [
            f"| {r.backend} | share of displaced fractions that kept their own time, whole "
            f"department | {whole:.1%} |",
            f"| {r.backend} | same share, first-come baseline | {first:.1%} |",
            f"| {r.backend} | share kept on the partner, whole department / first-come | "
            f"{r.share('kept_on_partner_whole'):.1%} / "
            f"{r.share('kept_on_partner_first_come'):.1%} |",
            f"| {r.backend} | share whose own time was free on the partner (the most the "
            f"partner can keep) | {r.share('free_on_partner'):.1%} |",
            f"| {r.backend} | ratio of re-plan time p50, whole department / first-come | "
            f"{ratio:.2f} |",
        ]
    return "\n".join(out)


def console_table(results: list[DowntimeResult]) -> str:
    lines = [f"{'figure':<64} {'value':>14}", "-" * 80]
    for r in results:
        use = summary_ms(r.use_case)
        whole, first = summary_ms(r.whole), summary_ms(r.first_come)
        lines += [
            f"{r.backend + ': add_downtime preview p50 / p95 ms':<64} "
            f"{use['p50']:>6.0f} / {use['p95']:.0f}",
            f"{r.backend + ': re-plan whole dept / first-come p50 ms':<64} "
            f"{whole['p50']:>6.0f} / {first['p50']:.0f}",
            f"{r.backend + ': displaced fractions (all outages)':<64} "
            f"{sum(o.displaced for o in r.outages):>14}",
            f"{r.backend + ': kept own time, whole dept / first-come':<64} "
            f"{r.share('kept_whole'):>6.1%} / {r.share('kept_first_come'):.1%}",
            f"{r.backend + ': kept on the partner, whole dept / first-come':<64} "
            f"{r.share('kept_on_partner_whole'):>6.1%} / "
            f"{r.share('kept_on_partner_first_come'):.1%}",
            f"{r.backend + ': own time free on the partner before':<64} "
            f"{r.share('free_on_partner'):>14.1%}",
        ]
    return "\n".join(lines)
