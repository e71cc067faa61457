"""Reading the audit log: the admin page's filters and its CSV export.

An entry names its record by type and id; its detail holds ids, counts and codes. The export
still takes nothing on trust: a detail value that is not a number, a flag or a list of them
is withheld unless its key is one that holds codes (a status, a page, a time zone) and it
looks like one, so no name, phone number or note typed by someone can leave the system in a
spreadsheet, even if a future entry carried one.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, User
from scheduler.timeutil import local_to_utc

# Ids are 32-bit integers in the database; a larger one matches nothing and is refused.
MAX_ID = 2**31 - 1
# Dates outside these years are typing slips, and the day after 9999-12-31 does not exist.
FIRST_YEAR, LAST_YEAR = 2000, 2999
# What a detail string may look like to be exported: a code, a path, a time, a zone name...
SHORT_CODE = re.compile(r"^[A-Za-z0-9_./:+-]{0,80}$")
# ...under a key that holds such codes (export filters are "filter_" keys).
CODE_KEYS = frozenset(
    {
        "path",
        "method",
        "page",
        "part",
        "kind",
        "status",
        "reason",
        "step",
        "record",
        "language",
        "timezone",
        "first",
        "last",
    }
)
WITHHELD = "[withheld]"
CSV_COLUMNS = (
    "id",
    "at_utc",
    "actor_id",
    "actor_email",
    "action",
    "record_type",
    "record_id",
    "method",
    "path",
    "detail",
)
EXPORT_BATCH = 500


@dataclass(frozen=True)
class AuditFilters:
    """What the admin asked to see; every filter that is set must match (they combine)."""

    user_id: int | None = None
    record_type: str | None = None
    record_id: int | None = None
    action: str | None = None
    first_day: date | None = None
    last_day: date | None = None

    def query_args(self) -> dict[str, str]:
        """The filters as the page's query string, for links that keep them."""
        values = {
            "user": self.user_id,
            "record_type": self.record_type,
            "record_id": self.record_id,
            "action": self.action,
            "from": self.first_day,
            "to": self.last_day,
        }
        return {k: str(v) for k, v in values.items() if v is not None}

    def as_detail(self) -> dict[str, Any]:
        """The filters as an audit entry's detail (codes and ids only)."""
        return {f"filter_{k}": v for k, v in self.query_args().items()}


def parse_filters(
    args: Mapping[str, str], *, record_types: set[str], actions: set[str]
) -> tuple[AuditFilters, dict[str, str]]:
    """The filters from a query string, and a readable message for each bad one."""
    errors: dict[str, str] = {}

    def text(name: str) -> str:
        return (args.get(name) or "").strip()

    def whole(name: str, label: str) -> int | None:
        raw = text(name)
        if not raw:
            return None
        if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= MAX_ID:
            errors[name] = f"The {label} must be a whole number from 1 to {MAX_ID}."
            return None
        return int(raw)

    def day(name: str, label: str) -> date | None:
        raw = text(name)
        if not raw:
            return None
        try:
            value = date.fromisoformat(raw) if raw.isascii() else None
        except ValueError:
            value = None
        if value is None or not FIRST_YEAR <= value.year <= LAST_YEAR:
            errors[name] = f"The {label} must be a date such as 2026-03-02."
            return None
        return value

    record_type = text("record_type") or None
    if record_type is not None and record_type not in record_types:
        errors["record_type"] = "Choose a record type from the list."
        record_type = None
    action = text("action") or None
    if action is not None and action not in actions:
        errors["action"] = "Choose an action from the list."
        action = None
    filters = AuditFilters(
        user_id=whole("user", "user"),
        record_type=record_type,
        record_id=whole("record_id", "record id"),
        action=action,
        first_day=day("from", "first day"),
        last_day=day("to", "last day"),
    )
    if filters.first_day and filters.last_day and filters.first_day > filters.last_day:
        errors["to"] = "The last day must not be before the first day."
    return filters, errors


