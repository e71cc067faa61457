"""Numbers, dates and times typed into pages' query strings and forms, parsed within the bounds
the database and the calendar arithmetic can hold.

``str.isdigit`` accepts superscript digits that ``int`` refuses; ``int`` accepts numbers that a
PostgreSQL integer column cannot hold; ``date.fromisoformat`` accepts 9999-12-31, after which
adding a session's length or moving to another time zone overflows. Every page reads such values
through these helpers, so bad input is a 400 or a field error, never a server error.
"""

from __future__ import annotations

from datetime import date, datetime, time

from flask import abort, request

from scheduler.records import MAX_RECORD_ID as MAX_ID

# The product's horizon: nobody living was born before 1900, and nothing is booked, closed or
# down more than a lifetime ahead. Years outside overflow nothing but are surely typing errors,
# and keeping far from 1 and 9999 leaves room for every offset and duration added to them.
MIN_YEAR = 1900
MAX_YEAR = 2200
DATE_RANGE_TEXT = f"between {MIN_YEAR} and {MAX_YEAR}"
DATE_RANGE_MESSAGE = f"must be a date {DATE_RANGE_TEXT}"


def int_or_none(value: str | None, *, low: int = 0, high: int = MAX_ID) -> int | None:
    """``value`` as an int between ``low`` and ``high`` (ASCII digits, optional sign); else None."""
    if value is None:
        return None
    text = value.strip()
    digits = text[1:] if text[:1] in "+-" else text
    # isascii first: isdigit also accepts superscripts and other scripts' digits.
    if not digits or not digits.isascii() or not digits.isdigit() or len(digits) > 12:
        return None
    number = int(text)
    return number if low <= number <= high else None


def parse_date(value: str) -> date:
    """An ISO date within the product's horizon; ValueError otherwise."""
    day = date.fromisoformat(value.strip())
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise ValueError(DATE_RANGE_MESSAGE)
    return day


def parse_datetime(value: str) -> datetime:
    """An ISO date and time (naive or with an offset; ``Z`` is UTC) within the product's
    horizon; ValueError otherwise."""
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise ValueError(DATE_RANGE_MESSAGE)
    return moment


def parse_time(value: str) -> time:
    """An ISO time of day; ValueError otherwise (kept here so every page parses alike)."""
    return time.fromisoformat(value.strip())


def query_int(name: str, default: int, *, low: int = 0, high: int = MAX_ID) -> int:
    """The query argument ``name`` as an int in [low, high], ``default`` when absent; a 400
    naming the argument when it is something else."""
    value = request.args.get(name, "")
    if not value:
        return default
    number = int_or_none(value, low=low, high=high)
    if number is None:
        abort(400, f"{name} must be a whole number from {low} to {high}.")
    return number


def query_date(name: str, default: date) -> date:
    """The query argument ``name`` as a date, ``default`` when absent; a 400 otherwise."""
    value = request.args.get(name, "")
    if not value:
        return default
    try:
        return parse_date(value)
    except ValueError:
        abort(400, f"{name} must be a date such as 2026-03-09, between {MIN_YEAR} and {MAX_YEAR}.")
