"""Reading a finished run back from its files, and the figures derived from them."""

from __future__ import annotations

import json
from datetime import UTC, date, time
from pathlib import Path

import numpy
import pytest

from scheduler.simulation.runs import (
    RunFilesError,
    course_waits,
    load_run,
    percentile,
    wait_quantiles,
    weekly_arrivals,
    weekly_sbrt_capacity,
    weekly_utilisation,
)
from tests.simulation.run_files import LINAC_1, LINAC_2, SYDNEY, RunFiles, example_summary

WEEK_1, WEEK_2 = date(2027, 1, 4), date(2027, 1, 11)


def test_load_run_parses_every_file(tmp_path: Path) -> None:
    run = load_run(RunFiles().write(tmp_path))

    assert run.summary["seed"] == 7
    assert run.timezone == SYDNEY
    assert len(run.fractions) == 11 and len(run.weekly) == 4
    first = run.fractions[1]
    assert (first.course_id, first.fraction_number, first.linac) == ("C1", 1, LINAC_1)
    assert first.starts_at is not None and first.starts_at.utcoffset() is not None
    assert first.starts_at.astimezone(SYDNEY).date() == date(2027, 1, 8)
    assert first.minutes == 45
    assert run.fractions[0].in_metrics is False
    unbooked = next(row for row in run.fractions if row.status == "unbooked")
    assert (unbooked.starts_at, unbooked.linac, unbooked.fraction_number) == (None, None, None)
    windowed = next(row for row in run.fractions if row.course_id == "C5")
    assert windowed.preferred_window == (time(8), time(12))
    assert run.weekly[0].sbrt_capable is True and run.weekly[0].open_minutes == 3000
    assert run.warmup_end == date(2027, 1, 6)


def test_waits_count_to_the_local_date_of_the_first_fraction(tmp_path: Path) -> None:
    run = load_run(RunFiles().write(tmp_path))

    waits = {wait.course_id: wait.days for wait in course_waits(run)}

    # C1's first fraction is 08:30 on 8 January in Sydney, still 7 January in UTC.
    # C2's missed first fraction counts; C3's cancelled booking does not; C4 was never booked;
    # C0 is in the warm-up.
    assert waits == {"C1": 2, "C2": 1, "C3": 4, "C5": 2}
    everything = {wait.course_id for wait in course_waits(run, measured_only=False)}
    assert everything == {"C0", "C1", "C2", "C3", "C5"}


def test_without_a_department_time_zone_dates_are_utc(tmp_path: Path) -> None:
    summary = example_summary()
    del summary["department_timezone"]
    run = load_run(RunFiles(summary=summary).write(tmp_path))

    assert run.timezone is UTC
    assert {wait.course_id: wait.days for wait in course_waits(run)}["C1"] == 1


@pytest.mark.parametrize("days", [[2, 1, 4, 2], [5], [0, 30, 7, 7, 9, 12, 1], list(range(41))])
def test_wait_quantiles_interpolate_like_numpy(days: list[int]) -> None:
    quantiles = wait_quantiles(days)

    assert quantiles["median"] == pytest.approx(numpy.median(days))
    assert quantiles["p90"] == pytest.approx(numpy.percentile(days, 90))
    assert quantiles["max"] == max(days)


def test_no_waits_have_no_quantiles() -> None:
    assert wait_quantiles([]) == {"median": None, "p90": None, "max": None}
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_weekly_arrivals_count_courses_and_their_minutes_by_ready_week(tmp_path: Path) -> None:
    run = load_run(RunFiles().write(tmp_path))

    arrivals = {week.week_start: week for week in weekly_arrivals(run)}

    # Week 1: C0 (60), C1 (45 + 30 + 30), C2 (60 completed + 30; the missed 60 is not held).
    # Week 2: C3 (60; the cancelled 60 is not held), C4 (unbooked), C5 (45).
    assert arrivals[WEEK_1].courses == 3 and arrivals[WEEK_1].demand_minutes == 255
    assert arrivals[WEEK_2].courses == 3 and arrivals[WEEK_2].demand_minutes == 105


