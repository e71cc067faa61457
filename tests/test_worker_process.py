"""A real Celery worker and a real beat, as separate processes, write their heartbeat rows.

This is the end-to-end check of worker.py: broker settings, task discovery, the beat schedule
and the task's own database access, on both brokers we ship (Redis in production, SQLite
through kombu's SQLAlchemy transport for the embedded default).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parent.parent
START_AND_TICK_TIMEOUT = 40.0  # seconds for both processes to start and the first tick to land
STOP_TIMEOUT = 15.0


def _read_heartbeat(engine: sa.Engine, name: str = "worker") -> datetime | None:
    with engine.connect() as conn:
        try:
            value = conn.execute(
                sa.text("SELECT last_seen_at FROM worker_heartbeats WHERE name = :name"),
                {"name": name},
            ).scalar_one_or_none()
        except sa.exc.OperationalError:  # a writer holds the lock; ask again on the next poll
            return None
    if value is None:
        return None
    # SQLite hands back the stored text; the column is aware UTC by contract.
    stamp = datetime.fromisoformat(value) if isinstance(value, str) else value
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (SIGTERM), then kill the whole process group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)
    # The prefork pool's children live in the same session; never leave any behind.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(STOP_TIMEOUT)


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(params=["redis", "sqlite"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        # Skips (or fails under REQUIRE_SERVICES=1) when Redis is not reachable.
        return request.getfixturevalue("redis_url")
    return f"sqla+sqlite:///{tmp_path / 'broker.db'}"


@pytest.mark.slow
def test_worker_and_beat_record_heartbeat(broker_url: str, tmp_path: Path) -> None:
    instance_dir = tmp_path / "instance"
    instance_dir.mkdir()
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "BROKER_URL": broker_url,
        "SECRET_KEY": "test-secret-key-not-for-production",
        "INSTANCE_DIR": str(instance_dir),
        "DISPATCH_INTERVAL_SECONDS": "1",
    }

    # The same command `make migrate` runs, reading DATABASE_URL from the environment.
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
    )

    celery = [sys.executable, "-m", "celery", "-A", "worker"]
    commands = {
        "worker": [
            *celery,
            "worker",
            "--loglevel=INFO",
            "--concurrency=1",
            "--hostname=heartbeat-test@%h",
            # Gossip, mingle and event heartbeats talk to other workers; none are wanted here.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        "beat": [
            *celery,
            "beat",
            "--loglevel=INFO",
            f"--schedule={instance_dir / 'celerybeat-schedule'}",
        ],
    }
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    engine = sa.create_engine(database_url)
    started = datetime.now(UTC)
    try:
        for name, command in commands.items():
            with logs[name].open("wb") as log:
                procs[name] = subprocess.Popen(
                    command,
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, so _stop can reap the pool
                )

        def report(problem: str) -> str:
            parts = [problem]
            for name, path in logs.items():
                parts.append(f"--- {name} (exit {procs[name].poll()}) ---\n{_tail(path)}")
            return "\n".join(parts)

        # A first stamp, then a later one, from each: beat keeps scheduling (it stamps `beat`
        # as it publishes the tick) and the worker keeps stamping `worker`.
        seen: dict[str, list[datetime]] = {"beat": [], "worker": []}
        deadline = time.monotonic() + START_AND_TICK_TIMEOUT
        while min(map(len, seen.values())) < 2 and time.monotonic() < deadline:
            for name, proc in procs.items():
                assert proc.poll() is None, report(f"celery {name} exited early")
            for name, stamps in seen.items():
                stamp = _read_heartbeat(engine, name)
                if stamp is not None and (not stamps or stamp > stamps[-1]):
                    stamps.append(stamp)
            time.sleep(0.25)

        for name, stamps in seen.items():
            assert stamps, report(f"no {name} heartbeat within {START_AND_TICK_TIMEOUT:.0f} s")
            assert len(stamps) >= 2, report(f"the {name} heartbeat was never refreshed")
            assert started - timedelta(seconds=1) <= stamps[0] <= datetime.now(UTC)
    finally:
        for proc in procs.values():
            _stop(proc)
        engine.dispose()

    # A warm shutdown, not a kill: the worker finished cleanly (exit 0) when asked to stop.
    assert procs["worker"].returncode == 0, _tail(logs["worker"])
