"""deploy/Caddyfile, read by Caddy itself: valid, serving DOMAIN over TLS in front of web."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
CADDYFILE = REPO_ROOT / "deploy" / "Caddyfile"
DOMAIN = "clinic.example.org"


def _caddy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("caddy")
    if binary is None:
        unavailable("caddy is not installed")
    # Its data and configuration folders (certificates, autosave) stay in the test's own.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "DOMAIN": DOMAIN,
    }
    return subprocess.run(
        [binary, *args, "--adapter", "caddyfile", "--config", str(CADDYFILE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_caddy_accepts_the_configuration(tmp_path: Path) -> None:
    result = _caddy(tmp_path, "validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid configuration" in result.stdout + result.stderr
    # Caddy warns about directives that do nothing or are misplaced: there are none.
    assert '"level":"warn"' not in result.stderr, result.stderr


@pytest.fixture
def adapted(tmp_path: Path) -> dict:
    result = _caddy(tmp_path, "adapt")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_domain_is_served_over_https_only_and_forwarded_to_web(adapted: dict) -> None:
    (server,) = adapted["apps"]["http"]["servers"].values()
    assert server["listen"] == [":443"]
    (route,) = server["routes"]
    assert route["match"] == [{"host": [DOMAIN]}]
    handlers = [h for sub in route["handle"][0]["routes"] for h in sub["handle"]]
    (proxy,) = [h for h in handlers if h["handler"] == "reverse_proxy"]
    assert proxy["upstreams"] == [{"dial": "web:5000"}]
    # No automatic-HTTPS opt-outs: certificates and the http-to-https redirect stay on.
    assert "automatic_https" not in server


def test_no_access_log_and_a_private_admin_endpoint(adapted: dict) -> None:
    # Request paths hold patient link and feed tokens: Caddy must not log them.
    assert "logs" not in next(iter(adapted["apps"]["http"]["servers"].values()))
    assert "logging" not in adapted
    assert adapted["admin"]["listen"] == "127.0.0.1:2019"
