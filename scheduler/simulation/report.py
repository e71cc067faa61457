"""The report a department manager reads after a simulated period, and the side-by-side
comparison of two or more runs for the what-if page.

Both are built from a run's files only (see ``runs.load_run``). All text is escaped: scenario
names and linac names are typed by users.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

from scheduler.simulation import charts
from scheduler.simulation.runs import RunData, load_run

REPORT_FILE = "report.html"
NBSP = "\u00a0"  # keeps "95 %" on one line in a narrow column
MINUS = "\u2212"  # a true minus sign: a hyphen is easy to miss in a table of differences

POLICY_DESCRIPTIONS = {
    "online": "Online: each course is booked at the first-ranked proposal as soon as it is "
    "known, as a scheduler does today.",
    "batch-daily": "Batch daily: each day's ready courses are placed together by the optimiser.",
    "hindsight": "Hindsight: the optimiser places the whole period knowing every arrival in "
    "advance. No real policy can do better; it is the yardstick for the others.",
}


@dataclass(frozen=True)
class SummaryFigure:
    """One line of the summary table: where it is in summary.json and how to say it."""

    key: str  # dotted path into summary.json
    label: str
    kind: str  # count | share | days | minutes | number
    definition: str
    better: str | None = None  # "lower" | "higher" | None when neither is plainly better

    def value(self, summary: dict[str, Any]) -> float | None:
        found: Any = summary
        for part in self.key.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        if isinstance(found, bool) or not isinstance(found, int | float):
            return None
        return found


# The summary table, in the order and groups a reader takes it in.
SUMMARY_GROUPS: tuple[tuple[str, tuple[SummaryFigure, ...]], ...] = (
    (
        "What patients experienced",
        (
            SummaryFigure(
                "courses",
                "Courses measured",
                "count",
                "Courses whose ready-to-treat date falls after the warm-up. The warm-up fills the "
                "diary as it would be on a normal day, and is not measured.",
            ),
            SummaryFigure(
                "booked_first_pass_share",
                "Booked in full within the protocol at the first attempt",
                "share",
                "Share of measured courses whose every fraction was booked, inside every rule "
                "of the protocol, when the course was first booked, without a rule being "
                "overridden.",
                "higher",
            ),
            SummaryFigure(
                "unbooked_courses",
                "Courses never booked",
                "count",
                "Measured courses for which no complete schedule within the rules was found.",
                "lower",
            ),
            SummaryFigure(
                "wait_days.median",
                "Median wait from ready to first fraction",
                "days",
                "Half of the booked courses started sooner than this, half later. The wait runs "
                "in calendar days from the day the course was ready to treat to the "
                "department's local date of its first fraction.",
                "lower",
            ),
            SummaryFigure(
                "wait_days.p90",
                "Nine in ten courses started within",
                "days",
                "The 90th percentile of the wait: only one booked course in ten waited longer.",
                "lower",
            ),
            SummaryFigure(
                "wait_days.max",
                "Longest wait from ready to first fraction",
                "days",
                "The single longest wait of a booked course.",
                "lower",
            ),
            SummaryFigure(
                "mean_wait_days",
                "Average wait from ready to first fraction",
                "days",
                "The mean wait of the booked courses: unlike the median, it grows with every "
                "course that waits.",
                "lower",
            ),
            SummaryFigure(
                "weighted_mean_wait_days",
                "Average wait weighted by priority",
                "number",
                "Each day of wait counts 6 minus the course's priority (5 for an urgent "
                "priority-1 course, 1 for a priority-5 one), averaged over the booked courses: "
                "what the optimiser minimises.",
                "lower",
            ),
            SummaryFigure(
                "wait_days_by_priority.1.mean",
                "Average wait of urgent (priority 1) courses",
                "days",
                "The mean wait of the booked priority-1 courses.",
                "lower",
            ),
            SummaryFigure(
                "within_14_days_share",
                "Started within 14 days of being ready",
                "share",
                "Share of measured courses whose first fraction was at most 14 calendar days "
                "after their ready date (a course never booked counts as not started).",
                "higher",
            ),
            SummaryFigure(
                "within_28_days_share",
                "Started within 28 days of being ready",
                "share",
                "As above, within 28 calendar days.",
                "higher",
            ),
            SummaryFigure(
                "preferred_window_share",
                "Treated in the patient's preferred time of day",
                "share",
                "Of the courses whose patient asked for a time window (for example mornings), the "
                "share with every fraction inside it.",
                "higher",
            ),
            SummaryFigure(
                "overall_days_within_protocol_share",
                "Courses completed within the protocol's overall time",
                "share",
                "Of the booked courses, the share with every prescribed fraction held and the "
                "first-to-last span inside the protocol's overall treatment time.",
                "higher",
            ),
        ),
    ),
    (
        "Linac time",
        (
            SummaryFigure(
                "sbrt_utilisation",
                "Use of SBRT linac time",
                "share",
                "Booked minutes divided by open minutes on the SBRT-capable linacs (opening hours "
                "less closures and downtime) after the warm-up. High use leaves little slack "
                "for urgent patients.",
            ),
            SummaryFigure(
                "overtime_minutes",
                "Treatment time outside opening hours",
                "minutes",
                "Minutes of fractions outside their linac's opening hours after the warm-up (only "
                "a booking that overrides the rules puts them there).",
                "lower",
            ),
            SummaryFigure(
                "fractions",
                "Fractions booked",
                "count",
                "Fractions of the measured courses, delivered or still to come.",
            ),
        ),
    ),
    (
        "Changes after booking",
        (
            SummaryFigure(
                "reschedules_per_course",
                "Reschedules per course",
                "number",
                "Fractions moved or booked again, averaged over the measured courses.",
                "lower",
            ),
            SummaryFigure(
                "missed_fractions",
                "Fractions missed by patients",
                "count",
                "Fractions of the measured courses that the patient did not attend.",
            ),
            SummaryFigure(
                "downtime_moves.kept_time",
                "Downtime: fractions kept at their time on another linac",
                "count",
                "Fractions displaced by linac downtime that kept their own time on another linac.",
            ),
            SummaryFigure(
                "downtime_moves.same_day",
                "Downtime: fractions moved within the same day",
                "count",
                "Fractions displaced by linac downtime, moved to another time that day.",
            ),
            SummaryFigure(
                "downtime_moves.other_day",
                "Downtime: fractions moved to another day",
                "count",
                "Fractions displaced by linac downtime, moved to another day.",
            ),
            SummaryFigure(
                "downtime_moves.needs_human",
                "Downtime: fractions left for a person to rebook",
                "count",
                "Fractions displaced by linac downtime for which no move within the protocol's "
                "rules was found.",
                "lower",
            ),
            SummaryFigure(
                "overrides",
                "Fractions booked against a rule",
                "count",
                "Fractions of the measured courses booked against a rule, with a recorded reason.",
                "lower",
            ),
        ),
    ),
)
SUMMARY_FIGURES = tuple(figure for _, figures in SUMMARY_GROUPS for figure in figures)

CHART_DESCRIPTIONS = {
    "wait": "Each bar counts the booked courses (after the warm-up) that waited that many days "
    "from ready to first fraction. The solid line marks the median, the dashed line the point "
    "within which nine in ten courses started.",
    "utilisation": "For each SBRT-capable linac, the share of its open time that was booked, "
    "week by week. The line at 100\u00a0% is a full diary; gaps are weeks the linac was not open.",
    "arrivals": "Top: courses that became ready to treat each week. Bottom: the linac time those "
    "courses need (solid) against the open time on the SBRT-capable linacs (dashed). When "
    "the solid line nears the dashed one, waits grow. The grey band is the warm-up.",
}

COMPARISON_CHART_DESCRIPTIONS = {
    "wait": "The outline of each run's wait distribution, in its own colour; the solid line marks "
    "that run's median and the dashed line the point within which nine in ten courses started.",
    "utilisation": "One panel per run: for each SBRT-capable linac, the share of its open time "
    "that was booked, week by week. Each linac keeps its colour in every panel.",
    "arrivals": "Top: courses that became ready to treat each week, a line per run. Bottom: the "
    "linac time those courses need (solid) against the open time on the SBRT-capable linacs "
    "(dashed), in each run's colour.",
}

HOW_TO_READ = (
    "This report replays a period of patient arrivals through the same booking rules the "
    "scheduler uses every day, then measures what patients and the department experienced.",
    "The first weeks are a warm-up: they fill the diary as it would be on an ordinary day and "
    "are left out of the figures.",
    "Waits are counted in calendar days, weekends and holidays included, from the day a course "
    "is ready to treat to the day of its first fraction in the department's time zone.",
    "Percentages are shares of the measured courses unless their definition below says "
    "otherwise. Every booked fraction is listed in "
    "courses.csv next to this report, so each figure can be checked independently.",
)


def write_report(out_dir: Path) -> Path:
    """Write report.html into a finished run's directory and return its path."""
    out_dir = Path(out_dir)
    html = render_report(load_run(out_dir))
    path = out_dir / REPORT_FILE
    # Written whole or not at all: a reader never sees half a report.
    handle, temporary = tempfile.mkstemp(dir=out_dir, prefix=".report-", suffix=".html")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
            file.write(html)
        # mkstemp makes the file private; the report is read like the run's other files.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def render_report(run: RunData) -> str:
    """The report page for one run, as HTML text."""
    return (
        _environment()
        .from_string(REPORT_TEMPLATE)
        .render(
            run=run,
            period=_period_text(run),
            policy=POLICY_DESCRIPTIONS.get(run.policy, run.policy or "not stated"),
            seed="not stated" if run.seed is None else run.seed,
            runtime=_seconds(run.summary.get("runtime_seconds")),
            groups=_summary_groups(run),
            figures=SUMMARY_FIGURES,
            charts=_charts(run, prefix="report"),
            descriptions=CHART_DESCRIPTIONS,
            how_to_read=HOW_TO_READ,
            css=Markup(REPORT_CSS),
        )
    )


