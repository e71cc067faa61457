"""Use cases for reference records: departments, closures, linacs, protocols, patients, courses.

Each use case takes a SQLAlchemy Session, validates the whole resulting record (so an update
cannot leave it inconsistent), flushes and returns the row; the caller commits. Bad input raises
InvalidInput with one FieldError per field; a missing id raises NotFound. Updates take a mapping
of changed fields, which lets the API pass through exactly what a PATCH body set.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any, TypeVar
from zoneinfo import available_timezones

import email_validator
import phonenumbers
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from notifications import outbox
from notifications.policy import allowed_channels
from scheduler import links
from scheduler.context import local_day_bounds, roster_cover, supervised_sessions
from scheduler.errors import FieldError, InvalidInput, NotFound
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    Base,
    Closure,
    Course,
    Department,
    Downtime,
    Fraction,
    Linac,
    Patient,
    Protocol,
    Resource,
    ResourceKind,
    RosterBlock,
    RosterException,
)
from scheduler.plain_text import plain_text_problem
from scheduler.rules import CoverIndex
from scheduler.timeutil import format_local, local_date, to_local
from scheduler.types import Interval

# Limits shared with the API schemas, so the published OpenAPI document states the same rules.
MIN_FRACTIONS, MAX_FRACTIONS = 1, 5
MIN_SESSION_MINUTES, MAX_SESSION_MINUTES = 30, 120
MIN_PRIORITY, MAX_PRIORITY = 1, 5
LANGUAGES = frozenset({"en", "es"})
KNOWN_CAPABILITIES = frozenset({"sbrt", "cbct", "gating", "breath_hold", "imrt", "vmat", "srs"})
PHONE_DEFAULT_REGION = "US"
# A lowercase word: capabilities, beam groups and protocol sites are matched by equality, so a
# stray capital or space would silently make a machine look incapable.
WORD_RE = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
HHMM_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
# A date of birth before this is a typing slip (1857 for 1957), not a patient.
EARLIEST_BIRTH_DATE = date(1900, 1, 1)
# Ids are PostgreSQL ``integer`` columns.
MAX_RECORD_ID = 2**31 - 1
# Number types a patient's reminders must never be sent to: each text would cost the clinic a
# premium or shared charge, and none of them reaches a person's own phone.
UNREACHABLE_PHONE_TYPES = {
    phonenumbers.PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    phonenumbers.PhoneNumberType.SHARED_COST: "a shared-cost number",
    phonenumbers.PhoneNumberType.UAN: "a company's universal access number",
    # UK 070 "personal numbers" forward anywhere at up to premium rates.
    phonenumbers.PhoneNumberType.PERSONAL_NUMBER: "a personal (call-forwarding) number",
    phonenumbers.PhoneNumberType.PAGER: "a pager number",
    phonenumbers.PhoneNumberType.VOICEMAIL: "a voicemail access number",
}
# Reminder offsets, minutes before a session. A day-before reminder goes out on the day before
# whatever its offset (the policy keeps it inside that day's message window), so offsets past
# two days say nothing more; a same-day reminder must leave time to act on it yet stay on the day.
DAY_BEFORE_MINUTES = (6 * 60, 48 * 60)
SAME_DAY_MINUTES = (15, 12 * 60)
# Department fields holding its reminder cadence; a protocol has the same ones, null meaning
# "as the department".
REMINDER_CADENCE_FIELDS = {
    "day_before_reminder",
    "day_before_reminder_minutes",
    "same_day_reminder",
    "same_day_reminder_minutes",
}
# A department's message window: SMS and email go out only between these local times, so
# nobody is texted at night (the policy moves a reminder due outside it into it).
MESSAGE_WINDOW_FIELDS = ("message_window_start", "message_window_end")
DEFAULT_MESSAGE_WINDOW = {"message_window_start": "08:00", "message_window_end": "21:00"}
DEFAULT_REMINDER_CADENCE: dict[str, Any] = {
    "day_before_reminder": True,
    "day_before_reminder_minutes": 24 * 60,
    "same_day_reminder": True,
    "same_day_reminder_minutes": 120,
}

ModelT = TypeVar("ModelT", bound=Base)


class _Errors:
    """Collects field errors so one response can name every bad field at once."""

    def __init__(self) -> None:
        self.items: list[FieldError] = []

    def add(self, field: str, message: str) -> None:
        self.items.append(FieldError(field, message))

    def has(self, field: str) -> bool:
        return any(e.field == field or e.field.startswith(field + ".") for e in self.items)

    def raise_if_any(self, what: str) -> None:
        if self.items:
            raise InvalidInput(f"The {what} is not valid.", self.items)


# ---------------------------------------------------------------------------------------------
# Field validators: each returns the cleaned value, or records an error and returns the input.


def _text(
    errors: _Errors,
    field: str,
    value: Any,
    *,
    max_len: int,
    required: bool = True,
    multiline: bool = False,
) -> Any:
    """Plain text a person typed; ``multiline`` for free notes that may hold line breaks."""
    if value is None:
        if required:
            errors.add(field, "is required")
        return None
    if not isinstance(value, str):
        errors.add(field, "must be a string")
        return value
    value = value.strip()
    if required and not value:
        errors.add(field, "must not be blank")
    elif len(value) > max_len:
        errors.add(field, f"must be at most {max_len} characters")
    elif (problem := plain_text_problem(value, multiline=multiline)) is not None:
        errors.add(field, problem)
    return value if value or required else None


def _int(errors: _Errors, field: str, value: Any, *, lo: int | None, hi: int | None) -> Any:
    # bool is an int subclass; True as a fraction count is a client bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(field, "must be an integer")
        return value
    if lo is not None and value < lo:
        errors.add(field, f"must be at least {lo}")
    elif hi is not None and value > hi:
        errors.add(field, f"must be at most {hi}")
    return value


def _bool(errors: _Errors, field: str, value: Any) -> Any:
    if not isinstance(value, bool):
        errors.add(field, "must be true or false")
    return value


def _reminder_cadence(errors: _Errors, v: dict[str, Any], *, optional: bool) -> None:
    """Check the reminder cadence fields in ``v``; ``optional``: null means the department's."""
    for kind, (lo, hi) in (("day_before", DAY_BEFORE_MINUTES), ("same_day", SAME_DAY_MINUTES)):
        switch, minutes = f"{kind}_reminder", f"{kind}_reminder_minutes"
        if not (optional and v.get(switch) is None):
            _bool(errors, switch, v.get(switch))
        if not (optional and v.get(minutes) is None):
            _int(errors, minutes, v.get(minutes), lo=lo, hi=hi)


