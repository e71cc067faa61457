"""`make load`: 50 simulated schedulers for 5 minutes against the production stack.

`python -m bench.load [--users N] [--minutes M] [--record]` (LOAD_USERS / LOAD_MINUTES too):

1. a fresh PostgreSQL database, migrated, with the demo department grown to a busy clinic
   (bench/load/seed.py), and every pending reminder made due at some moment of the run;
2. the stack as production runs it: gunicorn with two web processes, two Celery workers
   (prefork, two pool processes each) and one beat, on a Redis server of the run's own, with
   a Twilio-compatible server and an SMTP server on loopback taking the messages;
3. Locust, headless, as a subprocess (bench/load/locustfile.py);
4. the checks, printed as a table: p95 of every endpoint of the mix at most 300 ms, no failed
   request, no overlapping sessions (SQL), and every reminder due by the end sent exactly once
   (the outbox's rows against what the two servers received).

Exits 1 when a target is missed. `--record` writes the table into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import secrets
import socket
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
import sqlalchemy as sa

from bench import db
from bench.load.seed import make_due_during, seed_load_department
from bootstrap import make_engine, make_session_factory
from config import load_settings
from notifications.models import FINAL_STATUSES, Reminder, ReminderStatus
from tests.fakes.smtp_server import FakeSmtp, start_fake_smtp
from tests.fakes.twilio_server import FakeTwilio, start_fake_twilio
from tests.integration.harness import (
    FROM_NUMBER,
    Pipeline,
    app_environment,
    start_redis,
)

P95_TARGET_MS = 300.0
LOCUSTFILE = db.REPO_ROOT / "bench" / "load" / "locustfile.py"
RESULTS = db.REPO_ROOT / "bench" / "RESULTS.md"
LOAD_START, LOAD_END = "<!-- load:start -->", "<!-- load:end -->"
NOTES_END = "<!-- notes:end -->"
# Rows Locust reports that are not requests of the mix: signing in happens once per user
# (a deliberately slow password hash), and lost races are counted, not timed.
NOT_IN_MIX = ("GET /login", "POST /login", "GET /patients")
DRAIN_SECONDS = 180.0


@dataclass
class Endpoint:
    name: str
    requests: int
    failures: int
    p50: float
    p95: float
    p99: float
    max: float


@dataclass
class Outcome:
    users: int
    minutes: float
    endpoints: list[Endpoint] = field(default_factory=list)
    lost_races: dict[str, int] = field(default_factory=dict)
    overlaps: dict[str, int] = field(default_factory=dict)
    reminders_due: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    sms_sent: int = 0
    emails_sent: int = 0
    reminder_problems: list[str] = field(default_factory=list)
    rps: float = 0.0
    machine: str = ""
    started: str = ""

    @property
    def failed_requests(self) -> int:
        return sum(e.failures for e in self.endpoints)

    def missed(self) -> list[str]:
        problems = [
            f"{e.name}: p95 {e.p95:.0f} ms > {P95_TARGET_MS:.0f} ms"
            for e in self.endpoints
            if e.name not in NOT_IN_MIX and e.p95 > P95_TARGET_MS
        ]
        if self.failed_requests:
            problems.append(f"{self.failed_requests} failed requests")
        if any(self.overlaps.values()):
            problems.append(f"overlapping sessions: {self.overlaps}")
        return problems + self.reminder_problems

    def table(self) -> str:
        lines = [
            "| endpoint | requests | failures | p50 ms | p95 ms | p99 ms | max ms | p95 target |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for e in self.endpoints:
            target = (
                "(sign-in, not in the mix)"
                if e.name in NOT_IN_MIX
                else ("met" if e.p95 <= P95_TARGET_MS else "NOT met")
            )
            lines.append(
                f"| {e.name} | {e.requests} | {e.failures} | {e.p50:.0f} | {e.p95:.0f}"
                f" | {e.p99:.0f} | {e.max:.0f} | {target} |"
            )
        races = ", ".join(f"{k}: {v}" for k, v in self.lost_races.items()) or "none"
        reminders = "; ".join(self.reminder_problems) or "every due reminder sent exactly once"
        lines += [
            "",
            f"- requests per second (whole run): {self.rps:.1f};"
            f" lost races (409, asked again): {races}",
            f"- failed requests: {self.failed_requests}",
            f"- overlapping sessions (SQL self-join): linac {self.overlaps.get('linac_id', '?')},"
            f" patient {self.overlaps.get('patient_id', '?')}",
            f"- reminders due by the end of the run: {self.reminders_due}; statuses"
            f" {dict(sorted(self.statuses.items()))}; SMS taken by the Twilio server"
            f" {self.sms_sent}, emails taken by the SMTP server {self.emails_sent}",
            f"- reminder checks: {reminders}",
        ]
        missed = self.missed()
        lines.append(
            f"- verdict: {'all targets met' if not missed else 'NOT met: ' + '; '.join(missed)}"
        )
        return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"nproc {os.cpu_count()}, load average {load}"


def run(
    users: int,
    minutes: float,
    out: Path,
    *,
    booked: int = 120,
    drafts: int = 400,
    spawn_rate: float = 5.0,
) -> Outcome:
    out.mkdir(parents=True, exist_ok=True)
    outcome = Outcome(users, minutes, machine=_machine())
    outcome.started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    url = db.create_postgres_database()
    engine = make_engine(url)
    twilio = start_fake_twilio()
    smtp = start_fake_smtp()
    redis_server = start_redis(out)
    if redis_server is None:
        raise SystemExit("redis-server is not installed")
    pipeline: Pipeline | None = None
    try:
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        instance = out / "instance"
        instance.mkdir(exist_ok=True)
        env = app_environment(
            DATABASE_URL=url,
            BROKER_URL=redis_server.url,
            SECRET_KEY=secrets.token_urlsafe(32),
            # Plain http on loopback: the session cookie must travel without TLS here.
            PUBLIC_BASE_URL=base,
            SESSION_COOKIE_SECURE="0",
            INSTANCE_DIR=str(instance),
            DISPATCH_INTERVAL_SECONDS="5",
            TWILIO_ACCOUNT_SID=twilio.account_sid,
            TWILIO_AUTH_TOKEN=twilio.auth_token,
            TWILIO_FROM_NUMBER=FROM_NUMBER,
            TWILIO_BASE_URL=twilio.base_url,
            SMTP_HOST=smtp.host,
            SMTP_PORT=str(smtp.port),
            SMTP_FROM="Riverside Radiation Oncology <clinic@demo.example>",
            PYTHONUNBUFFERED="1",
        )
        settings = load_settings(env)
        rng = random.Random(11)
        now = datetime.now(UTC)
        sessions = make_session_factory(engine)
        with sessions() as session:
            plan = seed_load_department(
                session, settings, booked=booked, drafts=drafts, now=now, rng=rng
            )
        plan_path = out / "plan.json"
        plan_path.write_text(json.dumps(plan.as_json()))

        pipeline = Pipeline(out, env)
        pipeline.start_command(
            "web",
            [
                sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
                "--no-control-socket", "--access-logfile", "-",
                "--logger-class", "web.access_log.RedactingLogger", "web:create_app()",
            ],
        )  # fmt: skip
        pipeline.start_worker("worker-a")
        pipeline.start_worker("worker-b")
        pipeline.start_beat("beat")
        pipeline.wait_ready()
        pipeline.wait_for("the web app answering", lambda: _healthy(base), timeout=60)

        run_seconds = minutes * 60
        run_start = datetime.now(UTC)
        with sessions() as session:
            make_due_during(session, run_start + timedelta(seconds=5), run_seconds - 10, rng)
        csv_prefix = out / "locust"
        locust = pipeline.start_command(
            "locust",
            [
                sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
                "--host", base, "--users", str(users), "--spawn-rate", str(spawn_rate),
                "--run-time", f"{int(run_seconds)}s", "--stop-timeout", "10",
                "--csv", str(csv_prefix), "--only-summary", "--loglevel", "WARNING",
            ],
            LOAD_PLAN=str(plan_path),
        )  # fmt: skip
        locust.killed = True  # it ends by itself: its exit is awaited, not a failure
        pipeline.wait_for(
            "Locust to finish",
            lambda: locust.popen.poll() is not None,
            timeout=run_seconds + 120,
            interval=1.0,
        )
        run_end = datetime.now(UTC)
        if locust.popen.returncode not in (0, 1):  # 1: Locust saw failed requests
            raise RuntimeError(pipeline.report(f"locust exited with {locust.popen.returncode}"))
        _read_stats(outcome, Path(f"{csv_prefix}_stats.csv"))

        # Reminders due by the end go out within a few ticks of it.
        pipeline.wait_for(
            "every reminder due by the end of the run settled",
            lambda: _due_settled(engine, run_end),
            timeout=DRAIN_SECONDS,
            interval=1.0,
        )
        pipeline.stop_all()
        outcome.overlaps = db.overlap_counts(engine)
        _check_reminders(outcome, engine, twilio, smtp, run_end)
        return outcome
    finally:
        if pipeline is not None:
            pipeline.stop_all()
        redis_server.kill()
        twilio.stop()
        smtp.stop()
        engine.dispose()
        db.drop_postgres_database(url)


def _healthy(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _read_stats(outcome: Outcome, path: Path) -> None:
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["Name"] == "Aggregated":
                outcome.rps = float(row["Requests/s"])
                continue
            if row["Type"] == "409":
                outcome.lost_races[row["Name"]] = int(row["Request Count"])
                continue
            outcome.endpoints.append(
                Endpoint(
                    name=row["Name"],
                    requests=int(row["Request Count"]),
                    failures=int(row["Failure Count"]),
                    p50=float(row["50%"] if row["50%"] != "N/A" else 0),
                    p95=float(row["95%"] if row["95%"] != "N/A" else 0),
                    p99=float(row["99%"] if row["99%"] != "N/A" else 0),
                    max=float(row["Max Response Time"]),
                )
            )


def _due_settled(engine: sa.Engine, end: datetime) -> bool:
    with engine.connect() as conn:
        open_rows = conn.execute(
            sa.select(sa.func.count())
            .select_from(Reminder)
            .where(Reminder.due_at <= end, Reminder.status.not_in(list(FINAL_STATUSES)))
        ).scalar_one()
    return open_rows == 0


def _check_reminders(
    outcome: Outcome, engine: sa.Engine, twilio: FakeTwilio, smtp: FakeSmtp, end: datetime
) -> None:
    problems = outcome.reminder_problems
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(Reminder.id, Reminder.status, Reminder.channel, Reminder.provider_id).where(
                Reminder.due_at <= end
            )
        ).all()
        all_sent_ids = set(
            conn.scalars(sa.select(Reminder.provider_id).where(Reminder.provider_id.is_not(None)))
        )
    outcome.reminders_due = len(rows)
    outcome.statuses = dict(Counter(str(r.status) for r in rows))
    bad = Counter(
        str(r.status)
        for r in rows
        if r.status
        not in (ReminderStatus.SENT, ReminderStatus.SUPERSEDED, ReminderStatus.SUPPRESSED)
    )
    if bad:
        problems.append(f"due reminders not sent: {dict(bad)}")
    sent_sms = {
        r.provider_id for r in rows if r.status == ReminderStatus.SENT and r.channel == "sms"
    }
    sent_email = {
        r.provider_id for r in rows if r.status == ReminderStatus.SENT and r.channel == "email"
    }
    creates = twilio.create_requests
    answered = Counter(r.status for r in creates)
    if set(answered) - {201}:
        problems.append(f"Twilio requests not accepted: {dict(answered)}")
    if twilio.violations:
        problems.append(f"requests breaking Twilio's API: {twilio.violations[:3]}")
    # One provider request per SMS reminder sent: any more is a reminder sent twice. (Two
    # reminders may rightly carry the same text to one patient, e.g. two moves to one time, so
    # equal number and text is not the test.)
    sent_twice = sum(1 for r in creates if r.status == 201) - len(sent_sms)
    if sent_twice > 0:
        problems.append(f"SMS sent twice: {sent_twice}")
    messages = twilio.messages
    outcome.sms_sent = len(messages)
    if set(messages) != all_sent_ids & set(messages) or not sent_sms <= set(messages):
        problems.append("the SMS the provider holds and the sent reminders differ")
    if len(messages) != len({p for p in all_sent_ids if p and p.startswith("SM")}):
        problems.append(
            f"the provider holds {len(messages)} SMS for"
            f" {len({p for p in all_sent_ids if p and p.startswith('SM')})} sent SMS reminders"
        )
    mails = smtp.messages
    outcome.emails_sent = len(mails)
    ids = Counter(m.parsed()["Message-ID"] for m in mails)
    if any(n > 1 for n in ids.values()):
        problems.append("an email was delivered twice")
    if not sent_email <= set(ids):
        problems.append(f"{len(sent_email - set(ids))} emails recorded sent but not received")
    email_ids = {p for p in all_sent_ids if p and p.startswith("<")}
    if set(ids) != email_ids:
        problems.append(
            f"the SMTP server took {len(ids)} emails for {len(email_ids)} sent email reminders"
        )


def record(outcome: Outcome, command: str) -> None:
    """Put the run's table into bench/RESULTS.md (in the notes, which `make bench` keeps)."""
    block = "\n".join(
        [
            LOAD_START,
            "### Load test (`make load`)",
            "",
            f"Measured {outcome.started} with `{command}`: {outcome.users} simulated schedulers"
            f" for {outcome.minutes:g} min (think time 2-6 s; mix: week calendar 40, patient"
            " search 20, course page 20, proposals 10, booking and moves 10) against gunicorn"
            " (2 web processes), 2 Celery workers (2 pool processes each) and beat, PostgreSQL"
            " and a Redis of the run's own, while the seeded reminders came due over the run."
            f" Machine at start: {outcome.machine}.",
            "",
            outcome.table(),
            LOAD_END,
        ]
    )
    text = RESULTS.read_text()
    if LOAD_START in text:
        text = re.sub(
            re.escape(LOAD_START) + ".*?" + re.escape(LOAD_END), lambda _: block, text, flags=re.S
        )
    else:
        text = text.replace(NOTES_END, block + "\n\n" + NOTES_END, 1)
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--users", type=int, default=int(os.environ.get("LOAD_USERS") or 50))
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("LOAD_MINUTES") or 5))
    parser.add_argument("--booked", type=int, default=120, help="booked courses seeded")
    parser.add_argument("--drafts", type=int, default=400, help="courses waiting to be booked")
    parser.add_argument("--out", type=Path, default=db.OUT_DIR / "load")
    parser.add_argument("--record", action="store_true", help="write bench/RESULTS.md")
    args = parser.parse_args(argv)
    outcome = run(args.users, args.minutes, args.out, booked=args.booked, drafts=args.drafts)
    print(outcome.table())
    (args.out / "outcome.json").write_text(
        json.dumps({**asdict(outcome), "missed": outcome.missed()}, indent=1)
    )
    if args.record:
        command = "python -m bench.load " + " ".join(argv if argv is not None else sys.argv[1:])
        record(outcome, command.strip())
    return 1 if outcome.missed() else 0


if __name__ == "__main__":
    sys.exit(main())
