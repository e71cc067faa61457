"""The files of a run: summary.json, courses.csv and weekly.csv, then the report."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

from scheduler.simulation.metrics import Result
from scheduler.simulation.runs import COURSE_COLUMNS as REQUIRED_COURSE_COLUMNS
from scheduler.simulation.runs import (
    COURSES_FILE,
    SUMMARY_FILE,
    UNBOOKED,
    WEEKLY_COLUMNS,
    WEEKLY_FILE,
)

if TYPE_CHECKING:
    from scheduler.simulation.runner import Simulation

# The file format is the reader's (runs.py): the columns every run has, then the ones this
# writer adds about each course.
COURSE_COLUMNS = (*REQUIRED_COURSE_COLUMNS, "arrival_date", "preferred_window", "in_metrics")


def write_files(sim: Simulation, result: Result, out_dir: Path) -> None:
    from scheduler.simulation import report  # the report is drawn once the figures are written

    (out_dir / SUMMARY_FILE).write_text(json.dumps(result.summary, indent=2) + "\n")
    write_courses(result, out_dir / COURSES_FILE)
    write_weeks(result, out_dir / WEEKLY_FILE)
    report.write_report(out_dir)


def write_courses(result: Result, path: Path) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COURSE_COLUMNS)
        for c in result.courses:
            window = (
                f"{c.preferred_window[0]:%H:%M}-{c.preferred_window[1]:%H:%M}"
                if c.preferred_window
                else ""
            )
            common = (c.course_id, c.protocol, c.ready_date.isoformat(), c.priority)
            tail = (c.arrival_date.isoformat(), window, int(c.in_metrics))
            if not c.fractions:
                writer.writerow((*common, "", "", "", "", UNBOOKED, *tail))
            for f in c.fractions:
                writer.writerow(
                    (
                        *common,
                        f.number,
                        f.linac,
                        f.starts_at.isoformat(),
                        f.ends_at.isoformat(),
                        f.status,
                        *tail,
                    )
                )


def write_weeks(result: Result, path: Path) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(WEEKLY_COLUMNS)
        for w in result.weeks:
            writer.writerow(
                (
                    w.week_start.isoformat(),
                    w.linac,
                    int(w.sbrt_capable),
                    w.open_minutes,
                    w.booked_minutes,
                )
            )