# Keys in the zone database that are not places: "localtime" is whatever the server is set to,
# "Factory" is a placeholder zone whose abbreviation reads "-00", and the posix/right trees are
# copies with other leap-second rules.
NOT_PLACES = frozenset({"localtime", "Factory", "posixrules"})
NOT_PLACE_PREFIXES = ("posix/", "right/")


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    # Scanning the zone database is slow; the set only changes with a tzdata upgrade.
    return frozenset(
        zone
        for zone in available_timezones()
        if zone not in NOT_PLACES and not zone.startswith(NOT_PLACE_PREFIXES)
    )


@lru_cache(maxsize=1)
def timezone_choices() -> tuple[str, ...]:
    """The zones offered in pick lists: places ("Area/City") and UTC, sorted.

    The legacy aliases (US/Eastern, EST5EDT, GMT+0, Etc/GMT-3 whose sign is the reverse of what
    people expect) stay valid for records stored with them, but are not offered for new ones.
    """
    return tuple(
        sorted(
            zone
            for zone in _zones()
            if zone == "UTC"
            or (
                "/" in zone
                and zone.split("/", 1)[0]
                not in {"Etc", "US", "Canada", "Mexico", "Brazil", "Chile", "SystemV"}
            )
        )
    )


def _timezone(errors: _Errors, field: str, value: Any, *, required: bool = True) -> Any:
    if value is None:
        if required:
            errors.add(field, "is required")
        return None
    # Membership rather than ZoneInfo(value): ZoneInfo also accepts file-like keys and
    # "localtime", which would make the zone depend on the server it runs on.
    if not isinstance(value, str) or value not in _zones():
        errors.add(field, "must be an IANA time zone such as Europe/London")
    return value


def _weekday_set(errors: _Errors, field: str, value: Any, *, required: bool = True) -> Any:
    if value is None:
        if required:
            errors.add(field, "is required")
        return None
    if not isinstance(value, list | tuple | set | frozenset) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 6 for d in value
    ):
        errors.add(field, "must be a list of weekdays 0 (Monday) to 6 (Sunday)")
        return value
    if not value:
        errors.add(field, "must name at least one weekday")
    return sorted(set(value))


def _words(errors: _Errors, field: str, value: Any) -> Any:
    if not isinstance(value, list | tuple | set | frozenset) or not all(
        isinstance(w, str) for w in value
    ):
        errors.add(field, "must be a list of words")
        return value
    for word in value:
        if not WORD_RE.match(word):
            known = ", ".join(sorted(KNOWN_CAPABILITIES))
            errors.add(field, f"{word!r} is not a lowercase word (known: {known})")
    return sorted(set(value))


def _opening_hours(errors: _Errors, field: str, value: Any, *, required: bool = True) -> Any:
    """``{"0": ["07:00", "19:00"], ...}``: Monday=0; a missing weekday is closed."""
    if value is None:
        if required:
            errors.add(field, "is required")
        return None
    if not isinstance(value, Mapping):
        errors.add(field, 'must map weekdays "0".."6" to ["HH:MM", "HH:MM"]')
        return value
    cleaned: dict[str, list[str]] = {}
    for key, window in value.items():
        day = str(key)
        where = f"{field}.{day}"
        if day not in {str(d) for d in range(7)}:
            errors.add(where, "weekday must be 0 (Monday) to 6 (Sunday)")
            continue
        if (
            not isinstance(window, list | tuple)
            or len(window) != 2
            or not all(isinstance(t, str) and HHMM_RE.match(t) for t in window)
        ):
            errors.add(where, 'must be ["HH:MM", "HH:MM"] in 24-hour local time')
            continue
        opens, closes = window
        if opens >= closes:  # zero-padded HH:MM compares correctly as text
            errors.add(where, "must open before it closes")
            continue
        cleaned[day] = [opens, closes]
    return dict(sorted(cleaned.items()))


