"""The compose stack's app services, run as the processes compose would start (no container
engine runs on the test machines): migrate, then web, worker and beat on a fresh PostgreSQL
database and a Redis server of the test's own, answering their health endpoints and the
healthchecks written in docker-compose.yml, with the TLS proxy (Caddy, deploy/Caddyfile) in
front."""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_ADMIN_URL, port_open, unavailable
from tests.deploy.compose_services import (
    APP_SERVICES,
    REPO_ROOT,
    ServiceProcesses,
    compose_services,
    free_port,
    healthcheck_command,
    local_path,
    local_web_port,
    process_environment,
    service_command,
    service_environment,
)
from tests.integration.harness import start_redis

# What an operator puts in .env: a strong key and the proxy's https address.
OPERATOR_VARIABLES = {
    "SECRET_KEY": "compose-test-" + "k" * 40,
    "PUBLIC_BASE_URL": "https://clinic.example.org",
    "DOMAIN": "clinic.example.org",
}
CADDYFILE = REPO_ROOT / "deploy" / "Caddyfile"
START_TIMEOUT = 90.0


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if body.startswith(b"{") else {}


@pytest.fixture(scope="module")
def fresh_database() -> Iterator[str]:
    """An empty PostgreSQL database: the migrate service builds its schema."""
    if not port_open(POSTGRES_ADMIN_URL, 5432):
        unavailable(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}")
    name = f"sbrt_compose_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@dataclass
class Stack:
    services: dict[str, dict]
    processes: ServiceProcesses
    envs: dict[str, dict[str, str]]
    web_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def healthcheck(self, name: str) -> list[str]:
        """The service's healthcheck as compose runs it in the container (the web one with the
        container's port replaced by the test's)."""
        return [
            local_web_port(part, self.web_port) for part in healthcheck_command(self.services[name])
        ]

    def run_healthcheck(self, name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.healthcheck(name),
            env=self.envs[name],
            cwd=self.processes.log_dir,
            capture_output=True,
            text=True,
            timeout=30,
        )


def _wait_for(check, what: str, processes: ServiceProcesses, timeout: float = START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, popen in processes.running.items():
            if popen.poll() is not None:
                raise AssertionError(f"{name} exited ({popen.returncode})\n{processes.report()}")
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout:.0f} s\n{processes.report()}")