def statement(filters: AuditFilters, tz: str) -> sa.Select:
    """Entries matching every filter, newest first, with the acting user's name and email.
    Days are the department's local days, both ends included."""
    query = sa.select(AuditEntry, User.name, User.email).outerjoin(
        User, User.id == AuditEntry.actor_id
    )
    if filters.user_id is not None:
        query = query.where(AuditEntry.actor_id == filters.user_id)
    if filters.record_type is not None:
        query = query.where(AuditEntry.subject_type == filters.record_type)
    if filters.record_id is not None:
        query = query.where(AuditEntry.subject_id == filters.record_id)
    if filters.action is not None:
        query = query.where(AuditEntry.action == filters.action)
    if filters.first_day is not None:
        query = query.where(AuditEntry.at >= _day_start(filters.first_day, tz))
    if filters.last_day is not None:
        query = query.where(AuditEntry.at < _day_start(filters.last_day + timedelta(days=1), tz))
    return query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc())


def _day_start(day: date, tz: str) -> datetime:
    # Midnight may not exist (a zone that springs forward at 00:00) or happen twice: the
    # lenient reading gives the day's first instant either way.
    return local_to_utc(datetime.combine(day, time()), tz)


def choices(session: Session) -> tuple[list[tuple[int, str]], list[str], list[str]]:
    """Users, record types and actions the filters offer."""
    users = [
        (user_id, f"{name} ({email})")
        for user_id, name, email in session.execute(
            sa.select(User.id, User.name, User.email).order_by(User.name, User.id)
        )
    ]
    types = list(
        session.scalars(
            sa.select(AuditEntry.subject_type).distinct().order_by(AuditEntry.subject_type)
        )
    )
    actions = list(
        session.scalars(sa.select(AuditEntry.action).distinct().order_by(AuditEntry.action))
    )
    return users, types, actions


def exportable_detail(detail: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entry's detail without its page and method, each value kept only when it is
    plainly not personal data."""
    return {
        key: _exportable(key, value)
        for key, value in (detail or {}).items()
        if key not in ("path", "method")
    }


def _exportable(key: str, value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple) and all(
        v is None or isinstance(v, bool | int | float) for v in value
    ):
        return list(value)
    if not (key in CODE_KEYS or key.startswith("filter_")):
        return WITHHELD
    if isinstance(value, str):
        return value if SHORT_CODE.match(value) else WITHHELD
    if isinstance(value, list | tuple) and all(
        isinstance(v, str) and SHORT_CODE.match(v) for v in value
    ):
        return list(value)
    return WITHHELD


def _cell(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text: a leading =, +, - or @ would make it a
    formula (the user list holds names someone typed)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_lines(session: Session, filters: AuditFilters, tz: str) -> Iterator[str]:
    """The matching entries as CSV text, header first, a batch of rows at a time.

    Each batch is read in its own short transaction, ended before the batch is sent: a slow
    download must not hold a transaction open (on SQLite that would hold the write lock).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    base = statement(filters, tz)
    after: tuple[datetime, int] | None = None
    while True:
        query = base
        if after is not None:
            at, entry_id = after
            query = query.where(
                sa.or_(AuditEntry.at < at, sa.and_(AuditEntry.at == at, AuditEntry.id < entry_id))
            )
        rows = session.execute(query.limit(EXPORT_BATCH)).all()
        for entry, _name, email in rows:
            writer.writerow(_row(entry, email))
        last = (rows[-1][0].at, rows[-1][0].id) if rows else None
        # Ended before anything is sent (a rollback also expires the rows: read them first).
        session.rollback()
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(rows) < EXPORT_BATCH:
            return
        after = last


def _row(entry: AuditEntry, email: str | None) -> list[str]:
    detail = entry.detail or {}
    return [
        _cell(entry.id),
        _cell(entry.at.isoformat()),
        _cell(entry.actor_id),
        _cell(email),
        _cell(entry.action),
        _cell(entry.subject_type),
        _cell(entry.subject_id),
        _cell(_exportable("method", detail.get("method"))),
        _cell(_exportable("path", detail.get("path"))),
        _cell(json.dumps(exportable_detail(detail), sort_keys=True, default=str)),
    ]