def _phone(
    errors: _Errors, field: str, value: Any, *, refused_types: Mapping[int, str] | None = None
) -> str | None:
    """An E.164 number; ``refused_types`` maps number types to refuse to how they are named."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        errors.add(field, "must be a string")
        return None
    try:
        parsed = phonenumbers.parse(value, PHONE_DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        errors.add(field, "is not a phone number")
        return None
    if not phonenumbers.is_valid_number(parsed):
        errors.add(field, "is not a valid phone number (use E.164 such as +14155550100)")
        return None
    kind = (refused_types or {}).get(phonenumbers.number_type(parsed))
    if kind is not None:
        errors.add(field, f"is {kind}; give the patient's own mobile or landline number")
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _email(errors: _Errors, field: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        errors.add(field, "must be a string")
        return None
    try:
        # Deliverability needs DNS: slow, flaky offline, and not our business at data entry.
        return email_validator.validate_email(value.strip(), check_deliverability=False).normalized
    except email_validator.EmailNotValidError as exc:
        errors.add(field, f"is not a valid email address: {exc}")
        return None


def _date(errors: _Errors, field: str, value: Any, *, required: bool = True) -> Any:
    if value is None:
        if required:
            errors.add(field, "is required")
        return None
    if isinstance(value, datetime) or not isinstance(value, date):
        errors.add(field, "must be a date (YYYY-MM-DD)")
    return value


def _date_of_birth(errors: _Errors, value: Any, *, required: bool, today: date) -> Any:
    field = "date_of_birth"
    value = _date(errors, field, value, required=required)
    if value is None or errors.has(field):
        return value
    if value > today:
        errors.add(field, "must not be in the future")
    elif value < EARLIEST_BIRTH_DATE:
        errors.add(field, f"must be on or after {EARLIEST_BIRTH_DATE.isoformat()}")
    return value


def _exists(
    session: Session, errors: _Errors, field: str, model: type[Base], record_id: Any
) -> Any:
    if record_id is None:
        errors.add(field, "is required")
        return None
    if isinstance(record_id, bool) or not isinstance(record_id, int):
        errors.add(field, "must be an integer id")
        return None
    # Beyond the id column's range no row can exist, and PostgreSQL refuses to compare.
    row = session.get(model, record_id) if 0 < record_id <= MAX_RECORD_ID else None
    if row is None:
        errors.add(field, f"no {model.__tablename__[:-1]} with id {record_id}")
    return row


# ---------------------------------------------------------------------------------------------
# Shared plumbing


def _get(session: Session, model: type[ModelT], record_id: int) -> ModelT:
    row = session.get(model, record_id)
    if row is None:
        raise NotFound(f"No {model.__tablename__[:-1]} with id {record_id}.")
    return row


def _unknown_fields(values: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise InvalidInput(
            "Unknown fields.", [FieldError(name, "is not a known field") for name in unknown]
        )


def _current(row: Base, fields: set[str]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in fields}


def _save(session: Session, row: Base, values: Mapping[str, Any], what: str) -> None:
    for name, value in values.items():
        setattr(row, name, value)
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        # The pre-checks cover the unique keys; this is a concurrent writer winning the race.
        raise InvalidInput(
            f"The {what} conflicts with an existing record; reload and try again."
        ) from exc


def _upsert(
    session: Session,
    model: type[ModelT],
    record_id: int | None,
    values: Mapping[str, Any],
    *,
    fields: set[str],
    defaults: Mapping[str, Any],
    validate: Callable[[Session, dict[str, Any], ModelT | None], dict[str, Any]],
    what: str,
) -> ModelT:
    """Create (record_id None) or update a row after validating the merged record."""
    _unknown_fields(values, fields)
    existing = None if record_id is None else _get(session, model, record_id)
    base = dict(defaults) if existing is None else _current(existing, fields)
    cleaned = validate(session, {**base, **values}, existing)
    row = existing if existing is not None else model()
    _save(session, row, cleaned, what)
    return row


# ---------------------------------------------------------------------------------------------
# Departments

DEPARTMENT_FIELDS = {
    "name",
    "timezone",
    "phone",
    "holiday_country",
    "holiday_subdivision",
    "opening_hours",
    *MESSAGE_WINDOW_FIELDS,
    *REMINDER_CADENCE_FIELDS,
}
DEFAULT_OPENING_HOURS = {str(d): ["07:00", "19:00"] for d in range(5)}


def _validate_department(
    session: Session, v: dict[str, Any], existing: Department | None
) -> dict[str, Any]:
    errors = _Errors()
    v["name"] = _text(errors, "name", v.get("name"), max_len=200)
    v["timezone"] = _timezone(errors, "timezone", v.get("timezone"))
    v["phone"] = _phone(
        errors,
        "phone",
        v.get("phone"),
        # Patients call this number back: never at a premium rate.
        refused_types={phonenumbers.PhoneNumberType.PREMIUM_RATE: "a premium-rate number"},
    )
    v["opening_hours"] = _opening_hours(errors, "opening_hours", v.get("opening_hours"))
    country = v.get("holiday_country")
    subdivision = v.get("holiday_subdivision")
    if country is not None:
        import holidays  # imported here: loading its country tables is slow

        supported = holidays.list_supported_countries()
        if not isinstance(country, str) or country.upper() not in supported:
            errors.add("holiday_country", "must be a supported ISO 3166 country code such as US")
        else:
            v["holiday_country"] = country = country.upper()
            if subdivision is not None and subdivision not in supported[country]:
                errors.add("holiday_subdivision", f"is not a subdivision of {country}")
    elif subdivision is not None:
        errors.add("holiday_subdivision", "needs a holiday_country")
    _message_window(errors, v)
    _reminder_cadence(errors, v, optional=False)
    errors.raise_if_any("department")
    return v


def _message_window(errors: _Errors, v: dict[str, Any]) -> None:
    """Both ends as 24-hour HH:MM, the start before the end (a window over midnight would
    let messages out at night)."""
    for name in MESSAGE_WINDOW_FIELDS:
        value = v.get(name)
        if not isinstance(value, str) or not HHMM_RE.match(value):
            errors.add(name, "must be a time HH:MM (24-hour)")
    if not any(errors.has(name) for name in MESSAGE_WINDOW_FIELDS) and (
        v["message_window_start"] >= v["message_window_end"]
    ):
        errors.add("message_window_end", "must be after the start")


def create_department(session: Session, values: Mapping[str, Any]) -> Department:
    return _upsert(
        session,
        Department,
        None,
        values,
        fields=DEPARTMENT_FIELDS,
        defaults={
            "opening_hours": DEFAULT_OPENING_HOURS,
            **DEFAULT_MESSAGE_WINDOW,
            **DEFAULT_REMINDER_CADENCE,
        },
        validate=_validate_department,
        what="department",
    )


def update_department(
    session: Session,
    department_id: int,
    changes: Mapping[str, Any],
    *,
    now: datetime | None = None,
) -> Department:
    _unknown_fields(changes, DEPARTMENT_FIELDS)
    department = _get(session, Department, department_id)
    cleaned = _validate_department(
        session, {**_current(department, DEPARTMENT_FIELDS), **changes}, department
    )
    _apply_cadence(
        session,
        department,
        cleaned,
        now,
        # The window decides when each reminder goes out, so a new one re-plans them too.
        fields=(*REMINDER_CADENCE_FIELDS, *MESSAGE_WINDOW_FIELDS),
        department_id=department.id,
    )
    _save(session, department, cleaned, "department")
    return department


def _apply_cadence(
    session: Session,
    row: Department | Protocol,
    cleaned: Mapping[str, Any],
    now: datetime | None,
    *,
    fields: Iterable[str] = tuple(REMINDER_CADENCE_FIELDS),
    **which: int,
) -> None:
    """A changed reminder cadence re-plans the reminders still ahead, in the same transaction."""
    fields = tuple(fields)
    if all(getattr(row, name) == cleaned[name] for name in fields):
        return
    for name in fields:
        setattr(row, name, cleaned[name])
    outbox.replan_for_cadence(session, now=now or datetime.now(UTC), **which)


def get_department(session: Session, department_id: int) -> Department:
    return _get(session, Department, department_id)


def list_departments(session: Session) -> list[Department]:
    return list(session.scalars(sa.select(Department).order_by(Department.id)))


# ---------------------------------------------------------------------------------------------
# Closures


def add_closure(session: Session, department_id: int, *, day: date, reason: str) -> Closure:
    department = _get(session, Department, department_id)
    errors = _Errors()
    day = _date(errors, "day", day)
    reason = _text(errors, "reason", reason, max_len=200)
    if not errors.has("day") and session.scalar(
        sa.select(Closure.id).where(Closure.department_id == department.id, Closure.day == day)
    ):
        errors.add("day", "is already a closure day for this department")
    errors.raise_if_any("closure")
    closure = Closure(department_id=department.id)
    _save(session, closure, {"day": day, "reason": reason}, "closure")
    return closure


def remove_closure(session: Session, closure_id: int) -> None:
    session.delete(_get(session, Closure, closure_id))
    session.flush()


def list_closures(
    session: Session,
    department_id: int,
    *,
    start: date | None = None,
    end: date | None = None,
) -> list[Closure]:
    _get(session, Department, department_id)
    query = sa.select(Closure).where(Closure.department_id == department_id)
    if start is not None:
        query = query.where(Closure.day >= start)
    if end is not None:
        query = query.where(Closure.day <= end)
    return list(session.scalars(query.order_by(Closure.day)))


# ---------------------------------------------------------------------------------------------
# Linacs

LINAC_FIELDS = {"department_id", "name", "capabilities", "beam_group", "opening_hours", "active"}


def _check_unique_name(
    session: Session,
    errors: _Errors,
    model: type[Linac] | type[Resource],
    department_id: int,
    name: str,
    existing: Base | None,
    what: str,
) -> None:
    """A department's linacs, and its rooms, are told apart by name."""
    clash = sa.select(model.id).where(model.department_id == department_id, model.name == name)
    if existing is not None:
        clash = clash.where(model.id != existing.id)
    if session.scalar(clash):
        errors.add("name", f"is already used by another {what} in this department")


