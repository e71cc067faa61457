"""The scenarios shipped in the repository are valid: `make simulate` and the bench run them."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.simulation import load_scenario

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.json"))


def test_the_repository_ships_scenarios() -> None:
    assert {p.name for p in SCENARIOS} >= {"example.json", "year.json", "year-busy.json"}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_a_shipped_scenario_loads(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario["days"] > scenario["warmup_days"]
