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
from tests.deploy.compose_services import MissingVariable, service_environment

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


OPERATOR_VARIABLES = {
    "SECRET_KEY": "set-by-the-operator-" + "x" * 32,
    "PUBLIC_BASE_URL": "https://clinic.example.org",
    "DOMAIN": "clinic.example.org",
}


@pytest.mark.parametrize("name", sorted(OPERATOR_VARIABLES))
def test_compose_refuses_to_start_without_each_operator_setting(
    services: dict[str, dict], name: str
) -> None:
    # No development default can stand in for these: Compose stops with the message instead.
    variables = {key: value for key, value in OPERATOR_VARIABLES.items() if key != name}
    with pytest.raises(MissingVariable, match=f"^{name}: set {name}"):
        for service in services.values():
            service_environment(service, variables)


@pytest.mark.parametrize("name", ["migrate", "web", "worker", "beat"])
def test_app_services_run_in_production_mode_with_secure_cookies(
    services: dict[str, dict], name: str, tmp_path: Path
) -> None:
    env = service_environment(services[name], OPERATOR_VARIABLES)
    assert env["APP_ENV"] == "production"
    settings = load_settings({**env, "INSTANCE_DIR": str(tmp_path)})
    assert settings.is_production
    assert settings.session_cookie_secure
    assert settings.public_base_url == "https://clinic.example.org"
    assert settings.session_idle_minutes == 30 and settings.session_max_hours == 12
    # Exactly the one proxy in front of web sets the forwarded headers.
    assert settings.trusted_proxies == 1


def test_session_cookie_cannot_be_turned_off_from_the_environment(
    services: dict[str, dict],
) -> None:
    # A fixed value, not ${SESSION_COOKIE_SECURE:-on}: an operator's shell cannot turn it off.
    assert services["web"]["environment"]["SESSION_COOKIE_SECURE"] == "on"


def test_only_the_tls_proxy_is_published(services: dict[str, dict]) -> None:
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}
    proxy = services["proxy"]
    assert {str(port).split(":")[0] for port in proxy["ports"]} == {"80", "443"}
    caddyfile_mount = next(v for v in proxy["volumes"] if v.endswith(":/etc/caddy/Caddyfile:ro"))
    assert (REPO_ROOT / caddyfile_mount.split(":")[0]).resolve() == (
        REPO_ROOT / "deploy" / "Caddyfile"
    )
    assert _depends_on(proxy)["web"]["condition"] == "service_healthy"


def test_caddy_serves_the_domain_and_forwards_to_web() -> None:
    caddyfile = (REPO_ROOT / "deploy" / "Caddyfile").read_text()
    assert "{$DOMAIN} {" in caddyfile
    assert "reverse_proxy web:5000" in caddyfile
    # Caddy writes no access log of its own: paths carry patient link and feed tokens.
    assert not re.search(r"^\s*log\b", caddyfile, re.MULTILINE)


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_worker_and_beat_are_checked_by_their_heartbeat(
    services: dict[str, dict], name: str
) -> None:
    assert services[name]["healthcheck"]["test"] == [
        "CMD",
        "flask",
        "--app",
        "web",
        "health",
        name,
    ]


def test_web_checks_its_settings_before_forking_workers(services: dict[str, dict]) -> None:
    assert "--config=python:web.gunicorn_conf" in services["web"]["command"]


def test_backups_run_only_when_asked(services: dict[str, dict]) -> None:
    backup = services["backup"]
    assert backup["profiles"] == ["backup"]
    assert backup["command"][0] == "/deploy/backup.sh"
    assert backup.get("restart") == "no"


def test_docker_build_context_leaves_out_local_data() -> None:
    ignored = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "node_modules", "instance", "web/static/vendor", ".env"} <= ignored