def _validate_linac(session: Session, v: dict[str, Any], existing: Linac | None) -> dict[str, Any]:
    errors = _Errors()
    if existing is not None and v["department_id"] != existing.department_id:
        # Fractions and beam groups are department-local; moving a machine is a new linac.
        errors.add("department_id", "cannot be changed")
    department = _exists(session, errors, "department_id", Department, v.get("department_id"))
    v["name"] = _text(errors, "name", v.get("name"), max_len=100)
    v["capabilities"] = _words(errors, "capabilities", v.get("capabilities"))
    beam_group = v.get("beam_group")
    if beam_group is not None and (
        not isinstance(beam_group, str) or not WORD_RE.match(beam_group)
    ):
        errors.add("beam_group", "must be a lowercase word such as truebeam_a")
    v["opening_hours"] = _opening_hours(
        errors, "opening_hours", v.get("opening_hours"), required=False
    )
    v["active"] = _bool(errors, "active", v.get("active"))
    if department is not None and not errors.has("name"):
        _check_unique_name(session, errors, Linac, department.id, v["name"], existing, "linac")
    errors.raise_if_any("linac")
    return v


def create_linac(session: Session, values: Mapping[str, Any]) -> Linac:
    return _upsert(
        session,
        Linac,
        None,
        values,
        fields=LINAC_FIELDS,
        defaults={"capabilities": [], "beam_group": None, "opening_hours": None, "active": True},
        validate=_validate_linac,
        what="linac",
    )


def update_linac(
    session: Session, linac_id: int, changes: Mapping[str, Any], *, now: datetime | None = None
) -> Linac:
    """Change a linac; deactivating it also revokes its calendar feeds in the same transaction,
    so reactivating it later does not bring their URLs back."""
    _unknown_fields(changes, LINAC_FIELDS)
    linac = _get(session, Linac, linac_id)
    was_active = linac.active
    cleaned = _validate_linac(session, {**_current(linac, LINAC_FIELDS), **changes}, linac)
    if was_active and not cleaned["active"]:
        links.revoke_feeds(session, linac_id=linac.id, now=now or datetime.now(UTC))
    _save(session, linac, cleaned, "linac")
    return linac


def get_linac(session: Session, linac_id: int) -> Linac:
    return _get(session, Linac, linac_id)


def list_linacs(session: Session, *, department_id: int | None = None) -> list[Linac]:
    query = sa.select(Linac).order_by(Linac.id)
    if department_id is not None:
        query = query.where(Linac.department_id == department_id)
    return list(session.scalars(query))


# ---------------------------------------------------------------------------------------------
# Resources of the pathway before treatment (CT simulators, IR rooms)

RESOURCE_FIELDS = {"department_id", "kind", "name", "opening_hours", "active"}
RESOURCE_KINDS = frozenset(kind.value for kind in ResourceKind)


def _validate_resource(
    session: Session, v: dict[str, Any], existing: Resource | None
) -> dict[str, Any]:
    errors = _Errors()
    if existing is not None and v["department_id"] != existing.department_id:
        # Booked steps are department-local; a room elsewhere is a new resource.
        errors.add("department_id", "cannot be changed")
    if existing is not None and v["kind"] != existing.kind:
        # Booked steps of one kind must not end up on a room of another.
        errors.add("kind", "cannot be changed")
    department = _exists(session, errors, "department_id", Department, v.get("department_id"))
    if v.get("kind") not in RESOURCE_KINDS:
        errors.add("kind", f"must be one of {', '.join(sorted(RESOURCE_KINDS))}")
    v["name"] = _text(errors, "name", v.get("name"), max_len=100)
    v["opening_hours"] = _opening_hours(
        errors, "opening_hours", v.get("opening_hours"), required=False
    )
    v["active"] = _bool(errors, "active", v.get("active"))
    if department is not None and not errors.has("name"):
        _check_unique_name(
            session, errors, Resource, department.id, v["name"], existing, "resource"
        )
    errors.raise_if_any("resource")
    return v


def create_resource(session: Session, values: Mapping[str, Any]) -> Resource:
    """A CT simulator or IR room; its own opening hours, or None for the department's."""
    return _upsert(
        session,
        Resource,
        None,
        values,
        fields=RESOURCE_FIELDS,
        defaults={"opening_hours": None, "active": True},
        validate=_validate_resource,
        what="resource",
    )


def update_resource(session: Session, resource_id: int, changes: Mapping[str, Any]) -> Resource:
    """Change a resource; steps already booked on it stay where they are."""
    return _upsert(
        session,
        Resource,
        resource_id,
        changes,
        fields=RESOURCE_FIELDS,
        defaults={},
        validate=_validate_resource,
        what="resource",
    )


def get_resource(session: Session, resource_id: int) -> Resource:
    return _get(session, Resource, resource_id)


def list_resources(
    session: Session, *, department_id: int | None = None, kind: str | None = None
) -> list[Resource]:
    query = sa.select(Resource).order_by(Resource.id)
    if department_id is not None:
        query = query.where(Resource.department_id == department_id)
    if kind is not None:
        query = query.where(Resource.kind == kind)
    return list(session.scalars(query))


# ---------------------------------------------------------------------------------------------
# Protocols