def comparison_html(
    runs: Sequence[tuple[str, RunData]] | RunData, *more: RunData | tuple[str, RunData]
) -> Markup:
    """Summary figures of labelled runs side by side with their differences to the first run,
    and the charts overlaid, as an HTML fragment styled by web/static/simulation.css.

    Takes a sequence of (label, run), or the runs one by one (each a run or a (label, run));
    an unlabelled run is labelled by its scenario name.
    """
    one_run = isinstance(runs, RunData) or (
        isinstance(runs, tuple) and len(runs) == 2 and isinstance(runs[1], RunData)
    )
    runs = _labelled_runs([runs, *more] if one_run else [*runs, *more])
    if len(runs) < 2:
        raise ValueError("a comparison needs at least two runs")
    baseline = runs[0][1].summary
    rows = []
    for heading, figures in SUMMARY_GROUPS:
        for figure in figures:
            values = [figure.value(run.summary) for _, run in runs]
            if all(value is None for value in values):
                continue
            rows.append(
                {
                    "heading": heading if not rows or rows[-1]["group"] != heading else "",
                    "group": heading,
                    "figure": figure,
                    "values": [format_value(figure, value) for value in values],
                    "differences": [
                        _difference(figure, figure.value(baseline), value) for value in values[1:]
                    ],
                }
            )
    rendered = (
        _environment()
        .from_string(COMPARISON_TEMPLATE)
        .render(
            runs=runs,
            rows=rows,
            charts=_charts(list(runs), prefix="compare"),
            descriptions=COMPARISON_CHART_DESCRIPTIONS,
        )
    )
    return Markup(rendered)


