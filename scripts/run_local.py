"""`make run`: migrate, load the demo department, then run web, worker and beat together.

Refuses to start anything when the web port is taken or another run uses the same instance
folder (a second beat would send every reminder twice). The address and the demo credentials are
printed last, once the web app answers and the worker and beat are up, so they are not lost in
the start-up banners. Ctrl-C stops the three processes and exits quietly.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

import honcho.manager
from honcho.environ import parse_procfile
from honcho.manager import Manager
from honcho.printer import Message, Printer

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 5000
# Lines that say a process is up (web is up when /healthz answers).
READY_MARKERS = {"worker": " ready.", "beat": "beat: Starting"}
READY_TIMEOUT_SECONDS = 120.0
HEALTH_PATH = "/healthz"
# How long the processes have to stop after SIGTERM before they are killed. A worker finishes
# its running tasks first (compose gives it 30 s too); honcho's own 5 s cut it off mid-task.
STOP_GRACE_SECONDS = 30
# Honcho's return codes when it stopped the processes because it was told to.
STOPPED_ON_REQUEST = {130, 143}
# Printed without honcho's time and name prefix.
ANNOUNCEMENT = "\x00announcement"


class StopInOrder:
    """How the processes are stopped: SIGTERM to each process alone, so it shuts down its own
    children in order (gunicorn its workers, celery its pool) instead of having them all
    killed at once under it; SIGKILL to the whole group only when it does not stop in time."""

    def terminate(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)

    def kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


class Refused(Exception):
    """Start-up refused before anything was started; the message says why."""


def web_port(env: dict[str, str]) -> int:
    raw = env.get("PORT") or str(DEFAULT_PORT)
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise Refused(f"PORT must be a port number from 1 to 65535 (got {raw!r})")
    return int(raw)


def check_port_free(port: int) -> None:
    """Bind the port as gunicorn will (SO_REUSEADDR, loopback): only a listener refuses it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise Refused(
                f"port {port} is already in use (is the product already running?); "
                f"stop that or choose another port, e.g. PORT={port + 1} make run"
            ) from None


def lock_instance(instance_dir: Path) -> IO[str]:
    """Hold a lock on the instance folder for this run's lifetime (released when it exits)."""
    instance_dir.mkdir(parents=True, exist_ok=True)
    handle = (instance_dir / "run.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise Refused(
            f"another run is using {instance_dir} (its beat would send every reminder twice); "
            "stop it first"
        ) from None
    return handle


def run_environment(port: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PORT"] = str(port)
    # Links in messages and the printed address follow the port unless set explicitly.
    env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
    if not env["PUBLIC_BASE_URL"]:
        env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{port}"
    # Procfile lines run through the shell: this interpreter's tools come first on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Log lines as text for a terminal (production logs JSON), unless LOG_FORMAT says otherwise.
    env["LOG_FORMAT"] = env.get("LOG_FORMAT") or "text"
    return env


def prepare_database(env: dict[str, str]) -> str:
    """Migrate and load the demo department; return what seeding printed (the credentials)."""
    bin_dir = Path(sys.executable).parent
    alembic = [str(bin_dir / "alembic"), "upgrade", "head"]
    subprocess.run(alembic, cwd=PROJECT_ROOT, env=env, check=True)
    seeded = subprocess.run(
        [str(bin_dir / "flask"), "--app", "web", "seed-demo"],
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return seeded.stdout


class WatchingPrinter(Printer):
    """Honcho's printer, noting when each process has printed its ready line."""

    def __init__(self, output: IO[str]) -> None:
        super().__init__(output)
        self.ready = {name: threading.Event() for name in READY_MARKERS}
        # Set when the web app's access log shows a health check: the announcement waits for
        # the line of its own request, so that line is not printed after it.
        self.health_logged = threading.Event()

    def write(self, message: Message) -> None:
        if message.name == ANNOUNCEMENT:
            print(message.data, file=self.output, flush=True)
            return
        data = message.data if isinstance(message.data, bytes) else b""
        marker = READY_MARKERS.get(message.name or "")
        if marker and marker.encode() in data:
            self.ready[message.name].set()
        if message.name == "web" and HEALTH_PATH.encode() in data:
            self.health_logged.set()
        super().write(message)


def web_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=10
        ) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def announce_when_ready(
    manager: Manager, printer: WatchingPrinter, port: int, seeded: str, stopping: threading.Event
) -> None:
    """Queue the address and credentials behind the start-up output, once all three are up."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline and not stopping.is_set():
        if all(event.is_set() for event in printer.ready.values()):
            printer.health_logged.clear()
            if web_answers(port):
                printer.health_logged.wait(2.0)
                break
        time.sleep(0.25)
    else:
        if stopping.is_set():
            return
        seeded = "Not all processes reported ready in time; see the output above.\n" + seeded
    rule = "-" * 72
    text = f"{rule}\n{seeded.rstrip()}\nCtrl-C stops web, worker and beat.\n{rule}"
    manager.events.put(Message("line", text, datetime.now(), ANNOUNCEMENT, None))


@contextlib.contextmanager
def terminal_to_ourselves() -> Iterator[None]:
    """Take the terminal's foreground for this process alone while it runs.

    Ctrl-C signals the terminal's whole foreground process group. Left there, `make` would get
    it too and end the run with its own "*** Interrupt" line; alone in the foreground, only this
    process hears it and stops the others in order. The terminal goes back when it exits.
    """
    try:
        fd = sys.stdin.fileno()
        if not os.isatty(fd):
            yield
            return
        previous = os.tcgetpgrp(fd)
    except (OSError, ValueError):
        yield
        return
    # Changing the foreground from outside it would stop us with SIGTTOU.
    old_handler = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)
        os.tcsetpgrp(fd, os.getpgrp())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(fd, previous)
        signal.signal(signal.SIGTTOU, old_handler)


def main() -> int:
    # Every check before anything starts: a refused run leaves nothing running behind it.
    try:
        port = web_port(dict(os.environ))
        check_port_free(port)
        instance_dir = Path(os.environ.get("INSTANCE_DIR") or PROJECT_ROOT / "instance")
        lock = lock_instance(instance_dir)
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with lock, terminal_to_ourselves():
        return run(port, run_environment(port))


def run(port: int, env: dict[str, str]) -> int:
    try:
        seeded = prepare_database(env)
    except subprocess.CalledProcessError as exc:
        print(f"error: {exc.cmd[0]} failed (exit code {exc.returncode})", file=sys.stderr)
        return 1
    procfile = parse_procfile((PROJECT_ROOT / "Procfile").read_text())
    printer = WatchingPrinter(sys.stdout)
    manager = Manager(printer)
    manager._procmgr = StopInOrder()  # honcho's own signals each process's whole group
    honcho.manager.KILL_WAIT = STOP_GRACE_SECONDS  # read by Manager.loop() when stopping
    for name, command in procfile.processes.items():
        manager.add_process(name, command, env=env, cwd=str(PROJECT_ROOT))
    stopping = threading.Event()
    announcer = threading.Thread(
        target=announce_when_ready,
        args=(manager, printer, port, seeded, stopping),
        daemon=True,
    )
    announcer.start()
    manager.loop()
    stopping.set()
    returncode = manager.returncode or 0
    # Stopped with Ctrl-C (or SIGTERM): everything shut down as asked, which is success.
    return 0 if returncode in STOPPED_ON_REQUEST else returncode


if __name__ == "__main__":
    # The processes are in sessions of their own (honcho starts them so): Ctrl-C reaches only
    # this process, which stops them in order. Before they start (migrating, seeding) it ends
    # the run without a traceback.
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
