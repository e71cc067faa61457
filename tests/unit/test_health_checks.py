"""The readiness checks' thresholds and figures, at pinned instants (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from config import load_settings
from scheduler import health, task_failures
from scheduler.health import CheckName, Status

NOW = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)


def _settings(**env: str):
    return load_settings({"SECRET_KEY": "k", "INSTANCE_DIR": "/nonexistent", **env})


def test_limits_follow_the_dispatch_interval_by_default() -> None:
    default = _settings()
    assert default.beat_stale_after == 90  # three 30 s ticks
    assert default.worker_stale_after == 90  # a worker stamps as often as beat ticks
    assert default.reminder_lag_limit == 300
    fast = _settings(DISPATCH_INTERVAL_SECONDS="1")
    # Never so tight that one late tick on a busy host reads as an outage.
    assert fast.beat_stale_after == 15
    assert fast.worker_stale_after == 15
    assert fast.reminder_lag_limit == 300
    slow = _settings(DISPATCH_INTERVAL_SECONDS="60")
    assert (slow.beat_stale_after, slow.reminder_lag_limit) == (180, 600)


def test_explicit_limits_win_and_must_be_positive() -> None:
    settings = _settings(
        HEALTH_BEAT_STALE_SECONDS="7",
        HEALTH_WORKER_STALE_SECONDS="8",
        HEALTH_REMINDER_LAG_SECONDS="9",
        HEALTH_BROKER_TIMEOUT_SECONDS="0.5",
    )
    assert (settings.beat_stale_after, settings.worker_stale_after) == (7, 8)
    assert settings.reminder_lag_limit == 9
    assert settings.health_broker_timeout_seconds == 0.5
    for bad in ("0", "-3", "soon"):
        with pytest.raises(ValueError, match="HEALTH_BEAT_STALE_SECONDS"):
            _settings(HEALTH_BEAT_STALE_SECONDS=bad)


@pytest.mark.parametrize(
    ("age", "status"), [(0, Status.OK), (89.9, Status.OK), (90, Status.OK), (90.5, Status.FAIL)]
)
def test_beat_is_stopped_after_its_limit(age: float, status: Status) -> None:
    check = health.check_beat(NOW - timedelta(seconds=age), _settings(), now=NOW)
    assert (check.status, check.figure, check.unit) == (status, pytest.approx(age), "s")


def test_beat_that_never_ticked_fails_without_a_figure() -> None:
    check = health.check_beat(None, _settings(), now=NOW)
    assert (check.status, check.figure, check.detail) == (Status.FAIL, None, "has never ticked")


def test_a_stamp_ahead_of_the_clock_counts_as_fresh() -> None:
    check = health.check_beat(NOW + timedelta(seconds=3), _settings(), now=NOW)
    assert (check.status, check.figure) == (Status.OK, 0.0)


def test_worker_is_stopped_after_its_limit() -> None:
    settings = _settings(HEALTH_WORKER_STALE_SECONDS="150")
    stale = health.check_worker(NOW - timedelta(seconds=151), settings, now=NOW)
    assert (stale.status, stale.figure) == (Status.FAIL, 151)
    assert stale.detail == "no worker seen for 2 min (limit 2 min)"
    fresh = health.check_worker(NOW - timedelta(seconds=150), settings, now=NOW)
    assert (fresh.status, fresh.figure, fresh.detail) == (Status.OK, 150, "seen 2 min ago")
    never = health.check_worker(None, settings, now=NOW)
    assert (never.status, never.figure) == (Status.FAIL, None)


@pytest.mark.parametrize(
    ("lag", "status"),
    [
        (None, Status.OK),
        (0, Status.OK),
        (90, Status.OK),  # three 30 s dispatch rounds
        (91, Status.WARN),
        (300, Status.WARN),
        (301, Status.FAIL),
    ],
)
def test_reminder_lag_warns_then_fails(lag: float | None, status: Status) -> None:
    due_at = None if lag is None else NOW - timedelta(seconds=lag)
    check = health.check_reminder_lag(due_at, _settings(), now=NOW)
    assert check.status == status
    assert check.figure == (lag or 0)


def test_task_failures_only_warn() -> None:
    assert health.check_task_failures(0).status == Status.OK
    check = health.check_task_failures(3)
    assert (check.status, check.figure, check.detail) == (
        Status.WARN,
        3,
        "3 task failures in the last 60 min",
    )


def _report(**statuses: Status) -> health.HealthReport:
    checks = tuple(
        health.Check(CheckName(name), status, 1.0, "s", "") for name, status in statuses.items()
    )
    return health.HealthReport(NOW, checks)


def test_report_is_not_ok_on_any_failure_but_stalled_only_on_the_reminder_path() -> None:
    fine = _report(database=Status.OK, worker=Status.OK, task_failures=Status.WARN)
    assert fine.ok and not fine.reminders_stalled
    worker_down = _report(database=Status.OK, worker=Status.FAIL)
    assert not worker_down.ok and worker_down.reminders_stalled
    late = _report(reminder_lag=Status.FAIL)
    assert not late.ok and late.reminders_stalled
    as_json = worker_down.as_dict()
    assert as_json["status"] == "fail" and as_json["reminders_stalled"] is True
    assert as_json["checks"]["worker"] == {
        "name": "worker", "status": "fail", "figure": 1.0, "unit": "s", "detail": ""
    }  # fmt: skip


def test_broker_that_refuses_fails_without_naming_the_host() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    check = health.check_broker(f"redis://:secret@127.0.0.1:{port}/0", timeout=1.0)
    assert check.status == Status.FAIL and check.figure is None
    assert "127.0.0.1" not in check.detail and str(port) not in check.detail
    assert "secret" not in check.detail


def test_embedded_broker_connects(tmp_path) -> None:
    check = health.check_broker(f"sqla+sqlite:///{tmp_path / 'broker.db'}", timeout=2.0)
    assert check.status == Status.OK and check.figure is not None and check.figure >= 0


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        ("550 mailbox ana.example@mail.example.org unavailable", "550 mailbox [email] unavailable"),
        ("Unable to create record: +1 212-555-0123 is not a mobile", "is not a mobile"),
        ("The 'To' number +12125550123 is invalid", "The [value] number [number] is invalid"),
        ("token tk_3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c rejected", "token [token] rejected"),
        ("KeyError: 'Ana Example'", "KeyError: [value]"),
    ],
)
def test_failure_messages_are_masked(message: str, kept: str) -> None:
    masked = task_failures.mask(message)
    assert kept in masked
    for secret in ("ana.example", "212", "555", "0123", "tk_3f9a", "Ana"):
        assert secret not in masked


def test_failure_messages_are_cut_short() -> None:
    masked = task_failures.mask("x " * 1000)
    assert len(masked) == task_failures.MESSAGE_LIMIT and masked.endswith("…")
