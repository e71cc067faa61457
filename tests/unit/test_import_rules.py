"""The import rules stated in docstrings are enforced by ruff (pyproject.toml), not only said."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).with_name("ruff")


def _ruff(path: str, source: str) -> subprocess.CompletedProcess[str]:
    # Checked as if the file lived at ``path``, so per-file rules apply as to the real file.
    return subprocess.run(
        [str(RUFF), "check", "--no-cache", "--select", "TID251", "--stdin-filename", path, "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize(
    "path", ["scheduler/services.py", "notifications/sending.py", "web/views/patients.py"]
)
@pytest.mark.parametrize("source", ["import twilio\n", "from twilio.rest import Client\n"])
def test_twilio_is_refused_outside_its_two_modules(path: str, source: str) -> None:
    result = _ruff(path, source)
    assert result.returncode == 1
    assert "TID251" in result.stdout


@pytest.mark.parametrize("path", ["notifications/channels/twilio_sms.py", "web/webhooks.py"])
def test_the_sms_channel_and_the_webhooks_may_import_twilio(path: str) -> None:
    result = _ruff(path, "from twilio.rest import Client\n")
    assert result.returncode == 0, result.stdout
