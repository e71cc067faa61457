"""Charts of a simulation run (or several, overlaid) as SVG text for the report and what-if pages.

Drawn with matplotlib's object-oriented API on a ``Figure`` of its own, never pyplot, so no
global backend or figure manager is touched. The SVG is then made fit to sit inline in a page
served under a strict Content Security Policy: styles become presentation attributes (no
``style`` attribute or element), ids carry a prefix so several charts can share a page, and
nothing carries a date, so the same run always gives the same bytes.
"""

from __future__ import annotations

import io
import math
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import matplotlib
import matplotlib.dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from scheduler.simulation.runs import (
    RunData,
    course_waits,
    run_weeks,
    wait_quantiles,
    weekly_arrivals,
    weekly_sbrt_capacity,
    weekly_utilisation,
)

RunsInput = RunData | Sequence[tuple[str, RunData]]

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
# Colour-blind safe (Okabe and Ito), each paired with a line style so print in grey still tells
# the series apart.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
LINE_STYLES = ("-", "--", ":", "-.")
WIDTH_INCHES = 8.0
# rcParams are process-wide: these apply only while one chart is drawn and saved, under a lock
# so a chart drawn in another thread at the same time cannot see half of them.
CHART_RC = {
    "svg.hashsalt": "sbrt-simulation-report",
    "svg.fonttype": "none",  # text stays text: selectable, searchable, small
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#d5dae0",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
}
_DRAWING = threading.Lock()

# CSS properties matplotlib writes in style attributes; each is also an SVG presentation
# attribute, which a Content Security Policy without 'unsafe-inline' does not block.
PRESENTATION_ATTRIBUTES = frozenset(
    {
        "clip-path",
        "clip-rule",
        "display",
        "dominant-baseline",
        "fill",
        "fill-opacity",
        "fill-rule",
        "font-family",
        "font-size",
        "font-style",
        "font-variant",
        "font-weight",
        "opacity",
        "stroke",
        "stroke-dasharray",
        "stroke-dashoffset",
        "stroke-linecap",
        "stroke-linejoin",
        "stroke-miterlimit",
        "stroke-opacity",
        "stroke-width",
        "text-anchor",
        "visibility",
    }
)
_URL_REFERENCE = re.compile(r"url\(#([^)]+)\)")


def wait_histogram_svg(runs: RunsInput, *, id_prefix: str = "wait") -> str:
    """Histogram of days from ready date to first fraction, with the median and p90 marked."""
    labelled = _labelled(runs)
    days_by_run = [[wait.days for wait in course_waits(run)] for _, run in labelled]
    all_days = [day for days in days_by_run for day in days]
    title = "Wait from ready to first fraction"
    with _DRAWING, matplotlib.rc_context(CHART_RC):
        figure = _figure(3.8)
        axes = figure.add_subplot()
        axes.set_title(title, loc="left")
        axes.set_xlabel("Days from ready date to first fraction (courses after the warm-up)")
        axes.set_ylabel("Courses")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        if not all_days:
            _say_nothing(axes, "No booked course after the warm-up to show.")
        else:
            edges = _day_bins(min(all_days), max(all_days))
            several = len(labelled) > 1
            for index, ((label, _), days) in enumerate(zip(labelled, days_by_run, strict=True)):
                colour = COLOURS[index % len(COLOURS)]
                name = f"{_plain(label)}: " if several else ""
                if days:
                    axes.hist(
                        days,
                        bins=edges,
                        histtype="step" if several else "bar",
                        color=colour,
                        linestyle=LINE_STYLES[index % len(LINE_STYLES)],
                        linewidth=2 if several else 0.5,
                        edgecolor=colour if several else "white",
                        label=f"{name}courses" if several else "Courses",
                    )
                quantiles = wait_quantiles(days)
                if quantiles["median"] is None:
                    continue
                axes.axvline(
                    quantiles["median"],
                    color="#1b1f24" if not several else colour,
                    linestyle="-",
                    linewidth=1.8,
                    label=f"{name}median {_days(quantiles['median'])}",
                )
                # Another colour as well as dashes: when nine in ten start on the median day,
                # the two lines coincide and the dashes must still show on top.
                axes.axvline(
                    quantiles["p90"],
                    color=COLOURS[1] if not several else colour,
                    linestyle=(0, (4, 2)),
                    linewidth=1.8,
                    label=f"{name}90 % started within {_days(quantiles['p90'])}",
                )
            _legend_below(figure, [axes])
        return _svg(figure, id_prefix, title)