def _labelled_runs(runs: list[RunData | tuple[str, RunData]]) -> list[tuple[str, RunData]]:
    labelled = [(run.scenario_name, run) if isinstance(run, RunData) else run for run in runs]
    labels = [label for label, _ in labelled]
    # Two runs of one scenario (another seed or policy) still need telling apart.
    return [
        (f"{label} ({index})" if labels.count(label) > 1 else label, run)
        for index, (label, run) in enumerate(labelled, start=1)
    ]


def format_value(figure: SummaryFigure, value: float | None) -> str:
    """A summary figure in plain words: "4 days", "95.2 %", "1,230 minutes"."""
    if value is None:
        return "not measured"
    if figure.kind == "share":
        return f"{_number(value * 100, 1)}{NBSP}%"
    if figure.kind == "days":
        return _unit(value, "day", "days")
    if figure.kind == "minutes":
        return _unit(value, "minute", "minutes")
    if figure.kind == "number":
        return _number(value, 2)
    return _number(value, 0)


# ---- helpers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    text: str
    verdict: str  # "better" | "worse" | "same" | ""


def _difference(figure: SummaryFigure, first: float | None, other: float | None) -> Difference:
    if first is None or other is None:
        return Difference("cannot compare", "")
    change = other - first
    if figure.kind == "share":
        change *= 100
    decimals = {"share": 1, "number": 2, "days": 1}.get(figure.kind, 0)
    if round(change, decimals) == 0:
        return Difference("no change", "same")
    sign = "+" if change > 0 else MINUS
    size = _number(abs(change), decimals)
    unit = {
        "share": " points",
        "days": " day" if size == "1" else " days",
        "minutes": " minute" if size == "1" else " minutes",
    }.get(figure.kind, "")
    verdict = ""
    if figure.better is not None:
        verdict = "better" if (change < 0) == (figure.better == "lower") else "worse"
    return Difference(f"{sign}{size}{unit}", verdict)


