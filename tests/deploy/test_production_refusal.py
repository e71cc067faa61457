"""In production mode migrate, web, worker and beat, started with docker-compose.yml's commands,
refuse unsafe settings at once: a non-zero exit and one error line, before connecting to anything
(the data store addresses here lead nowhere, so a process that went on would hang or retry)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.compose_services import (
    REPO_ROOT,
    compose_services,
    free_port,
    local_path,
    local_web_port,
    process_environment,
    service_command,
    service_environment,
)

OPERATOR_VARIABLES = {
    "SECRET_KEY": "refusal-test-" + "k" * 40,
    "PUBLIC_BASE_URL": "https://clinic.example.org",
    "DOMAIN": "clinic.example.org",
}
# Nothing listens on port 9 (discard) of loopback: a process that got as far as connecting
# would fail or retry there, never succeed.
NOWHERE = {
    "DATABASE_URL": "postgresql+psycopg://sbrt@127.0.0.1:9/sbrt",
    "BROKER_URL": "redis://127.0.0.1:9/0",
}
CASES = {
    "http-address": ({"PUBLIC_BASE_URL": "http://clinic.example.org"}, "PUBLIC_BASE_URL must be"),
    "no-secret-key": ({"SECRET_KEY": None}, "SECRET_KEY is not set"),
    "short-secret-key": ({"SECRET_KEY": "changeme"}, "SECRET_KEY is shorter than 32"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", ["migrate", "web", "worker", "beat"])
def test_service_refuses_unsafe_production_settings(name: str, case: str, tmp_path: Path) -> None:
    service = compose_services()[name]
    changes, problem = CASES[case]
    env = process_environment(
        service_environment(service, OPERATOR_VARIABLES), INSTANCE_DIR=str(tmp_path), **NOWHERE
    )
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)  # a deployment that does not go through compose's checks
        else:
            env[key] = value
    port = free_port()
    command = [
        local_web_port(local_path(part, tmp_path), port)
        for part in service_command(service, OPERATOR_VARIABLES)
    ]
    # From the checkout, as the image runs from /app (alembic.ini and migrations/ are there).
    result = subprocess.run(
        command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert errors[0].startswith("error: refusing to start with APP_ENV=production: ")
    assert problem in errors[0]
    assert "Traceback" not in output
    # Nothing was served or generated: no worker forked, no key written in its place.
    assert "Booting worker" not in output
    assert not (tmp_path / "secret_key").exists()