PROTOCOL_FIELDS = {
    "code",
    "name",
    "site",
    "fractions",
    "min_hours_between",
    "min_interval_days",
    "max_interval_days",
    "min_overall_days",
    "max_overall_days",
    "weekdays",
    "start_weekdays",
    "first_session_minutes",
    "session_minutes",
    "capabilities",
    "prep_instructions",
    "active",
    *REMINDER_CADENCE_FIELDS,
}
PROTOCOL_DEFAULTS: dict[str, Any] = {
    "site": "generic",
    "min_hours_between": 0.0,
    "min_interval_days": 1,
    "max_interval_days": None,
    "min_overall_days": None,
    "max_overall_days": None,
    "weekdays": [0, 1, 2, 3, 4],
    "start_weekdays": None,
    "first_session_minutes": 60,
    "session_minutes": 45,
    "capabilities": ["sbrt"],
    "prep_instructions": "",
    "active": True,
    **dict.fromkeys(REMINDER_CADENCE_FIELDS),  # as the department
}


def _validate_protocol(
    session: Session, v: dict[str, Any], existing: Protocol | None
) -> dict[str, Any]:
    errors = _Errors()
    v["code"] = _text(errors, "code", v.get("code"), max_len=50)
    v["name"] = _text(errors, "name", v.get("name"), max_len=200)
    site = v.get("site")
    if not isinstance(site, str) or not WORD_RE.match(site):
        errors.add("site", "must be a lowercase word such as liver")
    v["prep_instructions"] = _text(
        errors,
        "prep_instructions",
        v.get("prep_instructions") or "",
        max_len=5000,
        required=False,
        multiline=True,
    )
    v["prep_instructions"] = v["prep_instructions"] or ""
    fractions = _int(errors, "fractions", v.get("fractions"), lo=MIN_FRACTIONS, hi=MAX_FRACTIONS)
    for name in ("first_session_minutes", "session_minutes"):
        _int(errors, name, v.get(name), lo=MIN_SESSION_MINUTES, hi=MAX_SESSION_MINUTES)

    hours = v.get("min_hours_between")
    if isinstance(hours, bool) or not isinstance(hours, int | float) or hours != hours:
        errors.add("min_hours_between", "must be a number")
    elif hours < 0:
        errors.add("min_hours_between", "must be at least 0")
    elif hours > 24 * 14:
        errors.add("min_hours_between", "must be at most 336 (two weeks)")
    else:
        v["min_hours_between"] = float(hours)

    min_gap = _int(errors, "min_interval_days", v.get("min_interval_days"), lo=0, hi=14)
    max_gap = v.get("max_interval_days")
    if max_gap is not None:
        _int(errors, "max_interval_days", max_gap, lo=0, hi=28)
    min_overall = v.get("min_overall_days")
    if min_overall is not None:
        _int(errors, "min_overall_days", min_overall, lo=1, hi=90)
    max_overall = v.get("max_overall_days")
    if max_overall is not None:
        _int(errors, "max_overall_days", max_overall, lo=1, hi=90)

    def ok(*names: str) -> bool:
        return not any(errors.has(n) for n in names)

    if max_gap is not None and ok("min_interval_days", "max_interval_days") and max_gap < min_gap:
        errors.add("max_interval_days", "must be at least min_interval_days")
    if (
        min_overall is not None
        and max_overall is not None
        and ok("min_overall_days", "max_overall_days")
        and max_overall < min_overall
    ):
        errors.add("max_overall_days", "must be at least min_overall_days")
    if max_overall is not None and ok("fractions", "min_interval_days", "max_overall_days"):
        # Overall time counts the first and last day inclusively.
        needed = (fractions - 1) * min_gap + 1
        if max_overall < needed:
            errors.add(
                "max_overall_days",
                f"must be at least {needed}: {fractions} fractions at least "
                f"{min_gap} day(s) apart need that many days",
            )
    if min_overall is not None and ok("fractions", "min_overall_days", "max_interval_days"):
        reachable = None if max_gap is None else (fractions - 1) * max_gap + 1
        if fractions == 1:
            reachable = 1
        if reachable is not None and min_overall > reachable:
            errors.add(
                "min_overall_days",
                f"must be at most {reachable}: {fractions} fraction(s) at most "
                f"{max_gap or 0} day(s) apart cannot span longer",
            )

    v["weekdays"] = _weekday_set(errors, "weekdays", v.get("weekdays"))
    v["start_weekdays"] = _weekday_set(
        errors, "start_weekdays", v.get("start_weekdays"), required=False
    )
    if (
        v["start_weekdays"] is not None
        and ok("weekdays", "start_weekdays")
        and not set(v["start_weekdays"]) <= set(v["weekdays"])
    ):
        errors.add("start_weekdays", "must be a subset of weekdays")
    v["capabilities"] = _words(errors, "capabilities", v.get("capabilities"))
    v["active"] = _bool(errors, "active", v.get("active"))
    _reminder_cadence(errors, v, optional=True)

    if not errors.has("code"):
        clash = sa.select(Protocol.id).where(Protocol.code == v["code"])
        if existing is not None:
            clash = clash.where(Protocol.id != existing.id)
        if session.scalar(clash):
            errors.add("code", "is already used by another protocol")
    errors.raise_if_any("protocol")
    return v


def create_protocol(session: Session, values: Mapping[str, Any]) -> Protocol:
    return _upsert(
        session,
        Protocol,
        None,
        values,
        fields=PROTOCOL_FIELDS,
        defaults=PROTOCOL_DEFAULTS,
        validate=_validate_protocol,
        what="protocol",
    )


def update_protocol(
    session: Session,
    protocol_id: int,
    changes: Mapping[str, Any],
    *,
    now: datetime | None = None,
) -> Protocol:
    _unknown_fields(changes, PROTOCOL_FIELDS)
    protocol = _get(session, Protocol, protocol_id)
    cleaned = _validate_protocol(
        session, {**_current(protocol, PROTOCOL_FIELDS), **changes}, protocol
    )
    _apply_cadence(session, protocol, cleaned, now, protocol_id=protocol.id)
    _save(session, protocol, cleaned, "protocol")
    return protocol


def get_protocol(session: Session, protocol_id: int) -> Protocol:
    return _get(session, Protocol, protocol_id)


def list_protocols(session: Session, *, include_inactive: bool = False) -> list[Protocol]:
    query = sa.select(Protocol).order_by(Protocol.code)
    if not include_inactive:
        query = query.where(Protocol.active.is_(True))
    return list(session.scalars(query))


# ---------------------------------------------------------------------------------------------
# Patients

