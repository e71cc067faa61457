"""Clients racing over HTTP: sixteen for the same times (one 201, fifteen 409s), eight for the
best option (each booked after looking again), and never an overlap."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask import Flask

from scheduler.models import AuditEntry, Fraction
from tests.api.conftest import Seed, draft_course_over_api
from tests.api.test_booking_api import _placements, _propose

CLIENTS = 16


def test_sixteen_clients_race_for_one_schedule(app: Flask, seed: Seed, db, now: datetime) -> None:
    setup = app.test_client()
    courses = [draft_course_over_api(setup, seed, f"RACE-{i}") for i in range(CLIENTS)]
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


BEST_CLIENTS = 8


def test_eight_clients_book_the_best_option_at_once(
    app: Flask, seed: Seed, db, now: datetime
) -> None:
    """Eight courses wanting the same days, each booked with `best` at the same moment: the
    server looks again after each lost race, so every request ends booked (or with a clean
    409 when every option it found was taken), and nothing overlaps."""
    if db.get_bind().dialect.name != "postgresql":
        pytest.skip("concurrent writers race only on PostgreSQL (SQLite serialises them)")
    setup = app.test_client()
    courses = [draft_course_over_api(setup, seed, f"BEST-RACE-{i}") for i in range(BEST_CLIENTS)]
    earliest = now.astimezone(ZoneInfo("America/New_York")).date() + timedelta(days=7)
    db.rollback()
    barrier = threading.Barrier(BEST_CLIENTS)
    answers: list[tuple[int, int, dict]] = []
    lock = threading.Lock()

    def client(course_id: int) -> None:
        http = app.test_client()  # one client (and connection) per racer
        barrier.wait()
        response = http.post(
            f"/api/v1/courses/{course_id}/booking",
            json={"best": True, "earliest": earliest.isoformat()},
            headers=seed.auth("scheduler"),
        )
        with lock:
            answers.append((course_id, response.status_code, response.get_json()))

    threads = [threading.Thread(target=client, args=(cid,)) for cid in courses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert len(answers) == BEST_CLIENTS
    booked = [cid for cid, status, _ in answers if status == 201]
    for _, status, body in answers:
        assert status in (201, 409), body
        if status == 409:
            assert body["type"] == "urn:sbrt-scheduler:problem:options-taken", body
    # Two linacs open twelve hours a day hold eight courses easily: most must get through.
    assert len(booked) >= BEST_CLIENTS // 2, answers
    rows = db.scalars(sa.select(Fraction)).all()
    assert len(rows) == 5 * len(booked)
    assert {r.course_id for r in rows} == set(booked)
    a, b = sa.orm.aliased(Fraction), sa.orm.aliased(Fraction)
    overlaps = db.scalar(
        sa.select(sa.func.count())
        .select_from(a)
        .join(b, a.id < b.id)
        .where(a.linac_id == b.linac_id, a.starts_at < b.ends_at, b.starts_at < a.ends_at)
    )
    assert overlaps == 0
    # Each booking is audited once, with how many times it lost a race before booking.
    details = db.scalars(sa.select(AuditEntry.detail).where(AuditEntry.action == "book")).all()
    assert len(details) == len(booked)
    assert all(d["best_option"] is True and d["lost_races"] >= 0 for d in details)
