"""Real Celery worker and beat processes: the health checks see each one stop on its own.

Beat stamps its own tick and a worker stamps its own heartbeat, so killing beat turns only the
beat check stale (the worker stays fresh), and killing the worker then turns the worker check
(and `flask health worker`, and /readyz) stale. A task that fails in the worker is recorded
for the System page, its message masked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import load_settings
from tests.integration.conftest import redis_broker  # noqa: F401 - a private Redis server
from tests.test_worker_process import REPO_ROOT, _stop, _tail
from web import create_app

BEAT_STALE = 4.0
WORKER_STALE = 5.0
START_TIMEOUT = 60.0


def _wait_for(what: str, condition: Callable[[], bool], timeout: float, report: Callable) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(report(f"{what} within {timeout:.0f} s"))


@pytest.mark.slow
def test_killed_worker_turns_stale_while_beat_stays_fresh(
    redis_broker: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    instance_dir = tmp_path / "instance"
    instance_dir.mkdir()
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "BROKER_URL": redis_broker,
        "SECRET_KEY": "test-secret-key-not-for-production",
        "INSTANCE_DIR": str(instance_dir),
        "DISPATCH_INTERVAL_SECONDS": "1",
        "HEALTH_BEAT_STALE_SECONDS": str(BEAT_STALE),
        "HEALTH_WORKER_STALE_SECONDS": str(WORKER_STALE),
    }
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO_ROOT, env=env, check=True, timeout=60, capture_output=True,
    )  # fmt: skip
    celery = [sys.executable, "-m", "celery", "-A", "worker"]
    commands = {
        "worker": [*celery, "worker", "--loglevel=INFO", "--concurrency=1",
                   "--hostname=health-test@%h", "--without-gossip",
                   "--without-mingle", "--without-heartbeat"],
        "beat": [*celery, "beat", "--loglevel=INFO",
                 f"--schedule={instance_dir / 'celerybeat-schedule'}"],
    }  # fmt: skip
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    settings = load_settings(env)
    app = create_app(settings)
    client = app.test_client()

    def health_cli(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "web", "health", name],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def report(problem: str) -> str:
        parts = [problem, f"readyz: {client.get('/readyz').json}"]
        for name, path in logs.items():
            exit_code = procs[name].poll() if name in procs else "not started"
            parts.append(f"--- {name} (exit {exit_code}) ---\n{_tail(path)}")
        return "\n".join(parts)

    try:
        for name, command in commands.items():
            with logs[name].open("wb") as log:
                procs[name] = subprocess.Popen(
                    command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip

        _wait_for(
            "both heartbeats fresh and /readyz ready",
            lambda: client.get("/readyz").status_code == 200,
            START_TIMEOUT,
            report,
        )
        checks = client.get("/readyz").json["checks"]
        assert checks["beat"]["figure"] <= BEAT_STALE and checks["worker"]["figure"] <= WORKER_STALE
        worker_ok, beat_ok = health_cli("worker"), health_cli("beat")
        assert worker_ok.returncode == 0, worker_ok.stderr
        assert worker_ok.stdout.startswith("worker: seen ")
        assert beat_ok.returncode == 0 and beat_ok.stdout.startswith("beat: ticked "), beat_ok

        # A task that fails in the worker is recorded, without what it was given.
        from worker import make_celery

        make_celery(settings).send_task(
            "scheduler.tasks.record_heartbeat", kwargs={"ana_example_at_mail": "+12125550123"}
        )
        engine = sa.create_engine(database_url)
        try:

            def failure_recorded() -> bool:
                with engine.connect() as conn:
                    return bool(
                        conn.execute(sa.text("SELECT count(*) FROM task_failures")).scalar()
                    )

            _wait_for("the failed task recorded", failure_recorded, 30, report)
            with engine.connect() as conn:
                row = conn.execute(
                    sa.text("SELECT task_name, exception_type, message FROM task_failures")
                ).one()
        finally:
            engine.dispose()
        assert row.task_name == "scheduler.tasks.record_heartbeat"
        assert row.exception_type == "TypeError"
        assert "ana_example_at_mail" not in row.message and "2125550123" not in row.message

        # Kill beat outright: only its own check goes stale, the worker keeps stamping.
        os.killpg(procs["beat"].pid, signal.SIGKILL)
        procs["beat"].wait(15)
        _wait_for(
            "/readyz 503 after beat was killed",
            lambda: client.get("/readyz").status_code == 503,
            BEAT_STALE + 20,
            report,
        )
        body = client.get("/readyz").json
        assert body["checks"]["beat"]["status"] == "fail", body
        assert body["reminders_stalled"] is True
        beat_down = health_cli("beat")
        assert beat_down.returncode == 1 and "beat: no tick for" in beat_down.stderr
        # Well past the worker's limit since beat's last tick: the worker's own timer holds.
        time.sleep(WORKER_STALE + 1)
        assert health_cli("worker").returncode == 0
        assert client.get("/readyz").json["checks"]["worker"]["status"] == "ok"

        # Now kill the worker outright (no warm shutdown): its check goes stale too.
        os.killpg(procs["worker"].pid, signal.SIGKILL)
        procs["worker"].wait(15)
        _wait_for(
            "the worker check failing after the worker was killed",
            lambda: client.get("/readyz").json["checks"]["worker"]["status"] == "fail",
            WORKER_STALE + 20,
            report,
        )
        worker_down = health_cli("worker")
        assert worker_down.returncode == 1
        assert "worker: no worker seen for" in worker_down.stderr
    finally:
        for proc in procs.values():
            _stop(proc)