def _number(value: float, decimals: int) -> str:
    text = f"{value:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _unit(value: float, one: str, many: str) -> str:
    text = _number(value, 1)
    return f"{text} {one if text == '1' else many}"


def _seconds(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "not recorded"
    return f"{_number(value, 1)} s"


def _summary_groups(run: RunData) -> list[tuple[str, list[tuple[SummaryFigure, str]]]]:
    """Groups of (figure, value in words) the run has; a partial summary shows fewer lines."""
    groups = []
    for heading, figures in SUMMARY_GROUPS:
        rows = [
            (figure, format_value(figure, figure.value(run.summary)))
            for figure in figures
            if figure.value(run.summary) is not None
        ]
        if rows:
            groups.append((heading, rows))
    return groups


def _long_date(day: date) -> str:
    return f"{day.day} {day:%B %Y}"


def _period_text(run: RunData) -> str:
    period = run.period
    try:
        start = date.fromisoformat(str(period.get("start")))
    except ValueError:
        return "not stated"
    text = f"from {_long_date(start)}"
    with contextlib.suppress(ValueError):
        text += f" to {_long_date(date.fromisoformat(str(period.get('end'))))}"
    days, warmup = period.get("days"), period.get("warmup_days")
    if isinstance(days, int):
        text += f" ({days} days"
        if isinstance(warmup, int) and warmup > 0:
            text += f"; the first {warmup} are warm-up and not measured"
        text += ")"
    return text


def _charts(runs: RunData | list[tuple[str, RunData]], *, prefix: str) -> dict[str, Markup]:
    drawers: dict[str, Callable[..., str]] = {
        "wait": charts.wait_histogram_svg,
        "utilisation": charts.utilisation_svg,
        "arrivals": charts.arrivals_capacity_svg,
    }
    # The SVG is built by ElementTree, which escapes every text and attribute it writes.
    return {
        name: Markup(draw(runs, id_prefix=f"{prefix}-{name}")) for name, draw in drawers.items()
    }


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)


