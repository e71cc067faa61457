"""Charts: valid SVG fit to sit inline under a strict CSP, the same bytes for the same run."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import matplotlib
import pytest

from scheduler.simulation import charts
from scheduler.simulation.runs import RunData, load_run
from tests.simulation.run_files import LINAC_1, LINAC_2, Fraction, RunFiles, local

SVG = "{http://www.w3.org/2000/svg}"
CHARTS: list[Callable[..., str]] = [
    charts.wait_histogram_svg,
    charts.utilisation_svg,
    charts.arrivals_capacity_svg,
]


@pytest.fixture
def run(tmp_path: Path) -> RunData:
    return load_run(RunFiles().write(tmp_path / "run"))


def texts(svg: str) -> list[str]:
    return ["".join(text.itertext()) for text in ET.fromstring(svg).iter(f"{SVG}text")]


def assert_inline_safe(svg: str) -> ET.Element:
    """Valid SVG; nothing a CSP without inline styles blocks; no script, no outside address;
    every id unique and every reference resolved within the chart."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("viewBox")
    ids = [element.get("id") for element in root.iter() if element.get("id")]
    assert len(ids) == len(set(ids))
    for element in root.iter():
        assert element.tag != f"{SVG}style" and "style" not in element.attrib
        assert element.tag not in {f"{SVG}script", f"{SVG}foreignObject", f"{SVG}image"}
        for name, value in element.attrib.items():
            assert not name.startswith("on")
            for reference in re.findall(r"url\(#([^)]+)\)", value):
                assert reference in ids
            if name == "href":
                assert value.startswith("#") and value[1:] in ids
    assert "<script" not in svg.lower() and "http" not in svg.replace(root.tag[1:-5], "")
    return root


@pytest.mark.parametrize("chart", CHARTS, ids=lambda chart: chart.__name__)
def test_every_chart_is_inline_safe_svg(run: RunData, chart: Callable[..., str]) -> None:
    root = assert_inline_safe(chart(run, id_prefix="one"))

    assert root.get("role") == "img"
    assert all(
        element.get("id").startswith("one-") for element in root.iter() if "id" in element.attrib
    )
    assert root.find(f"{SVG}title").text


@pytest.mark.parametrize("chart", CHARTS, ids=lambda chart: chart.__name__)
def test_several_runs_overlay_with_their_labels(run: RunData, chart: Callable[..., str]) -> None:
    svg = chart([("Today", run), ("One more linac", run)], id_prefix="both")

    assert_inline_safe(svg)
    shown = " ".join(texts(svg))
    assert "Today" in shown and "One more linac" in shown


@pytest.mark.parametrize("chart", CHARTS, ids=lambda chart: chart.__name__)
def test_the_same_run_gives_the_same_bytes(
    tmp_path: Path, run: RunData, chart: Callable[..., str]
) -> None:
    again = load_run(RunFiles().write(tmp_path / "again"))

    assert chart(run) == chart(again)


@pytest.mark.parametrize("chart", CHARTS, ids=lambda chart: chart.__name__)
def test_charts_sharing_a_page_have_distinct_ids(run: RunData, chart: Callable[..., str]) -> None:
    first, second = (
        ET.fromstring(chart(run, id_prefix="a")),
        ET.fromstring(chart(run, id_prefix="b")),
    )

    first_ids = {element.get("id") for element in first.iter() if element.get("id")}
    second_ids = {element.get("id") for element in second.iter() if element.get("id")}
    assert first_ids and not first_ids & second_ids


def test_wait_histogram_marks_the_median_and_p90_of_the_data(run: RunData) -> None:
    # Measured waits are 1, 2, 2 and 4 days (see run_files).
    shown = texts(charts.wait_histogram_svg(run))

    assert "median 2 days" in shown
    assert "90 % started within 3.4 days" in shown


def test_wait_histogram_follows_the_data(tmp_path: Path) -> None:
    files = RunFiles()
    files.fractions.append(
        Fraction("C6", "lung-3fx", "2027-01-12", 1, LINAC_1, local("2027-01-21", 9), 45, "booked")
    )
    run = load_run(files.write(tmp_path))
    # Waits are now 1, 2, 2, 4 and 9 days.
    shown = texts(charts.wait_histogram_svg(run))

    assert "median 2 days" in shown
    assert "90 % started within 7 days" in shown


def test_utilisation_draws_each_sbrt_capable_linac(tmp_path: Path) -> None:
    files = RunFiles()
    files.weekly = [[*row[:2], 0 if row[1] == LINAC_2 else 1, *row[3:]] for row in files.weekly]
    run = load_run(files.write(tmp_path))

    shown = texts(charts.utilisation_svg(run))

    assert LINAC_1 in shown and LINAC_2 not in shown


def test_user_text_is_escaped_and_shown_as_typed(tmp_path: Path) -> None:
    run = load_run(RunFiles().write(tmp_path))
    label = '<script>alert("x")</script> & $100 _budget'

    svg = charts.arrivals_capacity_svg([(label, run), ("_second", run)])

    assert_inline_safe(svg)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    shown = " ".join(texts(svg))
    # Dollar signs are not read as mathematics, and a leading "_" keeps a run in the legend.
    assert '<script>alert("x")</script> & $100 _budget' in shown
    assert "_second" in shown
    assert LINAC_1 in texts(charts.utilisation_svg(run))  # "<" and "&" in linac names


@pytest.mark.parametrize("chart", CHARTS, ids=lambda chart: chart.__name__)
def test_a_run_with_nothing_in_it_still_draws(tmp_path: Path, chart: Callable[..., str]) -> None:
    run = load_run(RunFiles(summary={}, fractions=[], weekly=[]).write(tmp_path))

    assert_inline_safe(chart(run))


def test_no_runs_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="at least one run"):
        charts.wait_histogram_svg([])


def test_importing_the_charts_touches_no_global_matplotlib_state() -> None:
    code = (
        "import sys, matplotlib; backend = matplotlib.rcParams._get_backend_or_none(); "
        "import scheduler.simulation.report; "
        "assert 'matplotlib.pyplot' not in sys.modules; "
        "assert matplotlib.rcParams._get_backend_or_none() == backend"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_drawing_leaves_matplotlib_settings_as_they_were(run: RunData) -> None:
    before = dict(matplotlib.rcParams)
    for chart in CHARTS:
        chart(run)

    assert dict(matplotlib.rcParams) == before
