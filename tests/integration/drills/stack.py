"""The web side of the drills: gunicorn as production runs it, staff accounts, signed-in clients."""

from __future__ import annotations

import re
import secrets
import socket
import sys
import time
from dataclasses import dataclass

import requests
import sqlalchemy as sa

from bootstrap import make_session_factory
from tests.committing import accounts
from tests.integration.harness import Pipeline

REQUEST_TIMEOUT = 15.0  # a request that takes longer counts as a hang
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_web(pipeline: Pipeline, port: int, workers: int = 2) -> str:
    """gunicorn with the Procfile's options; returns its base URL once it answers."""
    pipeline.start_command(
        "web",
        [
            sys.executable, "-m", "gunicorn", "--workers", str(workers),
            "--bind", f"127.0.0.1:{port}", "--no-control-socket", "--timeout", "30",
            "--logger-class", "web.access_log.RedactingLogger", "web:create_app()",
        ],
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    pipeline.wait_for("the web app answering /healthz", answers, timeout=60, interval=0.2)
    return base


@dataclass(frozen=True)
class Staff:
    email: str
    password: str
    token: str


def scheduler_account(engine: sa.Engine, department_id: int) -> Staff:
    """A scheduler of the department with a password and an API token, committed."""
    email = f"drill-{secrets.token_hex(4)}@clinic.example"
    password = secrets.token_urlsafe(18)
    with make_session_factory(engine)() as session:
        user = accounts.create_user(
            session,
            email=email,
            name="Drill Scheduler",
            role="scheduler",
            password=password,
            department_ids=[department_id],
        )
        token = accounts.create_api_token(session, user.id, "drill")
    return Staff(email, password, token)


def api_client(staff: Staff) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {staff.token}"
    return http


def signed_in(base: str, staff: Staff) -> requests.Session:
    """A browser-like session: signed in with the cookie, as staff use the pages."""
    http = requests.Session()
    page = http.get(f"{base}/login", timeout=REQUEST_TIMEOUT)
    token = _CSRF.search(page.text)
    assert token, "no CSRF token on the sign-in page"
    answer = http.post(
        f"{base}/login",
        data={"email": staff.email, "password": staff.password, "csrf_token": token.group(1)},
        timeout=REQUEST_TIMEOUT,
    )
    assert answer.ok and "/login" not in answer.url, answer.status_code
    return http


def timed(call, *args, **kwargs) -> tuple[float, float, requests.Response | Exception]:  # type: ignore[no-untyped-def]
    """(start, seconds, response or the exception) of one HTTP call."""
    started = time.monotonic()
    try:
        result: requests.Response | Exception = call(*args, timeout=REQUEST_TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        result = exc
    return started, time.monotonic() - started, result
