"""The audit export's pure parts: local days, what detail may leave, spreadsheet-safe cells."""

from __future__ import annotations

from datetime import UTC, date, datetime

from web import audit_log


def test_a_day_starts_at_its_first_instant_even_when_midnight_does_not_exist():
    # Santiago springs forward at midnight on 6 September 2026: the day starts at 01:00 -03.
    assert audit_log._day_start(date(2026, 9, 6), "America/Santiago") == datetime(
        2026, 9, 6, 4, 0, tzinfo=UTC
    )
    assert audit_log._day_start(date(2026, 3, 2), "America/New_York") == datetime(
        2026, 3, 2, 5, 0, tzinfo=UTC
    )


def test_only_numbers_flags_and_codes_under_code_keys_leave_in_the_detail():
    detail = {
        "path": "/patients/4",
        "method": "GET",
        "course_id": 12,
        "overridden": True,
        "fractions": [1, 2, 3],
        "status": "needs_review",
        "timezone": "America/New_York",
        "reason": "Patient Jane Doe unwell",
        "phone": "+12025550143",
        "given_name": "Jane",
        "record": ["plan_approved", "physics_qa"],
        "ids": ["Jane"],
        "nested": {"name": "Jane"},
    }
    assert audit_log.exportable_detail(detail) == {
        "course_id": 12,
        "overridden": True,
        "fractions": [1, 2, 3],
        "status": "needs_review",
        "timezone": "America/New_York",
        "reason": "[withheld]",
        "phone": "[withheld]",
        "given_name": "[withheld]",
        "record": ["plan_approved", "physics_qa"],
        "ids": "[withheld]",
        "nested": "[withheld]",
    }


def test_cells_never_start_a_formula():
    assert audit_log._cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert audit_log._cell("@SUM(A1)") == "'@SUM(A1)"
    assert audit_log._cell("-1") == "'-1"
    assert audit_log._cell(None) == ""
    assert audit_log._cell(42) == "42"