PATIENT_FIELDS = {
    "department_id",
    "mrn",
    "given_name",
    "family_name",
    "date_of_birth",
    "phone",
    "email",
    "language",
    "timezone",
    "sms_consent",
    "email_consent",
}
PATIENT_DEFAULTS: dict[str, Any] = {
    "date_of_birth": None,
    "phone": None,
    "email": None,
    "language": "en",
    "timezone": None,
    "sms_consent": False,
    "email_consent": False,
}


def _patient_values(patient: Patient) -> dict[str, Any]:
    values = _current(patient, PATIENT_FIELDS - {"phone"})
    values["phone"] = patient.phone_e164
    return values


def _validate_patient(
    session: Session,
    v: dict[str, Any],
    existing: Patient | None,
    *,
    now: datetime,
) -> dict[str, Any]:
    errors = _Errors()
    if existing is not None and v["department_id"] != existing.department_id:
        errors.add("department_id", "cannot be changed")
    department = _exists(session, errors, "department_id", Department, v.get("department_id"))
    v["mrn"] = _text(errors, "mrn", v.get("mrn"), max_len=50)
    v["given_name"] = _text(errors, "given_name", v.get("given_name"), max_len=100)
    v["family_name"] = _text(errors, "family_name", v.get("family_name"), max_len=100)
    v["date_of_birth"] = _date_of_birth(
        errors,
        v.get("date_of_birth"),
        # Required for every new patient; one registered before it was asked for may keep
        # none until it is known, but a recorded one cannot be removed.
        required=existing is None or existing.date_of_birth is not None,
        today=local_date(now, department.timezone) if department is not None else now.date(),
    )
    phone = _phone(errors, "phone", v.pop("phone", None), refused_types=UNREACHABLE_PHONE_TYPES)
    v["phone_e164"] = phone
    v["email"] = _email(errors, "email", v.get("email"))
    if v.get("language") not in LANGUAGES:
        errors.add("language", f"must be one of {', '.join(sorted(LANGUAGES))}")
    v["timezone"] = _timezone(errors, "timezone", v.get("timezone"), required=False)
    _bool(errors, "sms_consent", v.get("sms_consent"))
    _bool(errors, "email_consent", v.get("email_consent"))
    if v.get("sms_consent") is True and phone is None and not errors.has("phone"):
        errors.add("sms_consent", "needs a phone number")
    if v.get("email_consent") is True and v["email"] is None and not errors.has("email"):
        errors.add("email_consent", "needs an email address")
    if department is not None and not errors.has("mrn"):
        clash = sa.select(Patient.id).where(
            Patient.department_id == department.id, Patient.mrn == v["mrn"]
        )
        if existing is not None:
            clash = clash.where(Patient.id != existing.id)
        if session.scalar(clash):
            errors.add("mrn", "is already used by another patient in this department")
    errors.raise_if_any("patient")

    # Consent is recorded with its time: reminders may only be sent under a dated consent.
    was_consenting = existing is not None and existing.sms_consent
    if v["sms_consent"] and not was_consenting:
        v["sms_consent_at"] = now
    elif not v["sms_consent"]:
        v["sms_consent_at"] = None
    return v


def create_patient(
    session: Session, values: Mapping[str, Any], *, now: datetime | None = None
) -> Patient:
    moment = now or datetime.now(UTC)
    return _upsert(
        session,
        Patient,
        None,
        values,
        fields=PATIENT_FIELDS,
        defaults=PATIENT_DEFAULTS,
        validate=lambda s, v, e: _validate_patient(s, v, e, now=moment),
        what="patient",
    )


def update_patient(
    session: Session,
    patient_id: int,
    changes: Mapping[str, Any],
    *,
    now: datetime | None = None,
) -> Patient:
    moment = now or datetime.now(UTC)
    _unknown_fields(changes, PATIENT_FIELDS)
    patient = _get(session, Patient, patient_id)
    cleaned = _validate_patient(
        session, {**_patient_values(patient), **changes}, patient, now=moment
    )
    reachable_before = _reachable_channels(session, patient)
    links_end = links_end_with_change(patient, cleaned)
    for name, value in cleaned.items():
        setattr(patient, name, value)
    if links_end:
        links.revoke_patient_links(session, patient_id=patient.id, now=moment)
    if _reachable_channels(session, patient) - reachable_before:
        # Consent recorded again: the sessions still ahead get their reminders on it, in the
        # same transaction as the consent.
        outbox.replan_patient_reminders(
            session, patient.id, now=moment, reason=REPLANNED_AFTER_CONSENT
        )
    _save(session, patient, cleaned, "patient")
    return patient


def links_end_with_change(patient: Patient, cleaned: Mapping[str, Any]) -> bool:
    """Whether a change ends the patient's links: the phone number or email address they were
    sent to changed or was removed (it may now be someone else's), or SMS consent was
    withdrawn. A first number or address added changes nothing about the links sent."""

    def replaced(field: str) -> bool:
        before = getattr(patient, field)
        return before is not None and cleaned.get(field, before) != before

    return (
        replaced("phone_e164")
        or replaced("email")
        or (patient.sms_consent and cleaned.get("sms_consent") is False)
    )


# What the message timeline says about reminders planned when staff record consent again.
REPLANNED_AFTER_CONSENT = "planned again: consent recorded by staff"


def _reachable_channels(session: Session, patient: Patient) -> set[str]:
    department = session.get(Department, patient.department_id)
    if department is None:
        return set()
    return set(allowed_channels(outbox.patient_snapshot(patient, department)))


def get_patient(session: Session, patient_id: int) -> Patient:
    return _get(session, Patient, patient_id)


def list_patients(
    session: Session,
    *,
    search: str | None = None,
    department_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Patient]:
    """Patients by MRN prefix or name substring (case-insensitive), family name first."""
    query = sa.select(Patient)
    if department_id is not None:
        query = query.where(Patient.department_id == department_id)
    terms = (search or "").split()
    for term in terms:
        # LIKE wildcards typed by a user are literal characters here.
        escaped = term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(
            sa.or_(
                sa.func.lower(Patient.mrn).like(f"{escaped}%", escape="\\"),
                sa.func.lower(Patient.given_name).like(f"%{escaped}%", escape="\\"),
                sa.func.lower(Patient.family_name).like(f"%{escaped}%", escape="\\"),
            )
        )
    query = query.order_by(Patient.family_name, Patient.given_name, Patient.id)
    return list(session.scalars(query.limit(limit).offset(offset)))


# ---------------------------------------------------------------------------------------------
# Courses

COURSE_FIELDS = {"patient_id", "protocol_id", "priority", "ready_to_treat_on", "notes"}


