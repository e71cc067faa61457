"""The staff workload: schedulers signed in to the web app, clicking through their day.

Run by bench/load/__main__.py as `locust -f bench/load/locustfile.py --headless ...`, never
imported by the test process (Locust patches the standard library with gevent on import). The
records to work on come from the JSON file named by LOAD_PLAN (written by bench/load/seed.py).

Mix (task weights): week calendar 40, patient search 20, course page 20, proposals 10,
booking and moves 10. A booking or a move that another user's change got to first answers 409:
the product working as designed, counted as its own row ("lost race") and not as a failure.
"""

from __future__ import annotations

import json
import os
import random
import re
from datetime import date, timedelta

from locust import HttpUser, between, events, task

PLAN = json.loads(open(os.environ["LOAD_PLAN"]).read())  # noqa: SIM115 - read once per run
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
# Drafts are taken once each; users of one Locust process share this list (gevent switches
# only at I/O, so pop() is never interleaved).
DRAFTS: list[int] = list(PLAN["draft_courses"])
random.shuffle(DRAFTS)
BOOKED: list[int] = list(PLAN["booked_courses"])
# Locust's staff "think time" between two clicks.
THINK_SECONDS = (
    float(os.environ.get("LOAD_THINK_MIN", "2")),
    float(os.environ.get("LOAD_THINK_MAX", "6")),
)


def _lost_race(name: str) -> None:
    events.request.fire(
        request_type="409",
        name=f"{name} lost race",
        response_time=0,
        response_length=0,
        exception=None,
        context={},
    )


class Scheduler(HttpUser):
    wait_time = between(*THINK_SECONDS)

    def on_start(self) -> None:
        email, password = random.choice(PLAN["users"])
        page = self.client.get("/login", name="GET /login")
        token = _CSRF.search(page.text)
        assert token, "no CSRF token on the sign-in page"
        self.client.post(
            "/login",
            data={"email": email, "password": password, "csrf_token": token.group(1)},
            name="POST /login",
        )
        landing = self.client.get("/patients", name="GET /patients")
        token = _CSRF.search(landing.text)
        assert token, "not signed in"
        self.csrf = token.group(1)
        self.api = {"X-CSRF-Token": self.csrf}

    @task(40)
    def week_calendar(self) -> None:
        # This week or one of the next three, where the bookings are.
        start = date.today() + timedelta(days=7 * random.randrange(4))
        self.client.get(
            f"/calendar/week?department={PLAN['department_id']}&start={start.isoformat()}",
            name="GET /calendar/week",
        )

    @task(20)
    def patient_search(self) -> None:
        term = random.choice(PLAN["search_terms"])
        # Partial MRNs, as people type them: several matches each.
        self.client.post(
            "/patients", data={"q": term[:-1], "csrf_token": self.csrf}, name="POST /patients"
        )

    @task(20)
    def course_page(self) -> None:
        course_id = random.choice(BOOKED)
        self.client.get(f"/courses/{course_id}", name="GET /courses/[id]")

    @task(10)
    def proposals(self) -> None:
        if not DRAFTS:
            return
        course_id = random.choice(DRAFTS)
        self._propose(course_id)

    @task(5)
    def book(self) -> None:
        if not DRAFTS:
            return
        course_id = DRAFTS.pop()
        for _ in range(5):  # a lost race: ask again, as a scheduler would
            schedules = self._propose(course_id)
            if not schedules:
                return
            placements = [
                {"number": f["number"], "linac_id": f["linac_id"], "starts_at": f["starts_at"]}
                for f in schedules[0]["fractions"]
            ]
            with self.client.post(
                f"/api/v1/courses/{course_id}/booking",
                json={"fractions": placements},
                headers=self.api,
                name="POST /api/v1/courses/[id]/booking",
                catch_response=True,
            ) as response:
                if response.status_code == 409:
                    response.success()
                    _lost_race("booking")
                    continue
                if response.status_code == 201:
                    BOOKED.append(course_id)
                return

    @task(5)
    def move(self) -> None:
        fraction_id = random.choice(PLAN["fractions"])
        found = self.client.get(
            f"/api/v1/fractions/{fraction_id}/alternatives?count=3",
            headers=self.api,
            name="GET /api/v1/fractions/[id]/alternatives",
        )
        if found.status_code != 200 or not found.json():
            return
        choice = found.json()[0]
        with self.client.post(
            f"/api/v1/fractions/{fraction_id}/move",
            json={"linac_id": choice["linac_id"], "starts_at": choice["starts_at"]},
            headers=self.api,
            name="POST /api/v1/fractions/[id]/move",
            catch_response=True,
        ) as response:
            if response.status_code == 409:
                response.success()
                _lost_race("move")

    def _propose(self, course_id: int) -> list[dict]:
        response = self.client.post(
            f"/api/v1/courses/{course_id}/proposals",
            json={"count": 3},
            headers=self.api,
            name="POST /api/v1/courses/[id]/proposals",
        )
        return response.json().get("schedules", []) if response.status_code == 200 else []
