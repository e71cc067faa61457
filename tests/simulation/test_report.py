"""report.html and the comparison fragment, checked against the run files they are built from."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markupsafe import Markup

from scheduler.simulation.report import (
    SUMMARY_FIGURES,
    comparison_html,
    format_value,
    write_report,
)
from scheduler.simulation.runs import RunData, RunFilesError, load_run
from tests.simulation.run_files import RunFiles, example_summary

SVG_ELEMENT = re.compile(r"<svg\b.*?</svg>", re.DOTALL)


class PageReader(HTMLParser):
    """Collects the rows of every table (cell texts by table class) and the title."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.title = ""
        self.h1 = ""
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._row: list[str] = []
        self._in: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in.append(tag)
        if tag == "table":
            self._table = dict(attrs).get("class") or ""
            self.tables[self._table] = []
        elif tag == "tr":
            self._row = []
        elif tag in {"td", "th"}:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if self._in and self._in[-1] == tag:
            self._in.pop()
        if tag in {"td", "th"} and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append(self._row)
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in and self._in[-1] == "title" and "svg" not in self._in:
            self.title += data
        if self._in and self._in[-1] == "h1":
            self.h1 += data


def read_page(html: str) -> PageReader:
    reader = PageReader()
    reader.feed(html)
    reader.close()
    return reader


def summary_rows(html: str) -> dict[str, str]:
    """Figure label -> value; group headings are one-cell rows."""
    return {row[0]: row[1] for row in read_page(html).tables["summary"][1:] if len(row) == 2}


def group_headings(rows: list[list[str]]) -> list[str]:
    return [row[0] for row in rows[1:] if len(row) == 1]


def assert_self_contained(html: str) -> None:
    """No script, no outside address, nothing fetched."""
    assert "<script" not in html.lower()
    assert not re.search(r"\b(src|href|action)\s*=\s*[\"']?(https?:|//)", html, re.IGNORECASE)
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", html) and "@import" not in html
    assert not re.search(r"<(link|img|iframe|object|embed|base)\b", html, re.IGNORECASE)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return RunFiles().write(tmp_path / "run")


def test_report_states_the_run_and_its_figures(out_dir: Path) -> None:
    path = write_report(out_dir)

    assert path == out_dir / "report.html"
    html = path.read_text(encoding="utf-8")
    page = read_page(html)
    summary = example_summary()
    assert page.title == f"Simulation report: {summary['scenario_name']}"
    assert page.h1 == page.title
    facts = html[html.index('<dl class="run-facts">') : html.index("</dl>")]
    assert "from 4 January 2027 to 17 January 2027" in facts
    assert "(14 days; the first 2 are warm-up and not measured)" in facts
    assert "Online: each course is booked at the first-ranked proposal" in facts
    assert "<dd>7</dd>" in facts and "Australia/Sydney" in facts
    rows = summary_rows(html)
    assert rows["Median wait from ready to first fraction"] == "2 days"
    assert rows["Nine in ten courses started within"] == "3.4 days"
    assert rows["Longest wait from ready to first fraction"] == "4 days"
    assert rows["Booked in full within the protocol at the first attempt"] == "80 %"
    assert rows["Courses completed within the protocol's overall time"] == "75 %"
    assert rows["Use of SBRT linac time"] == "4.4 %"
    assert rows["Courses measured"] == "5"
    assert rows["Reschedules per course"] == "0.5"
    assert rows["Downtime: fractions moved to another day"] == "2"
    assert rows["Treatment time outside opening hours"] == "0 minutes"
    assert group_headings(page.tables["summary"]) == [
        "What patients experienced",
        "Linac time",
        "Changes after booking",
    ]
    assert path.stat().st_mode & 0o777 == 0o644


def test_every_summary_figure_in_the_file_is_in_the_table(out_dir: Path) -> None:
    rows = summary_rows(write_report(out_dir).read_text())
    summary = example_summary()

    for figure in SUMMARY_FIGURES:
        shown = format_value(figure, figure.value(summary))
        assert rows[figure.label] == " ".join(shown.split())  # as a reader sees the spaces
    assert len(rows) == len(SUMMARY_FIGURES)


def test_figures_follow_the_summary_file(tmp_path: Path) -> None:
    summary = example_summary(wait_days={"median": 1, "p90": 12.25, "max": 30})
    summary["within_14_days_share"] = 0.9123
    summary["overtime_minutes"] = 1234
    del summary["preferred_window_share"]

    rows = summary_rows(write_report(RunFiles(summary=summary).write(tmp_path)).read_text())

    assert rows["Median wait from ready to first fraction"] == "1 day"
    assert rows["Nine in ten courses started within"] == "12.2 days"
    assert rows["Started within 14 days of being ready"] == "91.2 %"
    assert rows["Treatment time outside opening hours"] == "1,234 minutes"
    assert "Treated in the patient's preferred time of day" not in rows


def test_report_is_self_contained_with_three_valid_charts(out_dir: Path) -> None:
    html = write_report(out_dir).read_text()

    assert_self_contained(html)
    svgs = SVG_ELEMENT.findall(html)
    assert len(svgs) == 3
    ids: list[str] = []
    for svg in svgs:
        root = ET.fromstring(svg)
        ids += [element.get("id") for element in root.iter() if element.get("id")]
        assert "style" not in svg.split(">", 1)[0]
    assert len(ids) == len(set(ids))
    assert "@media print" in html and "<style>" in html
    assert "How to read this" in html and "Definitions" in html