def create_course(session: Session, values: Mapping[str, Any]) -> Course:
    _unknown_fields(values, COURSE_FIELDS)
    v = {"priority": 3, "ready_to_treat_on": None, "notes": "", **values}
    errors = _Errors()
    _exists(session, errors, "patient_id", Patient, v.get("patient_id"))
    protocol = _exists(session, errors, "protocol_id", Protocol, v.get("protocol_id"))
    if protocol is not None and not protocol.active:
        errors.add("protocol_id", "is an inactive protocol")
    _int(errors, "priority", v.get("priority"), lo=MIN_PRIORITY, hi=MAX_PRIORITY)
    _date(errors, "ready_to_treat_on", v.get("ready_to_treat_on"), required=False)
    v["notes"] = (
        _text(errors, "notes", v.get("notes") or "", max_len=5000, required=False, multiline=True)
        or ""
    )
    errors.raise_if_any("course")
    course = Course()
    _save(session, course, v, "course")
    return course


def update_course(session: Session, course_id: int, changes: Mapping[str, Any]) -> Course:
    """Priority, ready-to-treat date and notes; the patient and protocol are fixed."""
    _unknown_fields(changes, {"priority", "ready_to_treat_on", "notes"})
    course = _get(session, Course, course_id)
    errors = _Errors()
    v = dict(changes)
    if "priority" in v:
        _int(errors, "priority", v["priority"], lo=MIN_PRIORITY, hi=MAX_PRIORITY)
    if "ready_to_treat_on" in v:
        _date(errors, "ready_to_treat_on", v["ready_to_treat_on"], required=False)
    if "notes" in v:
        v["notes"] = (
            _text(errors, "notes", v["notes"] or "", max_len=5000, required=False, multiline=True)
            or ""
        )
    errors.raise_if_any("course")
    _save(session, course, v, "course")
    return course


def get_course(session: Session, course_id: int) -> Course:
    course = session.scalar(
        sa.select(Course)
        .where(Course.id == course_id)
        .options(selectinload(Course.fractions), selectinload(Course.protocol))
    )
    if course is None:
        raise NotFound(f"No course with id {course_id}.")
    return course


def list_courses(
    session: Session,
    *,
    patient_id: int | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Course]:
    query = sa.select(Course).options(selectinload(Course.fractions))
    if patient_id is not None:
        query = query.where(Course.patient_id == patient_id)
    if status is not None:
        query = query.where(Course.status == status)
    return list(session.scalars(query.order_by(Course.id).limit(limit).offset(offset)))


def department_timezone_for_course(session: Session, course_id: int) -> str:
    """The zone a course's times are shown and typed in (its patient's department)."""
    tz = session.scalar(
        sa.select(Department.timezone)
        .join(Patient, Patient.department_id == Department.id)
        .join(Course, Course.patient_id == Patient.id)
        .where(Course.id == course_id)
    )
    if tz is None:
        raise NotFound(f"No course with id {course_id}.")
    return tz


def department_timezone_for_linac(session: Session, linac_id: int) -> str:
    tz = session.scalar(
        sa.select(Department.timezone)
        .join(Linac, Linac.department_id == Department.id)
        .where(Linac.id == linac_id)
    )
    if tz is None:
        raise NotFound(f"No linac with id {linac_id}.")
    return tz


# ---------------------------------------------------------------------------------------------
# Read helpers for booking records (the changes themselves are in scheduler.services)


def get_fraction(session: Session, fraction_id: int) -> Fraction:
    fraction = session.get(Fraction, fraction_id)
    if fraction is None:
        raise NotFound(f"No fraction with id {fraction_id}.")
    return fraction


