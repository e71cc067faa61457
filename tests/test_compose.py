"""docker-compose.yml is a valid Compose file and keeps the production stack's invariants.

Checked without a Docker engine: the schema from the Compose specification, then facts read
from the file itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from config import load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# The shared folder sits beside the checkout (CI copies it there).
COMPOSE_SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "compose-spec.json"
ONE_SHOT = {"migrate"}
READY_CONDITIONS = {"service_healthy", "service_completed_successfully"}


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    # safe_load resolves the YAML anchors and `<<` merge keys the file uses, as Compose does.
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def test_compose_file_matches_the_compose_schema() -> None:
    if not COMPOSE_SCHEMA.exists():
        reason = f"Compose schema not found at {COMPOSE_SCHEMA}"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--schemafile",
            str(COMPOSE_SCHEMA),
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _depends_on(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        # The short list form means "started", which waits for nothing.
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def _command(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def test_exactly_one_beat(services: dict[str, dict]) -> None:
    # Every beat enqueues every tick: a second one would double each dispatch.
    beats = [name for name, svc in services.items() if " beat" in f" {_command(svc)} "]
    assert beats == ["beat"]
    beat = services["beat"]
    assert beat.get("deploy", {}).get("replicas", 1) == 1
    assert beat.get("scale", 1) == 1


def test_migrate_is_one_shot_and_gates_the_app(services: dict[str, dict]) -> None:
    migrate = services["migrate"]
    assert _command(migrate) == "alembic upgrade head"
    assert migrate.get("restart", "no") == "no"
    assert _depends_on(migrate)["postgres"]["condition"] == "service_healthy"
    for name in ("web", "worker", "beat"):
        condition = _depends_on(services[name])["migrate"]["condition"]
        assert condition == "service_completed_successfully", name


def test_long_running_services_have_or_await_health(services: dict[str, dict]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        deps = _depends_on(service)
        awaits_ready = bool(deps) and all(
            dep.get("condition") in READY_CONDITIONS for dep in deps.values()
        )
        assert "healthcheck" in service or awaits_ready, name


def test_secret_key_is_required_not_defaulted() -> None:
    # Compose refuses to start without it, instead of running with a guessable key.
    assert "${SECRET_KEY:?" in COMPOSE_FILE.read_text()


def _compose_defaults(environment: dict[str, str]) -> dict[str, str]:
    """The environment Compose gives the app when none of the variables is set."""
    resolved = {}
    for name, value in environment.items():
        match = re.fullmatch(r"\$\{[A-Z_]+(?::-(.*))?\}", str(value))
        if match:
            resolved[name] = match.group(1) or ""
        else:
            resolved[name] = str(value)
    return resolved


def test_session_cookie_is_secure_by_default(services: dict[str, dict], tmp_path: Path) -> None:
    env = _compose_defaults(services["web"]["environment"])
    env["SECRET_KEY"] = "set-by-the-operator"
    env["INSTANCE_DIR"] = str(tmp_path)
    settings = load_settings(env)
    assert settings.session_cookie_secure
    assert settings.session_idle_minutes == 30 and settings.session_max_hours == 12
