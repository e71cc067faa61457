"""Sixteen clients racing over HTTP to book the same times: one 201, fifteen 409s, no overlap."""

from __future__ import annotations

import threading
from datetime import datetime

import sqlalchemy as sa
from flask import Flask

from scheduler.models import Fraction
from tests.api.conftest import Seed
from tests.api.test_booking_api import _course, _placements, _propose

CLIENTS = 16


def test_sixteen_clients_race_for_one_schedule(app: Flask, seed: Seed, db, now: datetime) -> None:
    setup = app.test_client()
    courses = [_course(setup, seed, f"RACE-{i}") for i in range(CLIENTS)]
    wanted = _placements(_propose(setup, seed, courses[0], now))
    db.rollback()
    barrier = threading.Barrier(CLIENTS)
    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def client(course_id: int) -> None:
        http = app.test_client()  # one client (and connection) per racer
        barrier.wait()
        response = http.post(
            f"/api/v1/courses/{course_id}/booking",
            json={"fractions": wanted},
            headers=seed.auth("scheduler"),
        )
        with lock:
            answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=client, args=(cid,)) for cid in courses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    statuses = sorted(status for status, _ in answers)
    assert statuses == [201] + [409] * (CLIENTS - 1), answers
    for status, body in answers:
        if status == 409:
            # The loser learns which time is taken, as a problem document.
            assert body["status"] == 409 and body["conflicts"]
            assert {c["starts_at"] for c in body["conflicts"]} & {p["starts_at"] for p in wanted}
    rows = db.scalars(sa.select(Fraction)).all()
    assert len(rows) == 5
    a, b = sa.orm.aliased(Fraction), sa.orm.aliased(Fraction)
    overlaps = db.scalar(
        sa.select(sa.func.count())
        .select_from(a)
        .join(b, a.id < b.id)
        .where(a.linac_id == b.linac_id, a.starts_at < b.ends_at, b.starts_at < a.ends_at)
    )
    assert overlaps == 0