REPORT_CSS = """
:root { --ink: #1b1f24; --muted: #5b6470; --line: #d5dae0; --better: #1d7a46; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.45;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 60rem; margin: 0 auto; padding: 1rem 1.25rem 3rem; }
h1 { font-size: 1.5rem; margin: .5rem 0 .75rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .5rem; border-bottom: 1px solid var(--line); }
dl.run-facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dl.run-facts dt { font-weight: 600; }
dl.run-facts dd { margin: 0; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: .35rem .5rem; text-align: left;
  vertical-align: top; }
tbody th[scope="row"] { font-weight: normal; }
th.group { background: #f1f3f5; font-size: .95em; padding-top: .6rem; }
td.value { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums;
  font-weight: 600; }
figure { margin: 1.5rem 0; }
figcaption { color: var(--muted); margin-top: .25rem; }
svg.sim-chart-svg { display: block; width: 100%; height: auto; }
dl.definitions dt { font-weight: 600; margin-top: .5rem; }
dl.definitions dd { margin: 0 0 0 1rem; }
.muted { color: var(--muted); }
@media print {
  @page { margin: 15mm; }
  body { font-size: 10pt; }
  main { max-width: none; padding: 0; }
  h2 { break-after: avoid; }
  figure, tr, dl.definitions dd { break-inside: avoid; }
}
"""

REPORT_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Simulation report: {{ run.scenario_name }}</title>
<style>{{ css }}</style>
</head>
<body>
<main>
<h1>Simulation report: {{ run.scenario_name }}</h1>
<dl class="run-facts">
<dt>Period</dt><dd>{{ period }}</dd>
<dt>Booking policy</dt><dd>{{ policy }}</dd>
<dt>Random seed</dt><dd>{{ seed }}</dd>
<dt>Department time zone</dt><dd>{{ run.timezone }}</dd>
<dt>Time to simulate</dt><dd>{{ runtime }}</dd>
</dl>

<h2 id="summary">Summary</h2>
{% if groups %}
<table class="summary">
<thead><tr><th scope="col">Figure</th><th scope="col">Value</th></tr></thead>
{% for heading, rows in groups %}
<tbody>
<tr><th colspan="2" scope="rowgroup" class="group">{{ heading }}</th></tr>
{% for figure, value in rows %}
<tr><th scope="row">{{ figure.label }}</th><td class="value">{{ value }}</td></tr>
{% endfor %}
</tbody>
{% endfor %}
</table>
{% else %}
<p>This run recorded no summary figures.</p>
{% endif %}

<h2 id="charts">Charts</h2>
{% for name, chart in charts.items() %}
<figure>
{{ chart }}
<figcaption>{{ descriptions[name] }}</figcaption>
</figure>
{% endfor %}

<h2 id="how-to-read">How to read this</h2>
{% for paragraph in how_to_read %}
<p>{{ paragraph }}</p>
{% endfor %}

<h2 id="definitions">Definitions</h2>
<dl class="definitions">
{% for figure in figures %}
<dt>{{ figure.label }}</dt><dd>{{ figure.definition }}</dd>
{% endfor %}
</dl>
</main>
</body>
</html>
"""

COMPARISON_TEMPLATE = """<section class="sim-comparison" aria-label="Comparison of runs">
<table class="sim-compare">
<thead>
<tr><th scope="col">Figure</th>
{% for label, _ in runs %}<th scope="col" class="sim-run">{{ label }}</th>{% endfor %}
{% for label, _ in runs[1:] %}
<th scope="col" class="sim-difference">Difference: {{ label }} against {{ runs[0][0] }}</th>
{% endfor %}
</tr>
</thead>
<tbody>
{% for row in rows %}
{% if row.heading %}
<tr><th colspan="{{ runs|length * 2 }}" scope="rowgroup" class="sim-group">\
{{ row.heading }}</th></tr>
{% endif %}
<tr>
<th scope="row">{{ row.figure.label }}</th>
{% for value in row["values"] %}<td class="sim-value">{{ value }}</td>{% endfor %}
{% for difference in row.differences %}
<td class="sim-difference sim-{{ difference.verdict or 'neutral' }}">{{ difference.text }}
{%- if difference.verdict in ("better", "worse") %} <span class="sim-verdict">\
({{ difference.verdict }})</span>{% endif %}</td>
{% endfor %}
</tr>
{% endfor %}
</tbody>
</table>
<div class="sim-charts">
{% for name, chart in charts.items() %}
<figure class="sim-chart">
{{ chart }}
<figcaption>{{ descriptions[name] }}</figcaption>
</figure>
{% endfor %}
</div>
</section>
"""
