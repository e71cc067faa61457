"""The web process as deployed (gunicorn with the redacting logger) keeps secret URLs out of its
access log."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import sqlalchemy as sa

from web.access_log import REDACTED, redact

REPO = Path(__file__).resolve().parent.parent
PATIENT_TOKEN = "Zq7TgK2mWv9PxL4c"
FEED_TOKEN = "Hk3_Fq9ZpL2mXw7RtY5vBn8cJd4sGa1e"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_redact_keeps_the_shape_of_every_secret_path() -> None:
    assert redact(f"GET /p/{PATIENT_TOKEN} HTTP/1.1") == f"GET /p/{REDACTED} HTTP/1.1"
    assert redact(f"/p/{PATIENT_TOKEN}/confirm") == f"/p/{REDACTED}/confirm"
    assert redact(f"/p/{PATIENT_TOKEN}/schedule.ics") == f"/p/{REDACTED}/schedule.ics"
    assert redact(f"/feeds/linac/{FEED_TOKEN}.ics") == f"/feeds/linac/{REDACTED}.ics"
    # A query's values can be a patient's name: the keys stay, the values go.
    assert (
        redact("https://clinic.example.org/p/abc?x=1&q=Jane+Doe")
        == f"https://clinic.example.org/p/{REDACTED}?x={REDACTED}&q={REDACTED}"
    )
    assert redact("/patients/12 /calendar/week") == "/patients/12 /calendar/week"


def test_gunicorn_access_log_has_no_tokens(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    port = _free_port()
    log = tmp_path / "access.log"
    env = os.environ | {
        "DATABASE_URL": database_url,
        "BROKER_URL": "memory://",
        "SECRET_KEY": "test-secret-key-not-for-production",
        "INSTANCE_DIR": str(tmp_path),
    }
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        f"--bind=127.0.0.1:{port}",
        "--config=python:web.gunicorn_conf",
        "--workers=1",
        f"--access-logfile={log}",
        "web:create_app()",
    ]
    server = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(f"{base}/healthz") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        assert _get(f"{base}/p/{PATIENT_TOKEN}") == 404
        assert _get(f"{base}/p/{PATIENT_TOKEN}/schedule.ics") == 404
        assert _get(f"{base}/feeds/linac/{FEED_TOKEN}.ics") == 404
        assert _get(f"{base}/healthz?patient=Jane+Doe") == 200
    finally:
        server.terminate()
        server.wait(timeout=15)
    text = log.read_text()
    assert PATIENT_TOKEN not in text and FEED_TOKEN not in text
    assert f"GET /p/{REDACTED} " in text
    assert f"GET /p/{REDACTED}/schedule.ics " in text
    assert f"GET /feeds/linac/{REDACTED}.ics " in text
    assert "GET /healthz " in text  # other paths are logged as they are
    assert "Jane" not in text and f"GET /healthz?patient={REDACTED} " in text
