"""`make run`'s launcher (scripts/run_local.py) as a developer meets it: real processes, a real
terminal (a pseudo-terminal whose Ctrl-C signals its foreground process group, as a shell's
does), and the embedded SQLite setup in a throwaway instance folder."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.deploy.compose_services import free_port
from tests.integration.harness import app_environment

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = [sys.executable, str(REPO_ROOT / "scripts" / "run_local.py")]
START_TIMEOUT = 150.0
STOP_TIMEOUT = 60.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _environment(instance_dir: Path, port: int) -> dict[str, str]:
    # The embedded defaults: no database, broker or address of the developer's shell.
    return app_environment(INSTANCE_DIR=str(instance_dir), PORT=str(port), PYTHONUNBUFFERED="1")


def test_a_taken_port_refuses_the_run_before_anything_starts(tmp_path: Path) -> None:
    instance_dir = tmp_path / "instance"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = subprocess.run(
            LAUNCHER,
            env=_environment(instance_dir, port),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: port {port} is already in use (is the product already running?); "
        f"stop that or choose another port, e.g. PORT={port + 1} make run"
    )
    assert result.stdout == ""
    # Not even migrated: the instance folder was never made.
    assert not instance_dir.exists()


@pytest.mark.parametrize("port", ["abc", "0", "70000", "５０００"])
def test_a_port_that_is_not_a_port_number_is_refused(tmp_path: Path, port: str) -> None:
    env = {**_environment(tmp_path / "instance", 5000), "PORT": port}
    result = subprocess.run(
        LAUNCHER, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: PORT must be a port number from 1 to 65535 (got {port!r})"
    )
    assert not (tmp_path / "instance").exists()


def test_a_second_run_on_the_same_instance_folder_is_refused(tmp_path: Path) -> None:
    # Another port, the same data: its beat would dispatch every reminder a second time.
    instance_dir = tmp_path / "instance"
    instance_dir.mkdir()
    with (instance_dir / "run.lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = subprocess.run(
            LAUNCHER,
            env=_environment(instance_dir, free_port()),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: another run is using {instance_dir} ")
    assert sorted(path.name for path in instance_dir.iterdir()) == ["run.lock"]


class Terminal:
    """A command run as the foreground job of a pseudo-terminal; its output collected."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()

        def own_terminal() -> None:  # in the child: a new session with this terminal
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.popen = subprocess.Popen(
            command,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=REPO_ROOT,
            env=env,
            preexec_fn=own_terminal,
        )
        os.close(slave)
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO once every writer has gone
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    @property
    def output(self) -> str:
        text = b"".join(self._chunks).decode(errors="replace")
        return _ANSI.sub("", text).replace("\r\n", "\n")

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not printed within {timeout:.0f} s:\n{self.output}")
            time.sleep(0.2)

    def press_ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self._reader.join(5)
        os.close(self.master)


@pytest.fixture
def terminal_run(tmp_path: Path) -> Iterator[tuple[Terminal, int]]:
    port = free_port()
    # sh stands where `make` stands: if Ctrl-C reached it, it would never print the exit line.
    command = ["sh", "-c", f"{' '.join(LAUNCHER)}; echo launcher exit=$?"]
    terminal = Terminal(command, _environment(tmp_path / "instance", port))
    started: list[psutil.Process] = []
    try:
        yield terminal, port
    finally:
        with contextlib.suppress(psutil.Error):
            started = psutil.Process(terminal.popen.pid).children(recursive=True)
        terminal.close()
        for process in started:  # anything the run left behind after a failed test
            with contextlib.suppress(psutil.Error):
                process.kill()


def test_run_prints_the_address_last_and_stops_quietly_on_ctrl_c(
    terminal_run: tuple[Terminal, int],
) -> None:
    terminal, port = terminal_run
    address = f"http://127.0.0.1:{port}"
    terminal.wait_for("Ctrl-C stops web, worker and beat.", START_TIMEOUT)
    lines = terminal.output.splitlines()
    first_announced = lines.index(f"web: {address}")
    # The address, the docs and both demo logins, after every process's start-up banner.
    assert lines[first_announced + 1] == f"API docs: {address}/api/docs"
    assert lines[first_announced + 2].startswith("login (admin): admin@demo.example / ")
    assert lines[first_announced + 3].startswith("login (scheduler): scheduler@demo.example / ")
    for banner in (f"Listening at: {address}", " ready.", "beat: Starting"):
        positions = [i for i, line in enumerate(lines) if banner in line]
        assert positions and max(positions) < first_announced, banner

    # The links every process builds use the port: PUBLIC_BASE_URL followed it.
    shell = psutil.Process(terminal.popen.pid)
    processes = shell.children(recursive=True)
    commands = {" ".join(p.cmdline()) for p in processes}
    for program in ("gunicorn", "worker worker", "worker beat"):
        matching = [p for p in processes if program in " ".join(p.cmdline())]
        assert matching, (program, commands)
        for process in matching:
            assert process.environ()["PUBLIC_BASE_URL"] == address

    terminal.press_ctrl_c()
    terminal.wait_for("launcher exit=", STOP_TIMEOUT)
    output = terminal.output
    assert "launcher exit=0" in output, output[-3000:]
    for noise in ("Traceback", "KeyboardInterrupt", "ERROR/", "SIGKILL"):
        assert noise not in output, (noise, output[-3000:])
    for name in ("web", "worker", "beat"):
        assert f"{name} stopped (rc=0)" in output, output[-3000:]
    gone, alive = psutil.wait_procs(processes, timeout=10)
    assert alive == []
