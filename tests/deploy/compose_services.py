"""The app services of docker-compose.yml run as local processes: their exact commands and
environments, with only what a machine without a container engine cannot give them replaced.

Compose's own interpolation is applied to the environment (`${VAR:-default}`, `${VAR:?error}`,
`${VAR}`); then the addresses of the data stores, the instance folder and the web port are
pointed at the test's own (they name the compose network's hosts and the image's paths).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# Where the image keeps local data and where the web service listens inside its container.
IMAGE_INSTANCE_DIR = "/app/instance"
CONTAINER_WEB_PORT = 5000
APP_SERVICES = ("migrate", "web", "worker", "beat")
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    """A `${VAR:?message}` whose variable is unset: Compose refuses to start with message."""


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's variable substitution for the forms the file uses."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = variables.get(name, "")
        if op == ":-":
            return current or arg
        if op == ":?":
            if not current:
                raise MissingVariable(f"{name}: {arg}")
            return current
        return current

    return _VARIABLE.sub(substitute, value)


def compose_services() -> dict[str, dict]:
    # safe_load resolves the YAML anchors and `<<` merge keys the file uses, as Compose does.
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def service_command(service: dict, variables: dict[str, str]) -> list[str]:
    command = service["command"]
    assert isinstance(command, list), "commands are written as lists (no shell in between)"
    return [interpolate(str(part), variables) for part in command]


def service_environment(service: dict, variables: dict[str, str]) -> dict[str, str]:
    return {
        name: interpolate(str(value), variables)
        for name, value in service.get("environment", {}).items()
    }


def healthcheck_command(service: dict) -> list[str]:
    """The healthcheck's test as an argument list (CMD) or a shell command (CMD-SHELL)."""
    test = service["healthcheck"]["test"]
    kind, *rest = test
    if kind == "CMD":
        return list(rest)
    assert kind == "CMD-SHELL", test
    return ["sh", "-c", rest[0]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_path(argument: str, instance_dir: Path) -> str:
    """An argument naming the image's instance folder, pointed at the test's."""
    return argument.replace(IMAGE_INSTANCE_DIR, str(instance_dir))


def local_web_port(argument: str, port: int) -> str:
    """The container's web port (bound on all its interfaces) as the test's loopback port."""
    return argument.replace(f"0.0.0.0:{CONTAINER_WEB_PORT}", f"127.0.0.1:{port}").replace(
        f"127.0.0.1:{CONTAINER_WEB_PORT}/", f"127.0.0.1:{port}/"
    )


def process_environment(service_env: dict[str, str], **overrides: str) -> dict[str, str]:
    """The service's environment on top of this machine's PATH and locale, nothing else of the
    developer's shell (their DATABASE_URL or TWILIO_* must not leak in)."""
    base = {
        name: os.environ[name]
        for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
        if name in os.environ
    }
    # The image's tools are on PATH; here they are this interpreter's virtualenv's.
    base["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", "")])
    base["PYTHONUNBUFFERED"] = "1"
    return {**base, **service_env, **overrides}


@dataclass
class ServiceProcesses:
    """Started service processes, each in a process group of its own; all stopped at the end."""

    log_dir: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            self.running[name] = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def report(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)[-3000:]}" for name in self.running)

    def stop_all(self) -> None:
        for popen in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGTERM)
        for popen in self.running.values():
            try:
                popen.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(10)
            # A worker's pool children share its group: make sure none is left behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
