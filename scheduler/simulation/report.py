"""report.html: the run's summary as a self-contained page."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path


def write_report(out_dir: Path) -> Path:
    """Write report.html from the run's summary.json and return its path."""
    summary = json.loads((Path(out_dir) / "summary.json").read_text())
    rows = "\n".join(
        f"<tr><th>{escape(key)}</th><td>{escape(json.dumps(value))}</td></tr>"
        for key, value in summary.items()
    )
    title = escape(f"{summary.get('scenario_name', 'Simulation')}: {summary.get('policy', '')}")
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title></head><body><h1>{title}</h1>"
        f"<table>{rows}</table></body></html>\n"
    )
    path = Path(out_dir) / "report.html"
    path.write_text(page)
    return path
