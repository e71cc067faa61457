"""`make load` in small: ten simulated schedulers for a minute, through the same script.

Proves the harness works end to end (stack up, Locust runs the whole mix, the checks run); the
latency targets are measured by the full run (bench/RESULTS.md), not asserted here, since
speed on a shared machine is a benchmark's business. What must hold at any speed is asserted:
no failed request, no overlap, every due reminder sent exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_ADMIN_URL, REPO_ROOT, port_open, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]
MIX = {
    "GET /calendar/week",
    "POST /patients",
    "GET /courses/[id]",
    "POST /api/v1/courses/[id]/proposals",
    "POST /api/v1/courses/[id]/booking",
    "GET /api/v1/fractions/[id]/alternatives",
    "POST /api/v1/fractions/[id]/move",
}


def test_a_short_load_run_exercises_the_whole_mix_and_its_checks(tmp_path: Path):
    if not port_open(POSTGRES_ADMIN_URL, 5432):
        unavailable("PostgreSQL is not reachable")
    out = tmp_path / "load"
    run = subprocess.run(
        [
            sys.executable, "-m", "bench.load", "--users", "10", "--minutes", "1",
            "--booked", "20", "--drafts", "60", "--out", str(out),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "BENCH_POSTGRES_URL": POSTGRES_ADMIN_URL,
             # A busier schedule than the full run's, so one minute reaches every task.
             "LOAD_THINK_MIN": "0.5", "LOAD_THINK_MAX": "1.5"},
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert run.returncode in (0, 1), run.stderr[-3000:]
    outcome = json.loads((out / "outcome.json").read_text())
    print(run.stdout)
    seen = {e["name"]: e for e in outcome["endpoints"]}
    assert set(seen) >= MIX, f"tasks never run: {MIX - set(seen)}"
    assert all(seen[name]["requests"] > 0 for name in MIX)
    assert sum(e["failures"] for e in outcome["endpoints"]) == 0, run.stdout
    assert outcome["overlaps"] == {"linac_id": 0, "patient_id": 0}
    assert outcome["reminder_problems"] == [], run.stdout
    assert outcome["reminders_due"] > 0 and outcome["sms_sent"] > 0 and outcome["emails_sent"] > 0
    # Only latency may have missed its target in so short and so busy a run.
    assert all("p95" in problem for problem in outcome["missed"]), outcome["missed"]
    assert "| GET /calendar/week |" in run.stdout