def utilisation_svg(runs: RunsInput, *, id_prefix: str = "utilisation") -> str:
    """Weekly utilisation (booked / open minutes) of each SBRT-capable linac; a panel per run."""
    labelled = _labelled(runs)
    linacs = sorted({name for _, run in labelled for name in weekly_utilisation(run)})
    colour_of = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(linacs)}
    style_of = {name: LINE_STYLES[i % len(LINE_STYLES)] for i, name in enumerate(linacs)}
    title = "Weekly utilisation of the SBRT-capable linacs"
    with _DRAWING, matplotlib.rc_context(CHART_RC):
        figure = _figure(0.6 + 3.0 * len(labelled))
        panels = figure.subplots(len(labelled), 1, sharex=True, sharey=True, squeeze=False)
        highest = 1.0
        for (label, run), (axes,) in zip(labelled, panels, strict=True):
            axes.set_title(
                title if len(labelled) == 1 else f"{title}: {_plain(label)}",
                loc="left",
            )
            axes.set_ylabel("Booked / open time")
            axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            _shade_warmup(axes, [run])
            series = weekly_utilisation(run)
            if not series:
                _say_nothing(axes, "No SBRT-capable linac in this run.")
                continue
            for name, points in series.items():
                weeks, shares = _week_steps(
                    [week for week, _ in points],
                    [math.nan if share is None else share for _, share in points],
                )
                highest = max([highest, *(share for share in shares if share == share)])
                axes.step(
                    weeks,
                    shares,
                    where="post",
                    color=colour_of[name],
                    linestyle=style_of[name],
                    linewidth=1.8,
                    label=_plain(name),
                )
            axes.axhline(1.0, color="#5b6470", linewidth=0.8)
        panels[0][0].set_ylim(0, highest * 1.05)
        # Each linac keeps its colour in every panel: one legend serves them all.
        _legend_below(figure, [axes for (axes,) in panels])
        _date_axis(panels[-1][0])
        return _svg(figure, id_prefix, title)


def arrivals_capacity_svg(runs: RunsInput, *, id_prefix: str = "arrivals") -> str:
    """Courses becoming ready per week, and the linac time they ask for against SBRT capacity."""
    labelled = _labelled(runs)
    several = len(labelled) > 1
    title = "New courses and the linac time they need, against SBRT capacity"
    with _DRAWING, matplotlib.rc_context(CHART_RC):
        figure = _figure(6.4)
        courses_axes, hours_axes = figure.subplots(
            2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 3]}
        )
        courses_axes.set_title(title, loc="left")
        courses_axes.set_ylabel("Courses ready")
        courses_axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        hours_axes.set_ylabel("Hours per week")
        hours_axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        for axes in (courses_axes, hours_axes):
            _shade_warmup(axes, [run for _, run in labelled])
        anything = False
        for index, (label, run) in enumerate(labelled):
            colour = COLOURS[index % len(COLOURS)]
            name = f"{_plain(label)}: " if several else ""
            arrivals = weekly_arrivals(run)
            capacity = weekly_sbrt_capacity(run)
            if not arrivals and not capacity:
                continue
            anything = True
            if arrivals:
                weeks = [week.week_start for week in arrivals]
                if several:
                    courses_axes.step(
                        *_week_steps(weeks, [week.courses for week in arrivals]),
                        where="post",
                        color=colour,
                        linewidth=1.8,
                        label=f"{name}courses becoming ready",
                    )
                else:
                    courses_axes.bar(
                        weeks,
                        [week.courses for week in arrivals],
                        width=6,
                        align="edge",
                        color=colour,
                    )
                hours_axes.step(
                    *_week_steps(weeks, [week.demand_minutes / 60 for week in arrivals]),
                    where="post",
                    color=colour,
                    linestyle="-",
                    linewidth=2,
                    label=f"{name}time the week's new courses need",
                )
            if capacity:
                hours_axes.step(
                    *_week_steps(
                        [week.week_start for week in capacity],
                        [week.open_minutes / 60 for week in capacity],
                    ),
                    where="post",
                    color=colour,
                    linestyle=(0, (4, 2)),
                    linewidth=1.5,
                    label=f"{name}open time on SBRT-capable linacs",
                )
        if not anything:
            _say_nothing(hours_axes, "No weeks to show.")
        else:
            _legend_below(figure, [courses_axes, hours_axes])
            courses_axes.set_ylim(bottom=0)
            hours_axes.set_ylim(bottom=0)
            _date_axis(hours_axes)
        return _svg(figure, id_prefix, title)


# ---- drawing helpers ---------------------------------------------------------------------


def _labelled(runs: RunsInput) -> list[tuple[str, RunData]]:
    if isinstance(runs, RunData):
        return [(runs.scenario_name, runs)]
    labelled = [(str(label), run) for label, run in runs]
    if not labelled:
        raise ValueError("a chart needs at least one run")
    return labelled


def _figure(height_inches: float) -> Figure:
    figure = Figure(figsize=(WIDTH_INCHES, height_inches), layout="constrained")
    figure.patch.set_facecolor("white")
    return figure


def _plain(text: str) -> str:
    """User text shown as written: no mathtext between dollar signs, no hidden '_' labels."""
    text = text.replace("$", r"\$")
    # matplotlib leaves labels starting with "_" out of legends.
    return "\u200b" + text if text.startswith("_") else text


def _days(value: float | None) -> str:
    if value is None:
        return "-"
    shown = f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{shown} day" if shown == "1" else f"{shown} days"


