"""A real Celery worker process for the what-if tests: the same command `make worker` runs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO_ROOT

STOP_TIMEOUT = 15.0


def worker_environment(
    *, database_url: str, broker_url: str, instance_dir: Path, simulation_dir: Path
) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "BROKER_URL": broker_url,
        "SECRET_KEY": "test-secret-key-not-for-production",
        "INSTANCE_DIR": str(instance_dir),
        "SIMULATION_DIR": str(simulation_dir),
    }


@contextlib.contextmanager
def celery_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One worker (one pool process) consuming the default queue until the block ends."""
    command = [
        sys.executable, "-m", "celery", "-A", "worker", "worker", "--loglevel=INFO",
        "--concurrency=1", "--hostname=whatif-test@%h", "--without-gossip", "--without-mingle",
        "--without-heartbeat",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so the pool is reaped with it
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT)


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
