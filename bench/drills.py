"""Fault drills too long for the test suite, run for real: `python -m bench.drills NAME`.

twilio-outage [--minutes 10] [--courses 10] [--record]
    Twilio answers every new message with HTTP 500 for the whole outage, while the
    production stack (two Celery workers, beat, PostgreSQL, a Redis of the drill's own, the
    production dispatch interval and backoff) works through a morning's due reminders. Then
    the provider recovers. Reported: how the retries were spaced (each reminder's intervals
    between attempts), what staff saw meanwhile (the outbox rows' status and reason, and the
    reminder-lag check of the System page and /readyz), and the
    outcome: every due reminder sent exactly once, none given up, none sent twice.

The shorter versions of every drill are tests (tests/integration/drills/); this runs the full
length.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from bench import db
from bootstrap import make_engine, make_session_factory
from config import Settings, load_settings
from notifications.models import Reminder, ReminderStatus
from scheduler import health
from tests.fakes.twilio_server import start_fake_twilio
from tests.integration.harness import (
    FROM_NUMBER,
    PUBLIC_BASE_URL,
    Pipeline,
    all_final,
    app_environment,
    book_courses,
    make_due,
    message_key,
    start_redis,
    status_counts,
)

RESULTS = db.REPO_ROOT / "bench" / "RESULTS.md"
NOTES_END = "<!-- notes:end -->"


@dataclass
class OutageReport:
    minutes: float
    reminders: int
    started: str
    command: str = ""
    # (minute into the drill, {status: count}, {reason: count} of the rows staff see, what the
    # readiness check of the System page and /readyz said about the reminders' lag)
    snapshots: list[tuple[float, dict[str, int], dict[str, int], str]] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    accepted: int = 0
    duplicates: int = 0
    attempts: dict[int, int] = field(default_factory=dict)
    # Intervals between consecutive requests for one reminder, by position (1st gap, 2nd ...).
    gaps: dict[int, list[float]] = field(default_factory=dict)
    last_sent_after_outage_s: float = 0.0
    drain_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.statuses == {ReminderStatus.SENT: self.reminders}
            and self.duplicates == 0
            and self.accepted == self.reminders
        )

    def text(self) -> str:
        lines = [
            f"Measured {self.started} with `{self.command}`: {self.reminders} due SMS reminders"
            f" (confirmations, day-before and same-day reminders of booked courses), Twilio"
            f" answering HTTP 500 to every new message for {self.minutes:g} min, production"
            " dispatch interval (30 s) and backoff.",
            "",
            "| minute | outbox statuses | reasons shown to staff | readiness: reminder lag |",
            "|---|---|---|---|",
        ]
        for minute, statuses, reasons, lag in self.snapshots:
            lines.append(f"| {minute:.0f} | {statuses} | {reasons} | {lag} |")
        lines += ["", "| interval between attempts | count | min s | max s |", "|---|---|---|---|"]
        for k in sorted(self.gaps):
            values = self.gaps[k]
            lines.append(f"| {k} | {len(values)} | {min(values):.0f} | {max(values):.0f} |")
        lines += [
            "",
            f"- requests refused (500): {self.refused}; accepted: {self.accepted};"
            f" sent twice: {self.duplicates}",
            f"- attempts per reminder: {dict(sorted(self.attempts.items()))}",
            f"- final statuses: {self.statuses}",
            f"- last reminder sent {self.last_sent_after_outage_s:.0f} s after the outage ended;"
            f" all settled {self.drain_s:.0f} s after it",
            f"- verdict: {'every due reminder sent exactly once' if self.ok else 'NOT met'}",
        ]
        return "\n".join(lines)


def twilio_outage(minutes: float, courses: int, out: Path) -> OutageReport:
    out.mkdir(parents=True, exist_ok=True)
    url = db.create_postgres_database()
    engine = make_engine(url)
    twilio = start_fake_twilio()
    redis_server = start_redis(out)
    if redis_server is None:
        raise SystemExit("redis-server is not installed")
    instance = out / "instance"
    instance.mkdir(exist_ok=True)
    pipeline = Pipeline(
        out,
        app_environment(
            DATABASE_URL=url,
            BROKER_URL=redis_server.url,
            SECRET_KEY=secrets.token_urlsafe(32),
            PUBLIC_BASE_URL=PUBLIC_BASE_URL,
            INSTANCE_DIR=str(instance),
            TWILIO_ACCOUNT_SID=twilio.account_sid,
            TWILIO_AUTH_TOKEN=twilio.auth_token,
            TWILIO_FROM_NUMBER=FROM_NUMBER,
            TWILIO_BASE_URL=twilio.base_url,
            PYTHONUNBUFFERED="1",
        ),
    )
    settings = load_settings(pipeline.env)
    try:
        ids = book_courses(engine, courses).reminder_ids
        report = OutageReport(minutes, len(ids), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
        pipeline.start_worker("worker-a")
        pipeline.start_worker("worker-b")
        pipeline.start_beat("beat")
        pipeline.wait_ready()
        began = time.monotonic()
        twilio.outage(minutes * 60)
        make_due(engine, ids, datetime.now(UTC) - timedelta(seconds=1))
        outage_end = began + minutes * 60
        while time.monotonic() < outage_end:
            time.sleep(min(60.0, max(0.0, outage_end - time.monotonic())))
            report.snapshots.append(
                ((time.monotonic() - began) / 60, *_staff_view(engine, ids), _lag(engine, settings))
            )
            print(f"minute {report.snapshots[-1][0]:.0f}: {report.snapshots[-1][1]}", flush=True)
        recovered_at = datetime.now(UTC)
        # The longest backoff still running when the provider came back ends within 30 min.
        pipeline.wait_for(
            "every due reminder settled", lambda: all_final(engine, ids), timeout=2400, interval=2
        )
        report.drain_s = time.monotonic() - outage_end
        pipeline.stop_all()
        _outcome(report, engine, twilio, ids, recovered_at)
        return report
    finally:
        pipeline.stop_all()
        redis_server.kill()
        twilio.stop()
        engine.dispose()
        db.drop_postgres_database(url)


def _lag(engine: sa.Engine, settings: Settings) -> str:
    """The reminder-lag check as the System page and /readyz show it."""
    with make_session_factory(engine)() as session:
        report = health.readiness(session, settings, now=datetime.now(UTC), broker=False)
    check = report.check(health.CheckName.REMINDER_LAG)
    assert check is not None
    return f"{check.status}: {check.detail}"


def _staff_view(engine: sa.Engine, ids: list[int]) -> tuple[dict[str, int], dict[str, int]]:
    """What the message pages show for these rows: statuses and the reasons given."""
    with engine.connect() as conn:
        reasons = Counter(
            re.sub(r"\d{3,}", "N", reason or "-")
            for reason in conn.scalars(
                sa.select(Reminder.status_reason).where(
                    Reminder.id.in_(ids), Reminder.status != ReminderStatus.SENT
                )
            )
        )
    return dict(status_counts(engine, ids)), dict(reasons.most_common(4))


def _outcome(report, engine, twilio, ids, recovered_at) -> None:  # type: ignore[no-untyped-def]
    report.statuses = {str(k): v for k, v in status_counts(engine, ids).items()}
    creates = twilio.create_requests
    report.refused = sum(1 for r in creates if r.status == 500)
    accepted = [r for r in creates if r.status == 201]
    report.accepted = len(accepted)
    keys = Counter(message_key(r.param("To"), r.param("Body")) for r in accepted)
    report.duplicates = sum(n - 1 for n in keys.values() if n > 1)
    by_key: dict[tuple, list[datetime]] = {}
    for r in creates:
        by_key.setdefault(message_key(r.param("To"), r.param("Body")), []).append(r.at)
    report.attempts = dict(Counter(len(v) for v in by_key.values()))
    for times in by_key.values():
        times.sort()
        for k, (a, b) in enumerate(zip(times, times[1:], strict=False), start=1):
            report.gaps.setdefault(k, []).append((b - a).total_seconds())
    if accepted:
        last = max(r.at for r in accepted)
        report.last_sent_after_outage_s = max(0.0, (last - recovered_at).total_seconds())


def _record(name: str, body: str) -> None:
    start, end = f"<!-- drill:{name}:start -->", f"<!-- drill:{name}:end -->"
    block = f"{start}\n### Fault drill: {name}\n\n{body}\n{end}"
    text = RESULTS.read_text()
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.replace(NOTES_END, block + "\n\n" + NOTES_END, 1)
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drills")
    sub = parser.add_subparsers(dest="drill", required=True)
    outage = sub.add_parser("twilio-outage", help="Twilio answering 500 for a long outage")
    outage.add_argument("--minutes", type=float, default=10.0)
    outage.add_argument("--courses", type=int, default=10)
    outage.add_argument("--out", type=Path, default=db.OUT_DIR / "drills")
    outage.add_argument("--record", action="store_true", help="write bench/RESULTS.md")
    args = parser.parse_args(argv)
    report = twilio_outage(args.minutes, args.courses, args.out)
    report.command = "python -m bench.drills " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    print(report.text())
    if args.record:
        _record("twilio-outage", report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
