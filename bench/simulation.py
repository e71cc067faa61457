"""The year simulation measured: scenarios/year.json under each policy, its runtime and the
quality table of the three policies on the same arrivals (the same seed).

`online` runs on SQLite and on PostgreSQL (both must finish within ONLINE_TARGET_SECONDS);
`batch-daily` and `hindsight` run on SQLite with the optimiser's time limit stated. Each run
writes its files under bench/out/simulation/<policy>-<backend>/.
"""

from __future__ import annotations

import time as clock
from dataclasses import dataclass
from typing import Any

from bench import db
from scheduler.simulation import run_simulation

SCENARIO = db.REPO_ROOT / "scenarios" / "year.json"
OUT = db.OUT_DIR / "simulation"
SEED = 0
ONLINE_TARGET_SECONDS = 120.0
BATCH_TARGET_SECONDS = 300.0
# The optimiser's time limit per solve: one solve per day (batch-daily) or per fortnight of
# ready dates (hindsight).
BATCH_SOLVER_SECONDS = 5.0
HINDSIGHT_SOLVER_SECONDS = 20.0


@dataclass(frozen=True)
class Run:
    policy: str
    backend: str
    seconds: float
    summary: dict[str, Any] | None
    error: str | None = None
    solver_seconds: float | None = None


def run_one(policy: str, backend: str, solver_seconds: float | None = None) -> Run:
    out = OUT / f"{policy}-{backend}"
    url = db.create_postgres_database() if backend == "postgresql" else None
    started = clock.perf_counter()
    try:
        print(f"simulation: {policy} on {backend} ...", flush=True)
        summary = run_simulation(
            SCENARIO,
            out,
            seed=SEED,
            policy=policy,
            database_url=url,
            solver_seconds=solver_seconds,
        )
        return Run(policy, backend, clock.perf_counter() - started, summary, None, solver_seconds)
    except Exception as exc:  # report what failed instead of losing the other runs
        return Run(
            policy,
            backend,
            clock.perf_counter() - started,
            None,
            f"{type(exc).__name__}: {exc}",
            solver_seconds,
        )
    finally:
        if url is not None:
            db.drop_postgres_database(url)


def run_all(policies: tuple[str, ...] = ("online", "batch-daily", "hindsight")) -> list[Run]:
    runs = []
    if "online" in policies:
        runs += [run_one("online", "sqlite"), run_one("online", "postgresql")]
    if "batch-daily" in policies:
        runs.append(run_one("batch-daily", "sqlite", BATCH_SOLVER_SECONDS))
    if "hindsight" in policies:
        runs.append(run_one("hindsight", "sqlite", HINDSIGHT_SOLVER_SECONDS))
    return runs


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _target(run: Run) -> str:
    if run.policy == "online":
        return f"<= {ONLINE_TARGET_SECONDS:.0f} s: " + (
            "met" if run.seconds <= ONLINE_TARGET_SECONDS else "NOT met"
        )
    if run.policy == "batch-daily":
        return f"<= {BATCH_TARGET_SECONDS:.0f} s: " + (
            "met" if run.seconds <= BATCH_TARGET_SECONDS else "NOT met"
        )
    return "the bound (no target)"


def report(runs: list[Run], command: str, machine: dict[str, str], when: str) -> str:
    out = [
        "## Year simulation",
        "",
        f"Measured {when} with `{command}`. Machine: "
        + "; ".join(f"{k} {v}" for k, v in machine.items())
        + ".",
        "",
        f"`{SCENARIO.relative_to(db.REPO_ROOT)}`, seed {SEED}: 52 weeks after a 4-week warm-up, "
        "6 linacs (4 SBRT-capable, TrueBeam 1 and 2 beam-matched), about 25 SBRT courses a "
        "week across the default protocols, 2% of sessions missed, 1% of linac-days with an "
        "unplanned fault. Every run goes through the booking services in a new database.",
        "",
        "| policy | database | solver limit per solve | runtime | target |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        limit = "-" if r.solver_seconds is None else f"{r.solver_seconds:.0f} s"
        shown = f"{r.seconds:.0f} s" if r.error is None else f"failed: {r.error}"
        out.append(f"| {r.policy} | {r.backend} | {limit} | {shown} | {_target(r)} |")
    bound = next((r.summary for r in runs if r.policy == "hindsight" and r.summary), None)
    out += [
        "",
        "Quality on the same arrivals (measured courses, after the warm-up); the gap is the "
        "median wait less hindsight's:",
        "",
        "| policy | courses | median wait d | p90 wait d | within 14 d | SBRT utilisation | "
        "preferred window | reschedules / course | first pass | gap to hindsight d |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    seen = set()
    for r in runs:
        if r.summary is None or r.policy in seen:
            continue
        seen.add(r.policy)
        s = r.summary
        gap = None
        if bound is not None and s["wait_days"]["median"] is not None:
            gap = s["wait_days"]["median"] - bound["wait_days"]["median"]
        out.append(
            f"| {r.policy} | {s['courses']} | {_num(s['wait_days']['median'], '.1f')} | "
            f"{_num(s['wait_days']['p90'], '.1f')} | {_num(s['within_14_days_share'], '.1%')} | "
            f"{_num(s['sbrt_utilisation'], '.1%')} | {_num(s['preferred_window_share'], '.1%')} | "
            f"{_num(s['reschedules_per_course'], '.3f')} | "
            f"{_num(s['booked_first_pass_share'], '.1%')} | {_num(gap, '+.1f')} |"
        )
    missing = {"batch-daily", "hindsight"} - seen
    if missing:
        out += ["", "Not measured in this run: " + ", ".join(sorted(missing)) + "."]
    return "\n".join(out)


def console_table(runs: list[Run]) -> str:
    lines = [f"{'simulation run':<40} {'runtime':>10}  target", "-" * 80]
    for r in runs:
        shown = f"{r.seconds:.0f} s" if r.error is None else "failed"
        lines.append(f"{r.policy + ' on ' + r.backend:<40} {shown:>10}  {_target(r)}")
    return "\n".join(lines)
