"""Request and response bodies of the JSON API (pydantic v2).

Request models check shape and simple ranges, which the OpenAPI document then states; the
domain checks (a real phone number, a consistent protocol) live in the use cases, so every
caller of those gets them. Times in requests are either aware ISO 8601 instants or naive local
times in the department's zone; responses give UTC instants plus, where useful, local times.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from scheduler import records
from scheduler.accounts import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, MIN_PASSWORD_SCORE

READINESS_STEPS = ("ct_simulation", "plan_approved", "physics_qa", "consent", "fiducials_placed")
MAX_ID = 2**31 - 1
# Dates far from now are typing mistakes, and keeping them out means no arithmetic on them
# can overflow further down.
EARLIEST_YEAR, LATEST_YEAR = 2000, 2100


def _sane_date(value: date) -> date:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"must be between the years {EARLIEST_YEAR} and {LATEST_YEAR}")
    return value


Id = Annotated[int, Field(ge=1, le=MAX_ID)]
BirthDate = Annotated[
    date,
    Field(
        description=(
            "Date of birth (YYYY-MM-DD), the second identifier next to the MRN; "
            f"not in the future and not before {records.EARLIEST_BIRTH_DATE.isoformat()}"
        ),
        examples=["1958-04-17"],
    ),
]
Day = Annotated[date, AfterValidator(_sane_date)]
# Aware instant, or naive local time in the department's zone (see the module docstring).
When = Annotated[
    datetime,
    AfterValidator(_sane_date),
    Field(description="ISO 8601 with an offset (an instant) or without (department local time)"),
]
Fold = Annotated[
    int | None,
    Field(
        ge=0,
        le=1,
        description="For an ambiguous local time (clocks going back): 0 = first, 1 = second",
    ),
]
Word = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,49}$")]
HHMM = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["07:30"])]
Weekday = Annotated[int, Field(ge=0, le=6, description="0 = Monday ... 6 = Sunday")]
OpeningHours = Annotated[
    dict[Annotated[str, Field(pattern=r"^[0-6]$")], tuple[HHMM, HHMM]],
    Field(
        description="Local opening hours per weekday (0 = Monday); absent days are closed",
        examples=[{"0": ["07:00", "19:00"]}],
    ),
]
Text = Annotated[str, Field(max_length=5000)]
DayBeforeMinutes = Annotated[
    int,
    Field(
        ge=records.DAY_BEFORE_MINUTES[0],
        le=records.DAY_BEFORE_MINUTES[1],
        description="Minutes before each session; the reminder always goes out on the day "
        "before, inside the message window",
    ),
]
SameDayMinutes = Annotated[
    int,
    Field(
        ge=records.SAME_DAY_MINUTES[0],
        le=records.SAME_DAY_MINUTES[1],
        description="Minutes before each session; a reminder that cannot go out on the day "
        "(quiet hours) is merged into the day-before one",
    ),
]


def _storable_text(value: Any) -> Any:
    """Refuse text no database column should hold: NUL (PostgreSQL rejects it mid-query)
    and unpaired surrogates (not encodable as UTF-8)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("must be valid Unicode text") from exc
    elif isinstance(value, list | tuple):
        for item in value:
            _storable_text(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable_text(key)
            _storable_text(item)
    return value


class _Request(BaseModel):
    """What a client sends: every text field must be storable."""

    @field_validator("*", mode="before")
    @classmethod
    def _text_is_storable(cls, value: Any) -> Any:
        return _storable_text(value)


class Input(_Request):
    """Request bodies reject unknown fields, so a misspelt field is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Query(_Request):
    model_config = ConfigDict(extra="ignore")


class Paging(Query):
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0


# --- departments and closures ---------------------------------------------------------------


MessageWindowStart = Annotated[
    HHMM,
    Field(description="Local time from which patient messages may go out (24-hour HH:MM)"),
]
MessageWindowEnd = Annotated[
    HHMM,
    Field(description="Local time until which patient messages may go out; after the start"),
]


class DepartmentIn(Input):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    timezone: Annotated[
        str,
        Field(
            examples=["America/New_York"],
            max_length=64,
            description="IANA zone of a place; localtime and Factory are refused",
        ),
    ]
    phone: Annotated[str, Field(max_length=32)] | None = None
    holiday_country: Annotated[str, Field(min_length=2, max_length=2)] | None = None
    holiday_subdivision: Annotated[str, Field(max_length=10)] | None = None
    opening_hours: OpeningHours | None = None
    message_window_start: MessageWindowStart = "08:00"
    message_window_end: MessageWindowEnd = "21:00"
    day_before_reminder: bool = True
    day_before_reminder_minutes: DayBeforeMinutes = 24 * 60
    same_day_reminder: bool = True
    same_day_reminder_minutes: SameDayMinutes = 120


class DepartmentPatch(Input):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    holiday_country: Annotated[str, Field(min_length=2, max_length=2)] | None = None
    holiday_subdivision: Annotated[str, Field(max_length=10)] | None = None
    opening_hours: OpeningHours | None = None
    message_window_start: MessageWindowStart | None = None
    message_window_end: MessageWindowEnd | None = None
    day_before_reminder: bool | None = None
    day_before_reminder_minutes: DayBeforeMinutes | None = None
    same_day_reminder: bool | None = None
    same_day_reminder_minutes: SameDayMinutes | None = None


class DepartmentOut(Output):
    id: int
    name: str
    timezone: str
    phone: str | None
    holiday_country: str | None
    holiday_subdivision: str | None
    opening_hours: dict[str, list[str]]
    message_window_start: str
    message_window_end: str
    day_before_reminder: bool
    day_before_reminder_minutes: int
    same_day_reminder: bool
    same_day_reminder_minutes: int
    created_at: datetime


class ClosureIn(Input):
    day: Day
    reason: Annotated[str, Field(min_length=1, max_length=200)]


class ClosureQuery(Query):
    start: Day | None = None
    end: Day | None = None


class ClosureOut(Output):
    id: int
    department_id: int
    day: date
    reason: str


# --- physicist roster -----------------------------------------------------------------------

Physicists = Annotated[
    int,
    Field(ge=0, le=records.MAX_PHYSICISTS, description="Physicists present; 0: nobody"),
]


class RosterBlockIn(Input):
    weekday: Annotated[int, Field(ge=0, le=6, description="Monday=0 ... Sunday=6")]
    start: Annotated[HHMM, Field(description="Local start time (24-hour HH:MM)")]
    end: Annotated[HHMM, Field(description="Local end time, after the start")]
    physicists: Physicists


class RosterExceptionIn(Input):
    day: Annotated[date, Field(description="Local date whose weekday blocks this replaces")]
    start: HHMM
    end: HHMM
    physicists: Physicists


class PhysicistRosterIn(Input):
    """A department's physicist roster. `{"enabled": false}` (or `{}`) removes it, so that
    supervision no longer limits booking; any other document replaces the whole roster."""

    enabled: bool | None = None
    every_fraction: Annotated[
        bool,
        Field(description="Every SBRT fraction is supervised, not only each course's first"),
    ] = False
    blocks: Annotated[
        list[RosterBlockIn],
        Field(
            max_length=records.MAX_ROSTER_BLOCKS,
            description="Weekly blocks; the blocks of one weekday must not overlap",
        ),
    ] = []
    exceptions: Annotated[
        list[RosterExceptionIn],
        Field(
            max_length=records.MAX_ROSTER_EXCEPTIONS,
            description=(
                "Dated blocks; a date's exceptions replace its weekday's blocks "
                "(one with 0 physicists: nobody that day)"
            ),
        ),
    ] = []


class RosterBlockOut(Output):
    weekday: int
    start: str
    end: str
    physicists: int


class RosterExceptionOut(Output):
    day: date
    start: str
    end: str
    physicists: int


class UncoveredFractionOut(Output):
    fraction_id: int
    course_id: int
    number: int
    linac_id: int
    starts_at: datetime
    ends_at: datetime
    message: str


class PhysicistRosterOut(Output):
    enabled: bool = Field(description="False: the department keeps no roster")
    every_fraction: bool
    blocks: list[RosterBlockOut]
    exceptions: list[RosterExceptionOut]
    uncovered: list[UncoveredFractionOut] = Field(
        default=[],
        description=(
            "After a change: booked supervised fractions the roster now leaves without a "
            "physicist (they are not moved)"
        ),
    )


# --- linacs and downtimes -------------------------------------------------------------------


class LinacIn(Input):
    department_id: Id
    name: Annotated[str, Field(min_length=1, max_length=100)]
    capabilities: Annotated[
        list[Word],
        Field(
            max_length=20,
            description="Known: " + ", ".join(sorted(records.KNOWN_CAPABILITIES)),
        ),
    ] = []
    beam_group: Word | None = None
    opening_hours: OpeningHours | None = None
    active: bool = True


class LinacPatch(Input):
    name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    capabilities: Annotated[list[Word], Field(max_length=20)] | None = None
    beam_group: Word | None = None
    opening_hours: OpeningHours | None = None
    active: bool | None = None


class LinacQuery(Query):
    department_id: Id | None = None


class LinacOut(Output):
    id: int
    department_id: int
    name: str
    capabilities: list[str]
    beam_group: str | None
    opening_hours: dict[str, list[str]] | None
    active: bool


class DowntimeIn(Input):
    starts_at: When
    ends_at: When
    starts_at_fold: Fold = None
    ends_at_fold: Fold = None
    kind: Literal["planned", "unplanned"] = "planned"
    reason: Annotated[str, Field(max_length=300)] = ""
    preview: bool = Field(False, description="Report what would move without changing anything")


class DowntimeQuery(Query):
    start: When | None = None
    end: When | None = None


class DowntimePatch(Input):
    """Fields left out keep their current values."""

    starts_at: When | None = None
    ends_at: When | None = None
    starts_at_fold: Fold = None
    ends_at_fold: Fold = None
    kind: Literal["planned", "unplanned"] | None = None
    reason: Annotated[str, Field(max_length=300)] | None = None
    preview: bool = Field(False, description="Report what would change without changing anything")


class DowntimeDeleteQuery(Query):
    preview: bool = Field(False, description="Report what would change without changing anything")


class DowntimeOut(Output):
    id: int
    linac_id: int
    starts_at: datetime
    ends_at: datetime
    local_start: datetime
    local_end: datetime
    kind: str
    reason: str
    created_at: datetime
    version: int


class PlannedFractionOut(Output):
    number: int
    linac_id: int
    starts_at: datetime
    ends_at: datetime
    local_start: datetime
    local_end: datetime


class MovedFractionOut(Output):
    fraction_id: int
    course_id: int
    number: int
    before: PlannedFractionOut
    after: PlannedFractionOut


class UnplaceableFractionOut(Output):
    fraction_id: int
    course_id: int
    number: int
    starts_at: datetime
    ends_at: datetime
    reason: str


class ReturnableFractionOut(Output):
    fraction_id: int
    course_id: int
    number: int
    current: PlannedFractionOut
    original: PlannedFractionOut = Field(description="Its place before this downtime moved it")


class DowntimeReportOut(Output):
    preview: bool
    downtime_id: int | None
    timezone: str
    moved: list[MovedFractionOut]
    unplaceable: list[UnplaceableFractionOut]
    kept_time: int = Field(description="Displaced fractions kept at their own time on a partner")
    same_day: int = Field(description="Displaced fractions moved to another time the same day")
    other_day: int = Field(description="Displaced fractions moved to another day")
    needs_human: int = Field(description="Displaced fractions no placement could take")
    returnable: list[ReturnableFractionOut] = Field(
        description="After shortening or deleting: fractions this downtime moved whose own "
        "place is free again; nobody is moved back automatically"
    )


# --- protocols ------------------------------------------------------------------------------

Fractions = Annotated[int, Field(ge=records.MIN_FRACTIONS, le=records.MAX_FRACTIONS)]
SessionMinutes = Annotated[
    int, Field(ge=records.MIN_SESSION_MINUTES, le=records.MAX_SESSION_MINUTES)
]
IntervalDays = Annotated[int, Field(ge=0, le=28)]
OverallDays = Annotated[int, Field(ge=1, le=90)]
Hours = Annotated[float, Field(ge=0, le=336)]


AS_DEPARTMENT = "null: as the department"


class ProtocolIn(Input):
    code: Annotated[str, Field(min_length=1, max_length=50)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    site: Word = "generic"
    fractions: Fractions
    min_hours_between: Hours = 0.0
    min_interval_days: Annotated[int, Field(ge=0, le=14)] = 1
    max_interval_days: IntervalDays | None = None
    min_overall_days: OverallDays | None = None
    max_overall_days: OverallDays | None = None
    weekdays: Annotated[list[Weekday], Field(min_length=1, max_length=7)] = [0, 1, 2, 3, 4]
    start_weekdays: Annotated[list[Weekday], Field(min_length=1, max_length=7)] | None = None
    first_session_minutes: SessionMinutes = 60
    session_minutes: SessionMinutes = 45
    capabilities: Annotated[list[Word], Field(max_length=20)] = ["sbrt"]
    prep_instructions: Text = ""
    active: bool = True
    day_before_reminder: Annotated[bool | None, Field(description=AS_DEPARTMENT)] = None
    day_before_reminder_minutes: DayBeforeMinutes | None = None
    same_day_reminder: Annotated[bool | None, Field(description=AS_DEPARTMENT)] = None
    same_day_reminder_minutes: SameDayMinutes | None = None


class ProtocolPatch(Input):
    code: Annotated[str, Field(min_length=1, max_length=50)] | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    site: Word | None = None
    fractions: Fractions | None = None
    min_hours_between: Hours | None = None
    min_interval_days: Annotated[int, Field(ge=0, le=14)] | None = None
    max_interval_days: IntervalDays | None = None
    min_overall_days: OverallDays | None = None
    max_overall_days: OverallDays | None = None
    weekdays: Annotated[list[Weekday], Field(min_length=1, max_length=7)] | None = None
    start_weekdays: Annotated[list[Weekday], Field(min_length=1, max_length=7)] | None = None
    first_session_minutes: SessionMinutes | None = None
    session_minutes: SessionMinutes | None = None
    capabilities: Annotated[list[Word], Field(max_length=20)] | None = None
    prep_instructions: Text | None = None
    active: bool | None = None
    day_before_reminder: Annotated[bool | None, Field(description=AS_DEPARTMENT)] = None
    day_before_reminder_minutes: DayBeforeMinutes | None = None
    same_day_reminder: Annotated[bool | None, Field(description=AS_DEPARTMENT)] = None
    same_day_reminder_minutes: SameDayMinutes | None = None


class ProtocolQuery(Query):
    include_inactive: bool = False


class ProtocolOut(Output):
    id: int
    code: str
    name: str
    site: str
    fractions: int
    min_hours_between: float
    min_interval_days: int
    max_interval_days: int | None
    min_overall_days: int | None
    max_overall_days: int | None
    weekdays: list[int]
    start_weekdays: list[int] | None
    first_session_minutes: int
    session_minutes: int
    capabilities: list[str]
    prep_instructions: str
    active: bool
    day_before_reminder: bool | None
    day_before_reminder_minutes: int | None
    same_day_reminder: bool | None
    same_day_reminder_minutes: int | None


# --- patients -------------------------------------------------------------------------------


class PatientIn(Input):
    department_id: Id
    mrn: Annotated[str, Field(min_length=1, max_length=50)]
    given_name: Annotated[str, Field(min_length=1, max_length=100)]
    family_name: Annotated[str, Field(min_length=1, max_length=100)]
    date_of_birth: BirthDate
    phone: (
        Annotated[
            str,
            Field(
                max_length=32,
                description=(
                    "E.164 (+14155550100) or a US national number; premium-rate, shared-cost, "
                    "universal access, personal, pager and voicemail numbers are refused"
                ),
            ),
        ]
        | None
    ) = None
    email: Annotated[str, Field(max_length=254)] | None = None
    language: Literal["en", "es"] = "en"
    timezone: (
        Annotated[
            str,
            Field(
                max_length=64,
                description=(
                    "IANA zone; default: the department's. localtime and Factory are refused"
                ),
            ),
        ]
        | None
    ) = None
    sms_consent: bool = False
    email_consent: bool = False


class PatientPatch(Input):
    mrn: Annotated[str, Field(min_length=1, max_length=50)] | None = None
    given_name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    family_name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    date_of_birth: BirthDate | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    email: Annotated[str, Field(max_length=254)] | None = None
    language: Literal["en", "es"] | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = None
    sms_consent: bool | None = None
    email_consent: bool | None = None


class PatientQuery(Paging):
    department_id: Id | None = None


class PatientSearch(Input):
    """Search terms travel in a body, not the URL, so names and MRNs stay out of access logs."""

    query: Annotated[str, Field(min_length=1, max_length=100, description="MRN prefix or name")]
    department_id: Id | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0


class PatientOut(Output):
    id: int
    department_id: int
    mrn: str
    given_name: str
    family_name: str
    date_of_birth: date | None = Field(
        description="Null only for a patient registered before it was asked for"
    )
    phone: str | None = Field(validation_alias="phone_e164")
    email: str | None
    language: str
    timezone: str | None
    sms_consent: bool
    sms_consent_at: datetime | None
    sms_opted_out: bool
    email_consent: bool
    created_at: datetime


# --- courses and fractions ------------------------------------------------------------------


class CourseIn(Input):
    patient_id: Id
    protocol_id: Id
    priority: Annotated[
        int, Field(ge=records.MIN_PRIORITY, le=records.MAX_PRIORITY, description="1 = urgent")
    ] = 3
    ready_to_treat_on: Day | None = None
    notes: Text = ""


class CoursePatch(Input):
    priority: Annotated[int, Field(ge=records.MIN_PRIORITY, le=records.MAX_PRIORITY)] | None = None
    ready_to_treat_on: Day | None = None
    notes: Text | None = None


class CourseQuery(Paging):
    patient_id: Id | None = None
    status: (
        Literal["draft", "booked", "incomplete", "needs_review", "completed", "cancelled"] | None
    ) = None


MissedReasonCode = Literal["did_not_attend", "unwell", "machine_fault", "other"]


class FractionOut(Output):
    id: int
    course_id: int
    patient_id: int
    number: int
    linac_id: int
    status: str
    starts_at: datetime
    ends_at: datetime
    local_start: datetime
    local_end: datetime
    timezone: str
    version: int
    override_reason: str | None
    status_reason: str | None
    missed_reason: MissedReasonCode | None = Field(
        description="Why a missed fraction was missed; status_reason holds the words"
    )
    awaiting_readiness: bool = Field(
        description="First fraction whose plan approval or physics QA is not yet recorded"
    )


class ReadinessOut(Output):
    ct_simulation: datetime | None
    plan_approved: datetime | None
    physics_qa: datetime | None
    consent: datetime | None
    fiducials_placed: datetime | None


class CourseOut(Output):
    id: int
    patient_id: int
    protocol_id: int
    status: str
    priority: int
    ready_to_treat_on: date | None
    notes: str
    readiness: ReadinessOut
    ready_to_treat: bool
    review_reason: str | None
    prescribed_fractions: int = Field(
        description="Fractions the patient is to have: the protocol's unless a clinician "
        "changed the prescription"
    )
    prescription_reason: str | None = Field(
        description="The clinician's reason for the last prescription change"
    )
    incomplete: bool = Field(
        description="Fewer fractions held (to come or delivered) than prescribed"
    )
    missing_fractions: list[int] = Field(
        description="Fraction numbers to rebook for the course to be complete"
    )
    timezone: str
    fractions: list[FractionOut]
    created_at: datetime
    updated_at: datetime


class TimeWindow(Input):
    start: Annotated[time, Field(description="Local time of day, HH:MM")]
    end: time


class ProposalIn(Input):
    earliest: Day | None = Field(None, description="Local date; default: ready-to-treat date")
    count: Annotated[int, Field(ge=1, le=10)] = 3
    preferred_window: TimeWindow | None = None


class ScorePartOut(Output):
    name: Literal["wait", "overall", "linacs", "time_of_day", "window", "spacing", "day_load"]
    points: int = Field(description="Penalty points of this part; 0 is as good as it gets")
    value: int = Field(
        description=(
            "What was measured: wait and overall in days, linacs a count, time_of_day the "
            "largest difference in minutes from the first fraction's start time, window the "
            "fractions outside the preferred window, spacing the longest gap minus the "
            "shortest in days, day_load the fragments of linac free time left"
        )
    )
    summary: str = Field(description="The measure in words, e.g. 'one linac'")


class ScoreOut(Output):
    total: int = Field(description="The sum of the parts' points; the lowest total ranks first")
    parts: list[ScorePartOut]


class ScheduleOut(Output):
    first_start: datetime
    overall_days: int = Field(description="Local days from the first fraction to the last")
    gap_days: list[int] = Field(description="Local days between consecutive fractions")
    score: ScoreOut
    fractions: list[PlannedFractionOut]


# Stable codes of an explanation (scheduler.search.EXPLANATION_CODES): the binding cause.
ExplanationCode = Literal[
    "invalid_rules",
    "no_capable_linac",
    "fixed_conflict",
    "opening_hours",
    "not_enough_days",
    "closure",
    "linac_downtime",
    "capacity",
    "patient_busy",
    "physicist_cover",
    "feasible",
]


class ExplanationOut(Output):
    code: ExplanationCode = Field(
        description=(
            "The binding cause: `linac_downtime` (the capable linacs are down), `closure` "
            "(public holidays or local closures), `capacity` (the capable linacs are booked), "
            "`patient_busy` (the patient's other appointments), `physicist_cover` (no rostered "
            "physicist is free to supervise), `not_enough_days` (weekdays "
            "and spacing rules alone), `opening_hours` (no opening is long enough for a "
            "session), `no_capable_linac`, `fixed_conflict`, `invalid_rules` (the protocol "
            "contradicts itself) or `feasible` (schedules exist)"
        )
    )
    message: str = Field(
        description=(
            "The cause in words: the linacs down with their dates and reason, the closed "
            "dates with their names, and the earliest possible start"
        )
    )
    earliest_feasible: date | None = Field(
        description="The earliest local date a course could start, if one was found"
    )


class ProposalOut(Output):
    timezone: str
    schedules: list[ScheduleOut]
    explanation: ExplanationOut | None = Field(
        description=(
            "Why there are no schedules, or why they start later than the requested date "
            "(null when they start on it, or later only because of the allowed weekdays)"
        )
    )


class PlacementIn(Input):
    number: Fractions
    linac_id: Id
    starts_at: When
    fold: Fold = None


class BookingIn(Input):
    fractions: (
        Annotated[
            list[PlacementIn],
            Field(
                min_length=1,
                max_length=records.MAX_FRACTIONS,
                description="Where each fraction goes (e.g. one of the proposals); or `best`",
            ),
        ]
        | None
    ) = None
    best: bool = Field(
        False,
        description=(
            "Book the best option now instead of given `fractions`: the server proposes and "
            "books in one step, and looks again when a concurrent booking takes its choice"
        ),
    )
    earliest: Day | None = Field(
        None, description="With `best`: local date to start from; default: ready-to-treat date"
    )
    preferred_window: TimeWindow | None = Field(
        None, description="With `best`: the patient's preferred local times of day"
    )
    override_reason: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    acknowledged_course_ids: Annotated[
        list[Id],
        Field(
            max_length=100,
            description=(
                "The patient's other courses the scheduler has seen and accepts next to this "
                "one: every course a 409 `nearby-course-warning` named (`nearby_courses`) must "
                "be listed for the booking to go ahead; the acknowledgement is recorded"
            ),
        ),
    ] = []

    @model_validator(mode="after")
    def _one_way_of_booking(self) -> BookingIn:
        if self.best == (self.fractions is not None):
            raise ValueError("give either `fractions` or `best: true`")
        if not self.best and (self.earliest is not None or self.preferred_window is not None):
            raise ValueError("`earliest` and `preferred_window` go with `best: true`")
        if self.best and self.override_reason is not None:
            # The best option keeps every rule; nothing is there to override.
            raise ValueError("`override_reason` goes with `fractions`, not with `best`")
        return self


class MoveIn(Input):
    linac_id: Id
    starts_at: When
    fold: Fold = None
    override_reason: Annotated[str, Field(min_length=1, max_length=1000)] | None = None


class CancelIn(Input):
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class ReadinessIn(Input):
    done_at: When | None = Field(description="When the step was done; null clears it")
    fold: Fold = None


class MissedIn(Input):
    reason: MissedReasonCode
    reason_text: Annotated[str, Field(max_length=500)] | None = Field(
        None, description='Required when the reason is "other"; optional note otherwise'
    )


class RebookingProposalIn(Input):
    count: Annotated[int, Field(ge=1, le=10)] = 3


class RebookingProposalOut(Output):
    course_id: int
    timezone: str
    missing_fractions: list[int]
    schedules: list[ScheduleOut] = Field(
        description="Whole schedules: the held fractions as they are plus the missing ones"
    )
    needs_clinician: bool = Field(
        description="No rebooking keeps the protocol's rules: the course is flagged for review"
    )
    reason: str | None


class RebookingIn(Input):
    fractions: Annotated[list[PlacementIn], Field(min_length=1, max_length=records.MAX_FRACTIONS)]
    override_reason: Annotated[str, Field(min_length=1, max_length=1000)] | None = None


class ReviewIn(Input):
    override_reason: Annotated[str, Field(min_length=1, max_length=1000)] | None = Field(
        default=None, description="Why the schedule may keep the overridable rules it breaks"
    )


class PrescriptionIn(Input):
    fractions: Fractions
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class MissedOut(Output):
    missed: FractionOut
    rebooked: FractionOut | None
    needs_review: bool


class FractionQuery(Query):
    start: When
    end: When
    start_fold: Fold = None
    end_fold: Fold = None
    linac_id: Id | None = None
    department_id: Id | None = None


class AlternativesQuery(Query):
    count: Annotated[int, Field(ge=1, le=20)] = 5


class AlternativeOut(PlannedFractionOut):
    kind: Literal[
        "partner_same_time",
        "same_time_other_day",
        "same_day_other_time",
        "other_time",
        "other_linac",
    ] = Field(
        description=(
            "How it differs from the current placement: the same time on a beam-matched "
            "partner, the same time of day on another day, another time on the same day, "
            "another day and time, or a linac outside the beam-matched group (the plan must "
            "be made for it)"
        )
    )


# --- users and tokens -----------------------------------------------------------------------

RoleName = Literal["admin", "scheduler", "viewer"]
Password = Annotated[
    str,
    Field(
        min_length=MIN_PASSWORD_LENGTH,
        max_length=MAX_PASSWORD_LENGTH,
        description=(
            f"At least {MIN_PASSWORD_LENGTH} characters, not only spaces, not containing the "
            "user's email, and hard to guess for someone who knows the user's name and email "
            f"(zxcvbn score {MIN_PASSWORD_SCORE} or more); a refusal is a 422 problem whose "
            "`errors` name the field `password` and say why"
        ),
    ),
]


class UserIn(Input):
    email: Annotated[str, Field(max_length=254)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    role: RoleName
    password: Password | None = None
    # Schedulers and viewers see only their departments' records; admins see all.
    department_ids: Annotated[list[Id], Field(max_length=1000)] = []


class UserPatch(Input):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    role: RoleName | None = None
    active: bool | None = None
    password: Password | None = None
    department_ids: Annotated[list[Id], Field(max_length=1000)] | None = None


class UserOut(Output):
    id: int
    email: str
    name: str
    role: str
    active: bool
    department_ids: list[int]
    created_at: datetime


class TokenIn(Input):
    name: Annotated[str, Field(min_length=1, max_length=100)]


class TokenOut(Output):
    id: int
    user_id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewTokenOut(TokenOut):
    token: str = Field(description="The bearer token; shown only in this response")


# --- the pathway before treatment -----------------------------------------------------------

ResourceKindName = Annotated[
    Literal["ct_sim", "ir_room"],
    Field(description="ct_sim: a CT simulator; ir_room: an interventional radiology room"),
]


class ResourceIn(Input):
    department_id: Id
    kind: ResourceKindName
    name: Annotated[str, Field(min_length=1, max_length=100)]
    opening_hours: OpeningHours | None = Field(None, description="None: the department's hours")
    active: bool = True


class ResourcePatch(Input):
    """Fields left out keep their values; the department and kind cannot change."""

    name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    opening_hours: OpeningHours | None = None
    active: bool | None = None


class ResourceQuery(Query):
    department_id: Id | None = None
    kind: Literal["ct_sim", "ir_room"] | None = None


class ResourceOut(Output):
    id: int
    department_id: int
    kind: str
    name: str
    opening_hours: dict[str, list[str]] | None
    active: bool


class PathwayOptionsIn(Input):
    ct_sim_minutes: Annotated[int, Field(ge=60, le=120)] = 90
    planning_working_days: Annotated[
        int,
        Field(
            ge=1,
            le=30,
            description="Department working days of planning after the CT day (weekends, "
            "public holidays and closures do not count); the course is ready on the last",
        ),
    ] = 5
    fiducials: bool | None = Field(
        None,
        description="Fiducial markers placed in an IR room before the CT; null: the "
        "protocol's default (liver protocols have them)",
    )
    fiducials_minutes: Annotated[int, Field(ge=30, le=180)] = 60
    fiducials_days_before_ct: Annotated[
        int, Field(ge=1, le=28, description="Least days from marker placement to the CT")
    ] = 7
    earliest: Day | None = Field(None, description="First local day to look at; today if null")


class StepSlotIn(Input):
    resource_id: Id
    starts_at: When
    fold: Fold = None


class PathwayBookIn(PathwayOptionsIn):
    ct_sim_slot: StepSlotIn | None = Field(
        None, description="The CT slot chosen from a proposal; null books the earliest pathway"
    )
    fiducials_slot: StepSlotIn | None = Field(
        None, description="The fiducials slot chosen from the same proposal, when it has one"
    )


class ProposedStepOut(Output):
    kind: Literal["fiducials", "ct_sim", "planning"]
    resource_id: int | None
    resource_name: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    local_start: datetime | None
    local_end: datetime | None
    working_days: int | None = Field(description="Planning only: working days it lasts")
    ready_on: date | None = Field(description="Planning only: the day the course is ready")


class PathwayProposalOut(Output):
    course_id: int
    timezone: str
    ready_on: date = Field(description="The earliest ready-to-treat date this pathway gives")
    steps: list[ProposedStepOut]


class PathwayStepOut(ProposedStepOut):
    id: int
    status: Literal["booked", "done", "cancelled"]


class PathwayOut(Output):
    course_id: int
    timezone: str
    ready_on: date | None = Field(description="The booked pathway's ready date, if booked")
    ready_to_treat_on: date | None = Field(description="The course's ready-to-treat date")
    steps: list[PathwayStepOut] = Field(description="Every step, cancelled ones included")
