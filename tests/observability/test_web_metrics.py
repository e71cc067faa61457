"""The web app's /metrics: summed over gunicorn's workers, labelled by route, optionally
guarded by a token, and counting bookings and conflicts."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from tests.api.conftest import Seed, draft_course_over_api
from tests.conftest import at_clinic_hours
from tests.observability.scrape import get, start_gunicorn, stop, value

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
REQUESTS = 60
DURATION = "sbrt_http_request_duration_seconds_count"
COURSE_ROUTE = "/api/v1/courses/<api_id:course_id>"
LINK_TOKEN = "Zq7TgK2mWv9PxL4c"


@sqlite_only
@pytest.mark.slow
def test_a_scrape_sums_every_gunicorn_worker(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    env = os.environ | {
        "DATABASE_URL": database_url,
        "BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        "SECRET_KEY": "test-secret-key-not-for-production",
        "INSTANCE_DIR": str(tmp_path),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "METRICS_TOKEN": "scrape-token-for-the-test",
    }
    # A file from a run before this one: the server must not add it to its own counts.
    metrics_dir.mkdir()
    (metrics_dir / "histogram_1.db").write_bytes(b"left over")
    server, base = start_gunicorn(env, tmp_path / "web.log", workers=2)
    try:
        # Concurrent requests, each an unauthenticated 401, until both workers have taken
        # some: which worker accepts a connection is the kernel's choice, and on a quiet
        # machine one of them can take a whole batch.
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            for _ in range(10):
                statuses = list(
                    pool.map(lambda i: get(f"{base}/api/v1/courses/{i}")[0], range(REQUESTS))
                )
                assert statuses == [401] * REQUESTS
                sent += REQUESTS
                if len(_worker_pids(metrics_dir)) == 2:
                    break
        assert get(f"{base}/p/{LINK_TOKEN}")[0] == 404

        assert get(f"{base}/metrics")[0] == 401
        assert get(f"{base}/metrics", {"Authorization": "Bearer wrong"})[0] == 401
        auth = {"Authorization": "Bearer scrape-token-for-the-test"}
        # Each scrape is answered by whichever worker takes it; every one sees all requests.
        for _ in range(6):
            status, text = get(f"{base}/metrics", auth)
            assert status == 200
            count = value(text, DURATION, route=COURSE_ROUTE, method="GET", status="401")
            assert count == sent
        assert len(_worker_pids(metrics_dir)) == 2, "both workers served requests"
        # Labels carry route patterns, never a path's ids or a link's token.
        assert LINK_TOKEN not in text
        assert 'route="/api/v1/courses/1"' not in text
        assert value(text, DURATION, route="/p/<token>", status="404") == 1
        assert value(text, "sbrt_metrics_database_up") == 1
        assert value(text, "sbrt_broker_up") == 1
    finally:
        stop(server)


def _worker_pids(metrics_dir: Path) -> set[str]:
    """The processes that have written request metrics (one histogram file each)."""
    return {path.stem.split("_")[-1] for path in metrics_dir.glob("histogram_*.db")}


def _scrape(client: FlaskClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


@sqlite_only
# Inside New York's message window (10:00 local): a confirmation held back until the window
# opens is on time and not counted as lag, so the lag below would read 0 at night.
@at_clinic_hours
def test_bookings_are_counted_when_committed_and_conflicts_by_route(
    database_url: str, client: FlaskClient, seed: Seed
) -> None:
    auth = seed.auth("scheduler")
    first, second = (
        draft_course_over_api(client, seed, "M-1", email_consent=True),
        draft_course_over_api(client, seed, "M-2", email_consent=True),
    )
    earliest = datetime.now(UTC).astimezone(ZoneInfo("America/New_York")).date()
    proposed = client.post(
        f"/api/v1/courses/{first}/proposals",
        json={"count": 1, "earliest": (earliest + timedelta(days=7)).isoformat()},
        headers=auth,
    )
    assert proposed.status_code == 200, proposed.json
    placements = [
        {"number": f["number"], "linac_id": f["linac_id"], "starts_at": f["starts_at"]}
        for f in proposed.json["schedules"][0]["fractions"]
    ]
    before = _scrape(client)

    booked = client.post(
        f"/api/v1/courses/{first}/booking", json={"fractions": placements}, headers=auth
    )
    assert booked.status_code == 201, booked.json
    # The same times for another course: taken, so nothing is booked or counted as booked.
    clash = client.post(
        f"/api/v1/courses/{second}/booking", json={"fractions": placements}, headers=auth
    )
    assert clash.status_code == 409, clash.json

    after = _scrape(client)
    route = "/api/v1/courses/<api_id:course_id>/booking"

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("sbrt_booking_events_total", kind="course_booked") == 1
    assert delta("sbrt_http_conflicts_total", route=route) == 1
    assert delta(DURATION, route=route, method="POST", status="201") == 1
    assert delta(DURATION, route=route, method="POST", status="409") == 1
    # The booking's confirmation waits in the outbox, due since the booking: late by now.
    assert value(after, "sbrt_outbox_reminders", status="pending") >= 1
    assert value(after, "sbrt_reminder_lag_seconds") > 0