def list_downtimes(
    session: Session,
    linac_id: int,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[Downtime]:
    """A linac's downtimes overlapping [start, end) (either bound optional)."""
    _get(session, Linac, linac_id)
    query = sa.select(Downtime).where(Downtime.linac_id == linac_id)
    if start is not None:
        query = query.where(Downtime.ends_at > start)
    if end is not None:
        query = query.where(Downtime.starts_at < end)
    return list(session.scalars(query.order_by(Downtime.starts_at)))


def list_department_downtimes(
    session: Session,
    department_id: int,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[Downtime]:
    """Every linac's downtimes in a department overlapping [start, end) (either bound
    optional), by start then linac."""
    _get(session, Department, department_id)
    query = (
        sa.select(Downtime)
        .join(Linac, Linac.id == Downtime.linac_id)
        .where(Linac.department_id == department_id)
    )
    if start is not None:
        query = query.where(Downtime.ends_at > start)
    if end is not None:
        query = query.where(Downtime.starts_at < end)
    return list(session.scalars(query.order_by(Downtime.starts_at, Downtime.linac_id)))


def get_downtime(session: Session, downtime_id: int) -> Downtime:
    downtime = session.get(Downtime, downtime_id)
    if downtime is None:
        raise NotFound(f"No downtime with id {downtime_id}.")
    return downtime


# ---------------------------------------------------------------------------------------------
# Physicist roster
#
# The document a department's roster is read and written as:
#   {"enabled": true, "every_fraction": false,
#    "blocks": [{"weekday": 0, "start": "08:00", "end": "17:00", "physicists": 2}, ...],
#    "exceptions": [{"day": "2027-03-01", "start": "08:00", "end": "12:00", "physicists": 0}]}
# Writing null, {} or {"enabled": false} removes the roster: supervision then limits nothing.
# Any other document is a roster (an empty list of blocks means nobody is ever rostered).

ROSTER_FIELDS = {"enabled", "every_fraction", "blocks", "exceptions"}
ROSTER_BLOCK_FIELDS = {"weekday", "start", "end", "physicists"}
ROSTER_EXCEPTION_FIELDS = {"day", "start", "end", "physicists"}
MAX_PHYSICISTS = 50
MAX_ROSTER_BLOCKS = 100
MAX_ROSTER_EXCEPTIONS = 1000
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _roster_document(department: Department) -> dict[str, Any]:
    if not department.physicist_roster_enabled:
        return {"enabled": False, "every_fraction": False, "blocks": [], "exceptions": []}
    return {
        "enabled": True,
        "every_fraction": department.physicist_every_fraction,
        "blocks": [
            {"weekday": b.weekday, "start": b.starts, "end": b.ends, "physicists": b.physicists}
            for b in sorted(department.roster_blocks, key=lambda b: (b.weekday, b.starts))
        ],
        "exceptions": [
            {
                "day": e.day.isoformat(),
                "start": e.starts,
                "end": e.ends,
                "physicists": e.physicists,
            }
            for e in sorted(department.roster_exceptions, key=lambda e: (e.day, e.starts))
        ],
    }


def get_physicist_roster(session: Session, department_id: int) -> dict[str, Any]:
    """The department's physicist roster as a document (see "Physicist roster" above)."""
    return _roster_document(_get(session, Department, department_id))


def _roster_rows(
    errors: _Errors, field: str, value: Any, keys: set[str], *, limit: int
) -> list[dict[str, Any]]:
    """The rows of a roster list, each checked for its own fields; bad rows are left out."""
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add(field, "must be a list")
        return []
    if len(value) > limit:
        errors.add(field, f"may hold at most {limit} entries")
        return []
    rows = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            errors.add(where, "must be an object")
            continue
        before = len(errors.items)
        for name in sorted(set(item) - keys):
            errors.add(f"{where}.{name}", "is not a known field")
        row: dict[str, Any] = {"index": i}
        if "weekday" in keys:
            row["weekday"] = _int(errors, f"{where}.weekday", item.get("weekday"), lo=0, hi=6)
        if "day" in keys:
            row["day"] = _roster_day(errors, f"{where}.day", item.get("day"))
        for name in ("start", "end"):
            text = item.get(name)
            if not isinstance(text, str) or not HHMM_RE.match(text):
                errors.add(f"{where}.{name}", "must be a local time HH:MM")
            row[name] = text
        row["physicists"] = _int(
            errors, f"{where}.physicists", item.get("physicists"), lo=0, hi=MAX_PHYSICISTS
        )
        if len(errors.items) > before:
            continue
        if row["end"] <= row["start"]:
            errors.add(f"{where}.end", f"must be after the start ({row['start']})")
            continue
        rows.append(row)
    return rows


def _roster_day(errors: _Errors, field: str, value: Any) -> Any:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    return _date(errors, field, value)


def _no_overlaps(errors: _Errors, field: str, rows: list[dict[str, Any]], key: str) -> None:
    """Rows of one weekday (or one date) must not overlap: the counts would be ambiguous."""
    by_key: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault(row[key], []).append(row)
    for group in by_key.values():
        group.sort(key=lambda r: (r["start"], r["index"]))
        for before, after in zip(group, group[1:], strict=False):
            if after["start"] < before["end"]:
                when = _WEEKDAY_NAMES[before[key]] if key == "weekday" else before[key].isoformat()
                errors.add(
                    f"{field}[{after['index']}]",
                    f"overlaps {field}[{before['index']}] ({when} "
                    f"{before['start']}–{before['end']})",
                )


def set_physicist_roster(
    session: Session,
    department_id: int,
    document: Mapping[str, Any] | None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Replace the department's physicist roster with ``document`` and return it.

    Bookings stay where they are; the result's ``uncovered`` lists the booked supervised
    fractions from ``now`` on that the new roster leaves without a physicist (each with its
    rule message), for a scheduler to move or to keep with a reason.
    """
    department = _get(session, Department, department_id)
    errors = _Errors()
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise InvalidInput(
            "The physicist roster is not valid.",
            [FieldError("roster", "must be an object or null")],
        )
    for name in sorted(set(document) - ROSTER_FIELDS):
        errors.add(name, "is not a known field")
    enabled = document.get("enabled", bool(document))
    _bool(errors, "enabled", enabled)
    every = document.get("every_fraction", False)
    _bool(errors, "every_fraction", every)
    blocks = _roster_rows(
        errors, "blocks", document.get("blocks"), ROSTER_BLOCK_FIELDS, limit=MAX_ROSTER_BLOCKS
    )
    exceptions = _roster_rows(
        errors,
        "exceptions",
        document.get("exceptions"),
        ROSTER_EXCEPTION_FIELDS,
        limit=MAX_ROSTER_EXCEPTIONS,
    )
    _no_overlaps(errors, "blocks", blocks, "weekday")
    _no_overlaps(errors, "exceptions", exceptions, "day")
    if enabled is False and (document.get("blocks") or document.get("exceptions") or every):
        errors.add("enabled", "is false, so the roster is removed: leave out its blocks")
    errors.raise_if_any("physicist roster")

    department.roster_blocks.clear()
    department.roster_exceptions.clear()
    session.flush()
    department.physicist_roster_enabled = bool(enabled)
    department.physicist_every_fraction = bool(enabled) and bool(every)
    if enabled:
        department.roster_blocks.extend(
            RosterBlock(
                weekday=b["weekday"], starts=b["start"], ends=b["end"], physicists=b["physicists"]
            )
            for b in blocks
        )
        department.roster_exceptions.extend(
            RosterException(
                day=e["day"], starts=e["start"], ends=e["end"], physicists=e["physicists"]
            )
            for e in exceptions
        )
    session.flush()

    result = _roster_document(department)
    result["uncovered"] = []
    moment = now if now is not None else datetime.now(UTC)
    last_end = session.scalar(
        sa.select(sa.func.max(Fraction.ends_at)).where(
            Fraction.linac_id.in_(sa.select(Linac.id).where(Linac.department_id == department.id)),
            Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
        )
    )
    if not enabled or last_end is None:
        return result
    if last_end.tzinfo is None:
        last_end = last_end.replace(tzinfo=UTC)
    if last_end <= moment:
        return result
    tz = department.timezone
    first, last = local_date(moment, tz), local_date(last_end, tz)
    cover = roster_cover(session, department, first, last)
    assert cover is not None
    # The whole of those days: a session under way now still occupies its physicist.
    booked = supervised_sessions(session, department, cover, *local_day_bounds(tz, first, last))
    index = CoverIndex(replace(cover, supervised=tuple(s.interval for s in booked)), tz)
    for s in booked:
        if s.interval.start < moment or index.kept(s.interval.start, s.interval.end):
            continue
        result["uncovered"].append(
            {
                "fraction_id": s.fraction_id,
                "course_id": s.course_id,
                "number": s.number,
                "linac_id": s.linac_id,
                "starts_at": s.interval.start.isoformat(),
                "ends_at": s.interval.end.isoformat(),
                "message": _uncovered_message(index, s.number, s.interval, tz),
            }
        )
    return result


def _uncovered_message(index: CoverIndex, number: int, interval: Interval, tz: str) -> str:
    when = f"{format_local(interval.start, tz)}–{to_local(interval.end, tz):%H:%M}"
    if not index.rostered(interval.start, interval.end):
        why = "no physicist is rostered for all of it"
    else:
        why = "more supervised sessions are booked then than physicists are rostered"
    return f"fraction {number} ({when}) needs a supervising physicist, but {why}"
