"""The year simulation: replay patient arrivals through the real booking services and measure
what patients and the department experience.

``run_simulation`` builds the scenario's department in a throwaway database, walks a simulated
clock day by day (see :mod:`scheduler.simulation.runner`) and writes summary.json, courses.csv,
weekly.csv and report.html into the output directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from scheduler.simulation.scenario import ScenarioError, load_scenario

POLICIES = ("online", "batch-daily", "hindsight")


def run_simulation(
    scenario: dict[str, Any] | Path | str,
    out_dir: Path,
    *,
    seed: int = 0,
    policy: str = "online",
    database_url: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    solver_seconds: float | None = None,
) -> dict[str, Any]:
    """Simulate the scenario under ``policy`` and write its files into ``out_dir``; returns
    the summary (what summary.json holds). Raises ScenarioError before anything is written
    when the scenario is invalid."""
    from scheduler.simulation.runner import simulate  # the services load only for a run

    return simulate(
        load_scenario(scenario),
        Path(out_dir),
        seed=seed,
        policy=policy,
        database_url=database_url,
        progress=progress,
        solver_seconds=solver_seconds,
    )


__all__ = ["POLICIES", "ScenarioError", "load_scenario", "run_simulation"]