def _day_bins(lowest: int, highest: int) -> list[float]:
    """Bin edges centred on whole days; wider bins keep a long tail to about 40 bars."""
    width = max(1, math.ceil((highest - lowest + 1) / 40))
    start = min(0, lowest)
    edges = [start - 0.5]
    while edges[-1] < highest + 0.5:
        edges.append(edges[-1] + width)
    return edges


def _week_steps(weeks: list[date], values: list[float]) -> tuple[list[date], list[float]]:
    """Values drawn as steps across each whole week, the last week included."""
    if not weeks:
        return [], []
    return [*weeks, weeks[-1] + timedelta(days=7)], [*values, values[-1]]


def _shade_warmup(axes: Axes, runs: list[RunData]) -> None:
    starts = {run.period.get("start") for run in runs}
    ends = {run.warmup_end for run in runs}
    if len(starts) != 1 or len(ends) != 1:
        return
    end = ends.pop()
    first_weeks = [run_weeks(run)[0] for run in runs if run_weeks(run)]
    if end is None or not first_weeks:
        return
    start = min([date.fromisoformat(str(starts.pop())), *first_weeks])
    if end > start:
        axes.axvspan(start, end, color="#e3e7ec", linewidth=0, label="warm-up (not measured)")


def _date_axis(axes: Axes) -> None:
    locator = mdates.AutoDateLocator(minticks=4, maxticks=12)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _legend_below(figure: Figure, panels: list[Axes]) -> None:
    """One legend under the chart, so it never hides a bar or a line."""
    seen: dict[str, Any] = {}
    for axes in panels:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        figure.legend(
            list(seen.values()),
            list(seen),
            loc="outside lower center",
            # As many columns as the longest label leaves room for across the chart.
            ncols=max(1, min(3, len(seen), 84 // max(len(label) for label in seen))),
            frameon=False,
        )


def _say_nothing(axes: Axes, message: str) -> None:
    axes.text(0.5, 0.5, message, transform=axes.transAxes, ha="center", va="center")
    axes.set_xticks([])
    axes.set_yticks([])


# ---- SVG fit for an inline, CSP-guarded page --------------------------------------------


def _svg(figure: Figure, id_prefix: str, title: str) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return inline_svg(buffer.getvalue(), id_prefix=id_prefix, title=title)


def inline_svg(text: str, *, id_prefix: str, title: str) -> str:
    """matplotlib's SVG file as an ``<svg>`` element without style attributes or elements."""
    root = ET.fromstring(text)
    for metadata in root.findall(f"{{{SVG_NS}}}metadata"):
        root.remove(metadata)
    # matplotlib's only style element holds defaults for every element; on the root they are
    # inherited instead.
    for defs in root.findall(f"{{{SVG_NS}}}defs"):
        for style in defs.findall(f"{{{SVG_NS}}}style"):
            _apply_declarations(root, style.text or "", selector_block=True)
            defs.remove(style)
        if len(defs) == 0:
            root.remove(defs)
    renamed: dict[str, str] = {}
    for element in root.iter():
        if "style" in element.attrib:
            _apply_declarations(element, element.attrib.pop("style"))
        if XLINK_HREF in element.attrib:  # SVG 2 href: no xlink namespace needed inline
            element.set("href", element.attrib.pop(XLINK_HREF))
        if "id" in element.attrib:
            renamed[element.get("id")] = f"{id_prefix}-{len(renamed) + 1}"
            element.set("id", renamed[element.get("id")])
    for element in root.iter():
        for name, value in element.attrib.items():
            if name == "href" and value.startswith("#"):
                element.set(name, "#" + renamed.get(value[1:], value[1:]))
            elif "url(#" in value:
                element.set(
                    name,
                    _URL_REFERENCE.sub(lambda m: f"url(#{renamed.get(m[1], m[1])})", value),
                )
    # The page sizes the chart (CSS); the viewBox keeps its proportions.
    for size in ("width", "height"):
        root.attrib.pop(size, None)
    root.set("class", "sim-chart-svg")
    root.set("role", "img")
    root.set("aria-labelledby", f"{id_prefix}-title")
    heading = ET.Element(f"{{{SVG_NS}}}title", {"id": f"{id_prefix}-title"})
    heading.text = title
    root.insert(0, heading)
    # Every element is SVG: written with local names and one xmlns, as a page would hold it.
    for element in root.iter():
        element.tag = element.tag.removeprefix(f"{{{SVG_NS}}}")
    root.set("xmlns", SVG_NS)
    return ET.tostring(root, encoding="unicode")


def _apply_declarations(element: ET.Element, css: str, *, selector_block: bool = False) -> None:
    if selector_block:
        match = re.fullmatch(r"\s*\*\s*\{(.*)\}\s*", css, re.DOTALL)
        if match is None:
            raise ValueError(f"unexpected style rule in a chart: {css!r}")
        css = match[1]
    for declaration in css.split(";"):
        if not declaration.strip():
            continue
        name, _, value = declaration.partition(":")
        name, value = name.strip(), value.strip()
        if name not in PRESENTATION_ATTRIBUTES:
            raise ValueError(f"chart style {name!r} has no SVG presentation attribute")
        element.set(name, value)
