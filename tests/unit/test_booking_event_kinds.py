"""Booking event kinds are one enum shared by the scheduler and the reminder outbox."""

from __future__ import annotations

import os
import re
from pathlib import Path

from notifications import outbox
from scheduler.models import BookingEventKind

REPO_ROOT = Path(__file__).resolve().parents[2]
# The enum's own definition is the one place a kind's text may be written.
DEFINITION = REPO_ROOT / "scheduler" / "models.py"


def test_the_outbox_decides_on_every_kind_and_only_on_kinds():
    handled, ignored = set(outbox.HANDLED_KINDS), set(outbox.IGNORED_KINDS)
    assert not handled & ignored
    assert handled | ignored == set(BookingEventKind)
    for group in (
        outbox.MOVE_KINDS,
        outbox.OUTCOME_KINDS,
        outbox.READINESS_KINDS,
        outbox.SAME_DAY_REPLAN_KINDS,
    ):
        assert group <= handled
        assert all(isinstance(kind, BookingEventKind) for kind in group)


def _product_sources() -> list[Path]:
    """Every Python file of the product: not tests, migrations (they keep their own history),
    benchmarks or hidden folders such as the virtual environment."""
    skipped = {"tests", "migrations", "bench"}
    found = []
    for folder, folders, files in os.walk(REPO_ROOT):
        here = Path(folder)
        if here == REPO_ROOT:
            folders[:] = [f for f in folders if f not in skipped and not f.startswith(".")]
        found += [here / name for name in files if name.endswith(".py")]
    return sorted(found)


def test_no_code_spells_a_kind_as_a_string():
    values = "|".join(re.escape(kind.value) for kind in BookingEventKind)
    literal = re.compile(rf"""["']({values})["']""")
    found = []
    for path in _product_sources():
        if path == DEFINITION:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if literal.search(line):
                found.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert found == []
    assert REPO_ROOT / "notifications" / "outbox.py" in _product_sources()