def test_sbrt_capacity_and_utilisation_leave_other_linacs_out(tmp_path: Path) -> None:
    files = RunFiles()
    files.weekly = [[*row[:2], 0 if row[1] == LINAC_2 else 1, *row[3:]] for row in files.weekly]
    run = load_run(files.write(tmp_path))

    capacity = {week.week_start: week for week in weekly_sbrt_capacity(run)}
    assert (capacity[WEEK_1].open_minutes, capacity[WEEK_1].booked_minutes) == (3000, 135)
    assert (capacity[WEEK_2].open_minutes, capacity[WEEK_2].booked_minutes) == (2400, 60)
    assert weekly_utilisation(run) == {LINAC_1: [(WEEK_1, 135 / 3000), (WEEK_2, 60 / 2400)]}


def test_a_closed_week_has_no_utilisation(tmp_path: Path) -> None:
    files = RunFiles()
    files.weekly[2] = [WEEK_2.isoformat(), LINAC_1, 1, 0, 0]
    run = load_run(files.write(tmp_path))

    assert weekly_utilisation(run)[LINAC_1] == [(WEEK_1, 135 / 3000), (WEEK_2, None)]


@pytest.mark.parametrize("missing", ["summary.json", "courses.csv", "weekly.csv"])
def test_a_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    out_dir = RunFiles().write(tmp_path)
    (out_dir / missing).unlink()

    with pytest.raises(RunFilesError, match=f"{missing} is missing from the run directory"):
        load_run(out_dir)


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(RunFilesError, match="does not exist"):
        load_run(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", r"summary.json .* is not valid JSON \(line 1"), ("[1, 2]", "JSON object")],
)
def test_a_corrupt_summary_is_refused(tmp_path: Path, text: str, message: str) -> None:
    out_dir = RunFiles().write(tmp_path)
    (out_dir / "summary.json").write_text(text)

    with pytest.raises(RunFilesError, match=message):
        load_run(out_dir)


def test_an_unknown_time_zone_is_refused(tmp_path: Path) -> None:
    summary = example_summary(department_timezone="Mars/Olympus")
    with pytest.raises(RunFilesError, match="'Mars/Olympus' is not a known time zone"):
        load_run(RunFiles(summary=summary).write(tmp_path))


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        ("courses.csv", ",2027-01-06,", ",2027-13-06,", r"courses.csv line 3: ready_date .*date"),
        ("courses.csv", "+00:00", "", r"courses.csv line 2: starts_at .* has no UTC offset"),
        ("courses.csv", ",completed,", ",,", r"courses.csv line 2: status is empty"),
        ("courses.csv", "08:00-12:00", "morning", r"line 12: preferred_window 'morning'"),
        ("weekly.csv", ",3000,135", ",lots,135", r"weekly.csv line 2: open_minutes 'lots'"),
        ("weekly.csv", "sbrt_capable", "capable", r"weekly.csv .* lacks the column\(s\) sbrt_"),
    ],
)
def test_a_corrupt_csv_names_file_line_and_column(
    tmp_path: Path, file: str, old: str, new: str, message: str
) -> None:
    out_dir = RunFiles().write(tmp_path)
    path = out_dir / file
    path.write_text(path.read_text().replace(old, new, 1))

    with pytest.raises(RunFilesError, match=message):
        load_run(out_dir)


def test_an_empty_run_loads(tmp_path: Path) -> None:
    run = load_run(RunFiles(summary={}, fractions=[], weekly=[]).write(tmp_path))

    assert course_waits(run) == [] and weekly_arrivals(run) == []
    assert run.scenario_name == "Unnamed scenario" and run.timezone is UTC
    assert json.loads((tmp_path / "summary.json").read_text()) == {}
