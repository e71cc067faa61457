"""The scheduler's day through the API: patient, course, proposals, booking, moves, cancels."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from flask.testing import FlaskClient

from tests.api.conftest import Seed, draft_course_over_api

PROBLEM = "application/problem+json"


def _propose(
    client: FlaskClient, seed: Seed, course_id: int, now: datetime | None = None
) -> list[dict]:
    # A week ahead of the department's today: its remaining hours would make the result
    # depend on the time of day. Without ``now``, the (possibly pinned) clock the API reads.
    local_today = (now or datetime.now(UTC)).astimezone(ZoneInfo("America/New_York")).date()
    earliest = local_today + timedelta(days=7)
    response = client.post(
        f"/api/v1/courses/{course_id}/proposals",
        json={
            "count": 2,
            "earliest": earliest.isoformat(),
            "preferred_window": {"start": "08:00", "end": "12:00"},
        },
        headers=seed.auth("scheduler"),
    )
    assert response.status_code == 200, response.json
    assert response.json["timezone"] == "America/New_York"
    assert response.json["explanation"] is None
    schedules = response.json["schedules"]
    assert schedules and len(schedules[0]["fractions"]) == 5
    return schedules[0]["fractions"]


def _placements(fractions: list[dict]) -> list[dict]:
    return [
        {"number": f["number"], "linac_id": f["linac_id"], "starts_at": f["starts_at"]}
        for f in fractions
    ]


@pytest.mark.pinned_dates
def test_booking_flow(client: FlaskClient, seed: Seed, now: datetime) -> None:
    auth = seed.auth("scheduler")
    course_id = draft_course_over_api(client, seed, "FLOW-1")
    proposed = _propose(client, seed, course_id, now)
    first = proposed[0]
    local = datetime.fromisoformat(first["local_start"])
    assert local.utcoffset() is not None and 8 <= local.hour < 12

    booked = client.post(
        f"/api/v1/courses/{course_id}/booking",
        json={"fractions": _placements(proposed)},
        headers=auth,
    )
    assert booked.status_code == 201, booked.json
    assert booked.json["status"] == "booked"
    fractions = booked.json["fractions"]
    assert [f["number"] for f in fractions] == [1, 2, 3, 4, 5]
    assert fractions[0]["starts_at"].endswith("Z")
    # Readiness is not recorded yet: the first fraction is flagged.
    assert fractions[0]["awaiting_readiness"] is True

    listed = client.get(
        "/api/v1/fractions",
        query_string={
            "linac_id": first["linac_id"],
            "start": proposed[0]["starts_at"],
            "end": proposed[-1]["ends_at"],
        },
        headers=seed.auth("viewer"),
    )
    assert listed.status_code == 200, listed.json
    assert {f["id"] for f in fractions if f["linac_id"] == first["linac_id"]} <= {
        f["id"] for f in listed.json
    }

    for step in ("plan_approved", "physics_qa"):
        ready = client.put(
            f"/api/v1/courses/{course_id}/readiness/{step}",
            json={"done_at": "2026-01-05T09:00:00Z"},
            headers=auth,
        )
        assert ready.status_code == 200, ready.json
    assert ready.json["ready_to_treat"] is True
    assert ready.json["fractions"][0]["awaiting_readiness"] is False

    last = fractions[-1]
    alternatives = client.get(
        f"/api/v1/fractions/{last['id']}/alternatives", headers=seed.auth("viewer")
    )
    assert alternatives.status_code == 200, alternatives.json
    assert alternatives.json, "the last fraction should have somewhere else to go"
    target = alternatives.json[0]
    moved = client.post(
        f"/api/v1/fractions/{last['id']}/move",
        # A naive local time: the department's zone is implied.
        json={"linac_id": target["linac_id"], "starts_at": target["local_start"][:19]},
        headers=auth,
    )
    assert moved.status_code == 200, moved.json
    assert moved.json["starts_at"] == target["starts_at"]

    cancelled = client.post(
        f"/api/v1/fractions/{moved.json['id']}/cancel",
        json={"reason": "patient unwell"},
        headers=auth,
    )
    assert cancelled.status_code == 200, cancelled.json
    assert cancelled.json["status"] == "cancelled"

    course = client.post(
        f"/api/v1/courses/{course_id}/cancel", json={"reason": "plan changed"}, headers=auth
    )
    assert course.status_code == 200, course.json
    assert course.json["status"] == "cancelled"
    twice = client.post(
        f"/api/v1/courses/{course_id}/cancel", json={"reason": "again"}, headers=auth
    )
    assert twice.status_code == 409 and twice.mimetype == PROBLEM


@pytest.mark.pinned_dates
def test_booking_over_another_course_is_409_naming_the_time(
    client: FlaskClient, seed: Seed, now: datetime
) -> None:
    auth = seed.auth("scheduler")
    first_course = draft_course_over_api(client, seed, "A-1")
    proposed = _propose(client, seed, first_course, now)
    placements = _placements(proposed)
    ok = client.post(
        f"/api/v1/courses/{first_course}/booking", json={"fractions": placements}, headers=auth
    )
    assert ok.status_code == 201, ok.json

    second_course = draft_course_over_api(client, seed, "B-2")
    clash = client.post(
        f"/api/v1/courses/{second_course}/booking", json={"fractions": placements}, headers=auth
    )
    assert clash.status_code == 409, clash.json
    assert clash.mimetype == PROBLEM
    taken = {(c["linac_id"], c["starts_at"]) for c in clash.json["conflicts"]}
    assert (placements[0]["linac_id"], placements[0]["starts_at"]) in taken
    # Nothing of the second course was booked.
    after = client.get(f"/api/v1/courses/{second_course}", headers=auth)
    assert after.json["fractions"] == []


@pytest.mark.pinned_dates
def test_nonexistent_and_ambiguous_local_times(
    client: FlaskClient, seed: Seed, now: datetime
) -> None:
    auth = seed.auth("scheduler")
    course_id = draft_course_over_api(client, seed, "DST-1")
    proposed = _propose(client, seed, course_id, now)
    placements = _placements(proposed)

    gap = [dict(placements[0], starts_at="2026-03-08T02:30:00"), *placements[1:]]
    response = client.post(
        f"/api/v1/courses/{course_id}/booking", json={"fractions": gap}, headers=auth
    )
    assert response.status_code == 422 and response.mimetype == PROBLEM
    assert [e["field"] for e in response.json["errors"]] == ["fractions.0.starts_at"]
    assert "does not exist" in response.json["errors"][0]["message"]

    twice = [dict(placements[0], starts_at="2026-11-01T01:30:00"), *placements[1:]]
    ambiguous = client.post(
        f"/api/v1/courses/{course_id}/booking", json={"fractions": twice}, headers=auth
    )
    assert ambiguous.status_code == 422
    assert [e["field"] for e in ambiguous.json["errors"]] == ["fractions.0.starts_at"]
    assert "fold" in ambiguous.json["errors"][0]["message"]

    chosen = [dict(placements[0], starts_at="2026-11-01T01:30:00", fold=1), *placements[1:]]
    decided = client.post(
        f"/api/v1/courses/{course_id}/booking", json={"fractions": chosen}, headers=auth
    )
    # Past the ambiguity: now the booking rules judge it (a Sunday, outside opening hours).
    assert decided.status_code == 422
    assert "errors" not in decided.json or all(
        "fold" not in e["message"] for e in decided.json["errors"]
    )

    listing = client.get(
        "/api/v1/fractions",
        query_string={"department_id": seed.department_id, "start": "2026-03-08T02:30",
                      "end": "2026-03-09T00:00"},
        headers=auth,
    )  # fmt: skip
    assert listing.status_code == 422
    assert [e["field"] for e in listing.json["errors"]] == ["start"]


@pytest.mark.pinned_dates
def test_downtime_preview_then_commit(client: FlaskClient, seed: Seed, now: datetime) -> None:
    course_id = draft_course_over_api(client, seed, "DOWN-1")
    proposed = _propose(client, seed, course_id, now)
    booked = client.post(
        f"/api/v1/courses/{course_id}/booking",
        json={"fractions": _placements(proposed)},
        headers=seed.auth("scheduler"),
    )
    assert booked.status_code == 201
    first = booked.json["fractions"][0]
    body = {"starts_at": first["starts_at"], "ends_at": first["ends_at"], "kind": "unplanned",
            "reason": "MLC fault"}  # fmt: skip
    url = f"/api/v1/linacs/{first['linac_id']}/downtimes"
    assert client.post(url, json=body, headers=seed.auth("scheduler")).status_code == 403

    preview = client.post(url, json={**body, "preview": True}, headers=seed.auth())
    assert preview.status_code == 200, preview.json
    assert preview.json["downtime_id"] is None
    affected = preview.json["moved"] + preview.json["unplaceable"]
    assert first["id"] in {m["fraction_id"] for m in affected}
    assert client.get(url, headers=seed.auth("viewer")).json == []

    applied = client.post(url, json=body, headers=seed.auth())
    assert applied.status_code == 200, applied.json
    assert applied.json["downtime_id"] is not None
    listed = client.get(url, headers=seed.auth("viewer")).json
    assert [d["id"] for d in listed] == [applied.json["downtime_id"]]


# Monday 1 March 2027, 06:00 in New York: before opening, so the whole day can be proposed.
PROPOSAL_NOW = datetime(2027, 3, 1, 11, 0, tzinfo=UTC)
SCORE_PARTS = ["wait", "overall", "linacs", "time_of_day", "window", "spacing", "day_load"]


def test_proposals_carry_their_score_overall_days_and_gaps(client: FlaskClient, seed: Seed) -> None:
    course_id = draft_course_over_api(client, seed, "SCORE-1")
    with time_machine.travel(PROPOSAL_NOW, tick=False):
        response = client.post(
            f"/api/v1/courses/{course_id}/proposals",
            json={"count": 3, "preferred_window": {"start": "09:00", "end": "12:00"}},
            headers=seed.auth("scheduler"),
        )
    assert response.status_code == 200, response.json
    schedules = response.json["schedules"]
    assert len(schedules) == 3
    totals = [s["score"]["total"] for s in schedules]
    assert totals == sorted(totals)
    for schedule in schedules:
        parts = schedule["score"]["parts"]
        assert [p["name"] for p in parts] == SCORE_PARTS
        assert schedule["score"]["total"] == sum(p["points"] for p in parts)
        assert all(p["summary"] for p in parts)
        days = [date.fromisoformat(f["local_start"][:10]) for f in schedule["fractions"]]
        assert schedule["overall_days"] == (days[-1] - days[0]).days + 1
        assert schedule["gap_days"] == [(b - a).days for a, b in zip(days, days[1:], strict=False)]
    # An empty department: Monday to Friday at 09:00 on one linac, inside the window. Its
    # only points: each session splits the linac's free day in two.
    best = schedules[0]
    assert best["overall_days"] == 5 and best["gap_days"] == [1, 1, 1, 1]
    points = {p["name"]: p["points"] for p in best["score"]["parts"]}
    assert points == dict.fromkeys(SCORE_PARTS, 0) | {"day_load": 10}
    assert {f["local_start"][11:16] for f in best["fractions"]} == {"09:00"}
    # Options differ by machine or start day, never by minutes on the same machine and days.
    signatures = {
        (s["fractions"][0]["local_start"][:10], frozenset(f["linac_id"] for f in s["fractions"]))
        for s in schedules
    }
    assert len(signatures) == 3
    first_days = [s["fractions"][0]["local_start"][:10] for s in schedules]
    assert first_days == ["2027-03-01", "2027-03-01", "2027-03-02"]
    wait = next(p for p in schedules[2]["score"]["parts"] if p["name"] == "wait")
    assert wait == {
        "name": "wait",
        "points": 20,
        "value": 1,
        "summary": "starts 1 day after 1 March",
    }


def test_the_openapi_document_describes_the_score(client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").json
    schedule = document["components"]["schemas"]["ScheduleOut"]
    assert {"score", "overall_days", "gap_days"} <= set(schedule["required"])
    part = document["components"]["schemas"]["ScorePartOut"]
    assert part["properties"]["name"]["enum"] == SCORE_PARTS
