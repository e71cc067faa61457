"""PATIENT_LINK_DAYS_AFTER_LAST_FRACTION: a week by default, refused outside 0 to 90."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import load_settings


def _settings(tmp_path: Path, **env: str):
    return load_settings({"SECRET_KEY": "k", "INSTANCE_DIR": str(tmp_path), **env})


def test_links_last_a_week_after_the_last_session_by_default(tmp_path: Path) -> None:
    assert _settings(tmp_path).patient_link_days_after_last_fraction == 7
    days = _settings(tmp_path, PATIENT_LINK_DAYS_AFTER_LAST_FRACTION="0")
    assert days.patient_link_days_after_last_fraction == 0
    days = _settings(tmp_path, PATIENT_LINK_DAYS_AFTER_LAST_FRACTION="30")
    assert days.patient_link_days_after_last_fraction == 30


@pytest.mark.parametrize("value", ["-1", "91", "a week"])
def test_nonsense_is_refused_at_start(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError, match="from 0 to 90"):
        _settings(tmp_path, PATIENT_LINK_DAYS_AFTER_LAST_FRACTION=value)
