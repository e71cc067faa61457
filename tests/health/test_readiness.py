"""readiness() over a real database (SQLite and PostgreSQL): what each check reads."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from config import Settings
from notifications.models import ReminderStatus
from scheduler import health, heartbeats
from scheduler.health import CheckName, Status
from tests.health import data


def _fresh_heartbeats(session: Session, now: datetime) -> None:
    data.stamp(session, heartbeats.BEAT, now - timedelta(seconds=5))
    data.stamp(session, heartbeats.WORKER, now - timedelta(seconds=6))


def test_all_fresh_is_ready(session: Session, settings: Settings, now: datetime) -> None:
    _fresh_heartbeats(session, now)
    report = health.readiness(session, settings, now=now)
    assert report.ok and not report.reminders_stalled
    assert [c.name for c in report.checks] == list(CheckName)
    assert {c.name: c.status for c in report.checks} == {name: Status.OK for name in CheckName}
    assert report.check(CheckName.BEAT).figure == 5
    assert report.check(CheckName.WORKER).figure == 6
    assert report.check(CheckName.DATABASE).figure >= 0


def test_empty_database_has_never_ticked(session: Session, settings: Settings, now) -> None:
    report = health.readiness(session, settings, now=now)
    assert not report.ok and report.reminders_stalled
    assert report.check(CheckName.BEAT).status == Status.FAIL
    assert report.check(CheckName.WORKER).detail == "no worker has ever run"


def test_stopped_worker_fails_with_beat_still_fine(
    session: Session, settings: Settings, now: datetime
) -> None:
    data.stamp(session, heartbeats.BEAT, now - timedelta(seconds=2))
    data.stamp(session, heartbeats.WORKER, now - timedelta(seconds=settings.worker_stale_after + 1))
    report = health.readiness(session, settings, now=now)
    assert report.check(CheckName.BEAT).status == Status.OK
    assert report.check(CheckName.WORKER).status == Status.FAIL
    assert not report.ok and report.reminders_stalled


def test_oldest_due_unsent_reminder_sets_the_lag(
    session: Session, settings: Settings, now: datetime
) -> None:
    _fresh_heartbeats(session, now)
    data.due_reminder(session, now - timedelta(seconds=40))
    data.due_reminder(session, now - timedelta(seconds=70), ReminderStatus.CLAIMED)
    # Not waiting: sent long ago, not yet due, or possibly sent (reconciled instead).
    data.due_reminder(session, now - timedelta(hours=5), ReminderStatus.SENT)
    data.due_reminder(session, now + timedelta(hours=1))
    data.due_reminder(session, now - timedelta(hours=3), ReminderStatus.UNKNOWN)
    report = health.readiness(session, settings, now=now)
    lag = report.check(CheckName.REMINDER_LAG)
    assert (lag.status, lag.figure) == (Status.OK, 70)
    assert report.ok


def test_overdue_reminder_makes_it_not_ready(
    session: Session, settings: Settings, now: datetime
) -> None:
    _fresh_heartbeats(session, now)
    waited = settings.reminder_lag_limit + 30
    data.due_reminder(session, now - timedelta(seconds=waited))
    report = health.readiness(session, settings, now=now)
    lag = report.check(CheckName.REMINDER_LAG)
    assert (lag.status, lag.figure) == (Status.FAIL, waited)
    assert not report.ok and report.reminders_stalled


def test_recent_task_failures_warn_and_old_ones_are_pruned(
    session: Session, settings: Settings, now: datetime
) -> None:
    _fresh_heartbeats(session, now)
    data.failure(
        session, "notifications.send_reminders", RuntimeError("x"), now - timedelta(days=40)
    )
    data.failure(
        session, "notifications.send_reminders", RuntimeError("x"), now - timedelta(hours=2)
    )
    report = health.readiness(session, settings, now=now)
    assert report.check(CheckName.TASK_FAILURES).status == Status.OK
    data.failure(
        session,
        "notifications.send_reminders",
        ConnectionError("550 ana@example.org refused"),
        now - timedelta(minutes=5),
    )
    report = health.readiness(session, settings, now=now)
    failures = report.check(CheckName.TASK_FAILURES)
    assert (failures.status, failures.figure) == (Status.WARN, 1)
    assert report.ok  # failures alone never stop readiness
    recent = health.task_failures.recent(session)
    # The 40-day-old one went when a newer one was recorded.
    assert [f.failed_at for f in recent] == [now - timedelta(minutes=5), now - timedelta(hours=2)]
    assert recent[0].exception_type == "ConnectionError"
    assert recent[0].message == "550 [email] refused"


def test_unreachable_database_fails_every_check_that_lives_in_it(
    settings: Settings, now: datetime, tmp_path
) -> None:
    from bootstrap import make_engine, make_session_factory

    # A directory where the database file should be: SQLite cannot open it.
    engine = make_engine(f"sqlite:///{tmp_path}")
    with make_session_factory(engine)() as broken:
        report = health.readiness(broken, settings, now=now)
    engine.dispose()
    assert not report.ok
    statuses = {c.name: c.status for c in report.checks}
    assert statuses[CheckName.DATABASE] == Status.FAIL
    assert statuses[CheckName.BROKER] == Status.OK  # the settings' in-memory broker
    for name in (CheckName.BEAT, CheckName.WORKER, CheckName.REMINDER_LAG):
        assert statuses[name] == Status.FAIL
        assert report.check(name).detail == "not known: database unreachable"