def test_names_are_escaped(tmp_path: Path) -> None:
    summary = example_summary(scenario_name='<script>alert("x")</script> & <b>co</b>')
    html = write_report(RunFiles(summary=summary).write(tmp_path)).read_text()

    assert "<script>" not in html and "<b>co</b>" not in html
    assert "&lt;script&gt;" in html
    assert read_page(html).h1 == 'Simulation report: <script>alert("x")</script> & <b>co</b>'
    assert_self_contained(html)


def test_the_same_run_gives_the_same_report_bytes(tmp_path: Path) -> None:
    first = write_report(RunFiles().write(tmp_path / "first")).read_bytes()
    second = write_report(RunFiles().write(tmp_path / "second")).read_bytes()

    assert first == second
    assert not list((tmp_path / "first").glob(".report-*"))  # no temporary file left behind


def test_a_missing_file_stops_the_report_with_its_name(out_dir: Path) -> None:
    (out_dir / "weekly.csv").unlink()

    with pytest.raises(RunFilesError, match="weekly.csv is missing"):
        write_report(out_dir)
    assert not (out_dir / "report.html").exists()


def two_runs(tmp_path: Path) -> list[tuple[str, RunData]]:
    today = load_run(RunFiles().write(tmp_path / "today"))
    changed = example_summary(
        scenario_name="Saturdays open",
        wait_days={"median": 4, "p90": 3.4, "max": 1},
        within_14_days_share=0.95,
        sbrt_utilisation=0.0944,
        overtime_minutes=90,
        reschedules_per_course=0.25,
    )
    saturdays = load_run(RunFiles(summary=changed).write(tmp_path / "saturdays"))
    return [("Today <now>", today), ("Saturdays & more", saturdays)]


def test_comparison_shows_both_runs_and_their_differences(tmp_path: Path) -> None:
    fragment = comparison_html(two_runs(tmp_path))

    assert isinstance(fragment, Markup)
    table = read_page(str(fragment)).tables["sim-compare"]
    assert table[0] == [
        "Figure",
        "Today <now>",
        "Saturdays & more",
        "Difference: Saturdays & more against Today <now>",
    ]
    assert group_headings(table) == [
        "What patients experienced",
        "Linac time",
        "Changes after booking",
    ]
    rows = {row[0]: row[1:] for row in table[1:] if len(row) > 1}
    assert rows["Median wait from ready to first fraction"] == [
        "2 days",
        "4 days",
        "+2 days (worse)",
    ]
    assert rows["Nine in ten courses started within"] == ["3.4 days", "3.4 days", "no change"]
    assert rows["Longest wait from ready to first fraction"] == [
        "4 days",
        "1 day",
        "\u22123 days (better)",
    ]
    assert rows["Started within 14 days of being ready"] == [
        "100 %",
        "95 %",
        "\u22125 points (worse)",
    ]
    assert rows["Use of SBRT linac time"] == ["4.4 %", "9.4 %", "+5 points"]
    assert rows["Treatment time outside opening hours"] == [
        "0 minutes",
        "90 minutes",
        "+90 minutes (worse)",
    ]
    assert rows["Reschedules per course"] == ["0.5", "0.25", "\u22120.25 (better)"]


def test_comparison_is_an_embeddable_fragment(tmp_path: Path) -> None:
    fragment = str(comparison_html(two_runs(tmp_path)))
    page = read_page(fragment)

    assert_self_contained(fragment)
    # Embedded in pages whose CSP forbids inline styles: classes only.
    assert all("style" not in attrs for _, attrs in page.tags)
    assert all(tag not in {"style", "html", "body", "head"} for tag, _ in page.tags)
    assert "Today &lt;now&gt;" in fragment and "Saturdays &amp; more" in fragment
    svgs = SVG_ELEMENT.findall(fragment)
    assert len(svgs) == 3
    ids = [e.get("id") for svg in svgs for e in ET.fromstring(svg).iter() if e.get("id")]
    assert len(ids) == len(set(ids))
    used = {cls for _, attrs in page.tags for cls in (attrs.get("class") or "").split()}
    stylesheet = (Path(__file__).parents[2] / "web/static/simulation.css").read_text()
    assert all(f".{cls}" in stylesheet for cls in used if cls.startswith("sim-"))


def test_comparison_needs_two_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least two runs"):
        comparison_html(two_runs(tmp_path)[:1])


def test_runs_may_be_given_one_by_one_and_are_then_labelled_by_scenario(tmp_path: Path) -> None:
    (_, today), (_, saturdays) = two_runs(tmp_path)
    same = load_run(RunFiles().write(tmp_path / "same scenario"))

    header = read_page(str(comparison_html(today, saturdays))).tables["sim-compare"][0]
    assert header[1:3] == [example_summary()["scenario_name"], "Saturdays open"]
    header = read_page(str(comparison_html(today, same))).tables["sim-compare"][0]
    name = example_summary()["scenario_name"]
    assert header[1:3] == [f"{name} (1)", f"{name} (2)"]
    assert read_page(str(comparison_html(("A", today), ("B", same)))).tables["sim-compare"][0][
        1:3
    ] == ["A", "B"]