@pytest.fixture(scope="module")
def stack(fresh_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """migrate run to completion, then web, worker and beat started, web answering /healthz."""
    tmp_path = tmp_path_factory.mktemp("compose")
    redis_server = start_redis(tmp_path)
    if redis_server is None:
        unavailable("redis-server is not installed")
    services = compose_services()
    instance_dir = tmp_path / "instance"
    (instance_dir / "simulations").mkdir(parents=True)
    web_port = free_port()
    processes = ServiceProcesses(tmp_path)
    envs = {
        name: process_environment(
            service_environment(services[name], OPERATOR_VARIABLES),
            # The compose network's hosts and the image's folder, as this machine has them.
            DATABASE_URL=fresh_database,
            BROKER_URL=redis_server.url,
            INSTANCE_DIR=str(instance_dir),
            # Ticks every 2 s instead of 30, so the worker's heartbeat is fresh within seconds.
            DISPATCH_INTERVAL_SECONDS="2",
        )
        for name in APP_SERVICES
    }

    def command(name: str) -> list[str]:
        return [
            local_web_port(local_path(part, instance_dir), web_port)
            for part in service_command(services[name], OPERATOR_VARIABLES)
        ]

    stack = Stack(services, processes, envs, web_port)
    try:
        migrate = subprocess.run(
            command("migrate"), env=envs["migrate"], capture_output=True, text=True, timeout=120
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        for name in ("web", "worker", "beat"):
            processes.start(name, command(name), envs[name])

        def healthy() -> bool:
            try:
                return _get(f"{stack.base_url}/healthz")[0] == 200
            except (urllib.error.URLError, OSError):
                return False

        _wait_for(healthy, "web answering /healthz", processes)
        yield stack
    finally:
        processes.stop_all()
        redis_server.kill()
    for name in ("web", "worker", "beat"):
        assert "Traceback" not in processes.log(name), processes.report()


def test_every_app_service_runs_in_production_mode(stack: Stack) -> None:
    for name, env in stack.envs.items():
        assert env["APP_ENV"] == "production", name
        assert env["SESSION_COOKIE_SECURE"] == "on", name
        assert env["PUBLIC_BASE_URL"] == OPERATOR_VARIABLES["PUBLIC_BASE_URL"], name


def test_web_answers_healthz_and_its_healthcheck(stack: Stack) -> None:
    status, body = _get(f"{stack.base_url}/healthz")
    assert status == 200 and body["status"] == "ok"
    result = stack.run_healthcheck("web")
    assert result.returncode == 0, result.stdout + result.stderr


def test_web_is_ready_once_worker_and_beat_tick(stack: Stack) -> None:
    if _get(f"{stack.base_url}/readyz")[0] == 404:
        pytest.skip("this build has no /readyz")
    _wait_for(
        lambda: _get(f"{stack.base_url}/readyz")[0] == 200, "/readyz answering 200", stack.processes
    )


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_worker_and_beat_pass_their_healthchecks(stack: Stack, name: str) -> None:
    probe = subprocess.run(
        ["flask", "--app", "web", "health", "--help"],
        env=stack.envs[name],
        capture_output=True,
        timeout=60,
    )
    if probe.returncode != 0:
        pytest.skip("this build has no `flask health` command yet")
    _wait_for(
        lambda: stack.run_healthcheck(name).returncode == 0,
        f"the {name} healthcheck {stack.healthcheck(name)} passing",
        stack.processes,
    )


def _proxy_caddyfile(stack: Stack, http_port: int, https_port: int, admin_port: int) -> str:
    """deploy/Caddyfile as this machine can run it: the compose network's `web` host and the
    fixed ports (80, 443, the admin's 2019) become the test's; nothing else changes."""
    text = CADDYFILE.read_text()
    for container, local in (
        ("reverse_proxy web:5000", f"reverse_proxy 127.0.0.1:{stack.web_port}"),
        ("admin 127.0.0.1:2019", f"admin 127.0.0.1:{admin_port}"),
    ):
        assert container in text, container
        text = text.replace(container, local)
    # Ports of the test's own; the local CA's root is never added to this machine's trust store.
    options = f"\thttp_port {http_port}\n\thttps_port {https_port}\n\tskip_install_trust\n"
    return text.replace("{\n", "{\n" + options, 1)


def test_the_tls_proxy_serves_web_over_https(stack: Stack, tmp_path: Path) -> None:
    binary = shutil.which("caddy")
    if binary is None:
        unavailable("caddy is not installed")
    http_port, https_port, admin_port = free_port(), free_port(), free_port()
    config = tmp_path / "Caddyfile"
    config.write_text(_proxy_caddyfile(stack, http_port, https_port, admin_port))
    # `localhost` gets a certificate from Caddy's own local CA, as DOMAIN gets a public one.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "DOMAIN": "localhost",
    }
    stack.processes.start(
        "proxy", [binary, "run", "--adapter", "caddyfile", "--config", str(config)], env
    )
    root_ca = tmp_path / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def answers_over_tls() -> tuple[int, dict] | None:
        if not root_ca.exists():
            return None
        # Only Caddy's local CA is trusted: the certificate must be the one it issued.
        context = ssl.create_default_context(cafile=str(root_ca))
        try:
            with urllib.request.urlopen(
                f"https://localhost:{https_port}/healthz", timeout=5, context=context
            ) as response:
                return response.status, json.loads(response.read())
        except (urllib.error.URLError, OSError):
            return None

    try:
        status, body = _wait_for(
            answers_over_tls, "web answering through the TLS proxy", stack.processes
        )
        assert status == 200 and body["status"] == "ok"
        # Plain http is redirected to https, never served.
        connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        connection.request("GET", "/healthz", headers={"Host": "localhost"})
        response = connection.getresponse()
        assert response.status in (301, 308)
        assert response.getheader("Location") == "https://localhost/healthz"
        connection.close()
    finally:
        proxy = stack.processes.running.pop("proxy")
        proxy.terminate()
        proxy.wait(20)
