"""SQLAlchemy models: the persistent shape of departments, linacs, protocols, patients,
courses and fractions, plus staff accounts and the booking change events.

Times are stored in UTC. The guarantees that must hold under concurrency (no two active
fractions overlapping on one linac or for one patient) live in the database: PostgreSQL
exclusion constraints added by the migrations, and serialised writers on SQLite.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """An aware-UTC datetime on every backend (SQLite keeps no zone, so we restore it)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware UTC instant is required")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text: store one canonical naive-UTC form.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict: sa.JSON, list: sa.JSON}


class FractionStatus(enum.StrEnum):
    TENTATIVE = "tentative"
    BOOKED = "booked"
    CONFIRMED = "confirmed"
    COMPLETED = "completed"
    MISSED = "missed"
    CANCELLED = "cancelled"


# Statuses that occupy a linac and the patient: the exclusion constraints cover only these.
ACTIVE_FRACTION_STATUSES = (
    FractionStatus.TENTATIVE,
    FractionStatus.BOOKED,
    FractionStatus.CONFIRMED,
)
ACTIVE_FRACTION_SQL = "status IN ('tentative', 'booked', 'confirmed')"
# Statuses that count towards a course's prescribed fractions: to come, or delivered.
HELD_FRACTION_STATUSES = (*ACTIVE_FRACTION_STATUSES, FractionStatus.COMPLETED)


class CourseStatus(enum.StrEnum):
    DRAFT = "draft"  # created, no fractions booked yet
    BOOKED = "booked"  # every fraction placed
    # Fewer fractions placed or delivered than prescribed (one was cancelled or missed):
    # waiting to be rebooked or for a clinician to change the prescription.
    INCOMPLETE = "incomplete"
    NEEDS_REVIEW = "needs_review"  # a fraction could not be re-placed within the rules
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class MissedReason(enum.StrEnum):
    """Why a fraction was missed; "other" needs a written reason."""

    DID_NOT_ATTEND = "did_not_attend"
    UNWELL = "unwell"
    MACHINE_FAULT = "machine_fault"
    OTHER = "other"


MISSED_REASON_LABELS = {
    MissedReason.DID_NOT_ATTEND: "patient did not attend",
    MissedReason.UNWELL: "patient unwell",
    MissedReason.MACHINE_FAULT: "machine fault",
    MissedReason.OTHER: "other",
}


class BookingEventKind(enum.StrEnum):
    """What a booking change was: the scheduler writes these, the reminder outbox reads them."""

    COURSE_BOOKED = "course_booked"
    COURSE_CANCELLED = "course_cancelled"
    COURSE_READY = "course_ready"
    COURSE_NOT_READY = "course_not_ready"
    COURSE_NEEDS_REVIEW = "course_needs_review"
    COURSE_REVIEWED = "course_reviewed"
    PRESCRIPTION_CHANGED = "prescription_changed"
    FRACTION_MOVED = "fraction_moved"
    FRACTION_REBOOKED = "fraction_rebooked"
    FRACTION_CANCELLED = "fraction_cancelled"
    FRACTION_MISSED = "fraction_missed"
    FRACTION_MISSED_UNDONE = "fraction_missed_undone"
    FRACTION_COMPLETED = "fraction_completed"
    FRACTION_CONFIRMED = "fraction_confirmed"
    PATHWAY_BOOKED = "pathway_booked"
    PATHWAY_CANCELLED = "pathway_cancelled"


class Role(enum.StrEnum):
    ADMIN = "admin"
    SCHEDULER = "scheduler"
    VIEWER = "viewer"


class Department(Base):
    __tablename__ = "departments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    timezone: Mapped[str] = mapped_column(sa.String(64))
    phone: Mapped[str | None] = mapped_column(sa.String(32))
    # Public holidays come from the `holidays` package for this country/subdivision.
    holiday_country: Mapped[str | None] = mapped_column(sa.String(2))
    holiday_subdivision: Mapped[str | None] = mapped_column(sa.String(10))
    # {"0": ["07:00", "19:00"], ...}: Monday=0, local time; a missing weekday is closed.
    opening_hours: Mapped[dict] = mapped_column(default=dict)
    # Patient messages go out only inside this window of the patient's local day.
    message_window_start: Mapped[str] = mapped_column(sa.String(5), default="08:00")
    message_window_end: Mapped[str] = mapped_column(sa.String(5), default="21:00")
    # Reminder cadence: which fraction reminders go out and how long before each session.
    # A protocol may override any of these (None there means the department's setting).
    day_before_reminder: Mapped[bool] = mapped_column(default=True)
    day_before_reminder_minutes: Mapped[int] = mapped_column(default=24 * 60)
    same_day_reminder: Mapped[bool] = mapped_column(default=True)
    same_day_reminder_minutes: Mapped[int] = mapped_column(default=120)
    # Physicist supervision of SBRT sessions: off, supervision does not limit booking; on,
    # supervised sessions fit only the roster's blocks (none: nobody is ever rostered).
    physicist_roster_enabled: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # Every SBRT fraction is supervised, not only each course's first.
    physicist_every_fraction: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    linacs: Mapped[list[Linac]] = relationship(back_populates="department", order_by="Linac.id")
    closures: Mapped[list[Closure]] = relationship(
        back_populates="department", order_by="Closure.day", cascade="all, delete-orphan"
    )
    roster_blocks: Mapped[list[RosterBlock]] = relationship(
        back_populates="department",
        order_by="(RosterBlock.weekday, RosterBlock.starts)",
        cascade="all, delete-orphan",
    )
    roster_exceptions: Mapped[list[RosterException]] = relationship(
        back_populates="department",
        order_by="(RosterException.day, RosterException.starts)",
        cascade="all, delete-orphan",
    )


class RosterBlock(Base):
    """Physicists present every week on one weekday (Monday=0) between two local times."""

    __tablename__ = "physicist_roster_blocks"
    __table_args__ = (
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday_range"),
        sa.CheckConstraint("physicists >= 0", name="physicists_count"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    department_id: Mapped[int] = mapped_column(sa.ForeignKey("departments.id"), index=True)
    weekday: Mapped[int]
    starts: Mapped[str] = mapped_column(sa.String(5))  # local "HH:MM"
    ends: Mapped[str] = mapped_column(sa.String(5))
    physicists: Mapped[int]

    department: Mapped[Department] = relationship(back_populates="roster_blocks")


class RosterException(Base):
    """Physicists present on one date; a date's exception rows replace its weekday's blocks
    (a row of 0 physicists: nobody that day)."""

    __tablename__ = "physicist_roster_exceptions"
    __table_args__ = (sa.CheckConstraint("physicists >= 0", name="physicists_count"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    department_id: Mapped[int] = mapped_column(sa.ForeignKey("departments.id"), index=True)
    day: Mapped[date]
    starts: Mapped[str] = mapped_column(sa.String(5))
    ends: Mapped[str] = mapped_column(sa.String(5))
    physicists: Mapped[int]

    department: Mapped[Department] = relationship(back_populates="roster_exceptions")


class Closure(Base):
    """A local closure day (staff training, building work) on top of public holidays."""

    __tablename__ = "closures"
    __table_args__ = (sa.UniqueConstraint("department_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    department_id: Mapped[int] = mapped_column(sa.ForeignKey("departments.id"), index=True)
    day: Mapped[date]
    reason: Mapped[str] = mapped_column(sa.String(200))

    department: Mapped[Department] = relationship(back_populates="closures")


class Linac(Base):
    __tablename__ = "linacs"
    __table_args__ = (sa.UniqueConstraint("department_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    department_id: Mapped[int] = mapped_column(sa.ForeignKey("departments.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    capabilities: Mapped[list] = mapped_column(default=list)
    # Plans made for one machine of a beam-matched group can be delivered on any of them.
    beam_group: Mapped[str | None] = mapped_column(sa.String(50))
    # Same shape as Department.opening_hours; None means the department's hours.
    opening_hours: Mapped[dict | None]
    active: Mapped[bool] = mapped_column(default=True)

    department: Mapped[Department] = relationship(back_populates="linacs")


class Downtime(Base):
    __tablename__ = "downtimes"
    __table_args__ = (
        sa.CheckConstraint("ends_at > starts_at", name="positive_length"),
        sa.Index("ix_downtimes_linac_time", "linac_id", "starts_at", "ends_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    linac_id: Mapped[int] = mapped_column(sa.ForeignKey("linacs.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(sa.String(20), default="planned")  # planned | unplanned
    reason: Mapped[str] = mapped_column(sa.String(300), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    # Incremented on every edit: calendar feeds carry it as SEQUENCE so clients take the newer.
    version: Mapped[int] = mapped_column(default=1, server_default=sa.text("1"))
    updated_at: Mapped[datetime | None]
    updated_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))

    linac: Mapped[Linac] = relationship()


class ResourceKind(enum.StrEnum):
    """Department rooms and machines of the pathway before treatment (not linacs)."""

    CT_SIM = "ct_sim"  # CT simulator: the planning scan
    IR_ROOM = "ir_room"  # interventional radiology room: fiducial marker placement


class Resource(Base):
    """A CT simulator or IR room the pathway books; hours like a linac's."""

    __tablename__ = "resources"
    __table_args__ = (sa.UniqueConstraint("department_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    department_id: Mapped[int] = mapped_column(sa.ForeignKey("departments.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(20))  # a ResourceKind
    name: Mapped[str] = mapped_column(sa.String(100))
    # Same shape as Department.opening_hours; None means the department's hours.
    opening_hours: Mapped[dict | None]
    active: Mapped[bool] = mapped_column(default=True)

    department: Mapped[Department] = relationship()


class PathwayStepKind(enum.StrEnum):
    FIDUCIALS = "fiducials"  # marker placement in an IR room, days before the CT
    CT_SIM = "ct_sim"  # the planning CT on a CT simulator
    PLANNING = "planning"  # treatment planning: working days, no resource


class PathwayStepStatus(enum.StrEnum):
    BOOKED = "booked"
    DONE = "done"
    CANCELLED = "cancelled"


# Steps that hold their resource: the exclusion constraint (PostgreSQL) covers only these.
ACTIVE_STEP_SQL = "status = 'booked'"


class PathwayStep(Base):
    """One step of a course's pathway before treatment.

    Fiducials and CT simulation occupy a resource from ``starts_at`` to ``ends_at``;
    planning occupies no resource and lasts ``working_days`` department working days,
    after which the course is ready to treat on ``ready_on``.
    """

    __tablename__ = "pathway_steps"
    __table_args__ = (
        sa.CheckConstraint("ends_at > starts_at", name="positive_length"),
        sa.Index("ix_pathway_steps_resource_time", "resource_id", "starts_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(sa.ForeignKey("courses.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(20))  # a PathwayStepKind
    resource_id: Mapped[int | None] = mapped_column(sa.ForeignKey("resources.id"))
    starts_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    working_days: Mapped[int | None]
    ready_on: Mapped[date | None]
    status: Mapped[str] = mapped_column(sa.String(20), default=PathwayStepStatus.BOOKED)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    resource: Mapped[Resource | None] = relationship()


class Protocol(Base):
    """A course template; the rule columns follow the DICOM RT prescription attributes."""

    __tablename__ = "protocols"
    __table_args__ = (
        sa.CheckConstraint("fractions BETWEEN 1 AND 5", name="fraction_count"),
        sa.CheckConstraint(
            "first_session_minutes BETWEEN 30 AND 120 AND session_minutes BETWEEN 30 AND 120",
            name="session_minutes",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(50), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    site: Mapped[str] = mapped_column(sa.String(50), default="generic")  # prep instructions key
    fractions: Mapped[int]
    min_hours_between: Mapped[float] = mapped_column(default=0.0)
    min_interval_days: Mapped[int] = mapped_column(default=1)
    max_interval_days: Mapped[int | None]
    min_overall_days: Mapped[int | None]
    max_overall_days: Mapped[int | None]
    weekdays: Mapped[list] = mapped_column(default=lambda: [0, 1, 2, 3, 4])
    start_weekdays: Mapped[list | None]
    first_session_minutes: Mapped[int] = mapped_column(default=60)
    session_minutes: Mapped[int] = mapped_column(default=45)
    capabilities: Mapped[list] = mapped_column(default=lambda: ["sbrt"])
    prep_instructions: Mapped[str] = mapped_column(sa.Text, default="")
    # Reminder cadence for this protocol; None means the department's setting.
    day_before_reminder: Mapped[bool | None]
    day_before_reminder_minutes: Mapped[int | None]
    same_day_reminder: Mapped[bool | None]
    same_day_reminder_minutes: Mapped[int | None]
    active: Mapped[bool] = mapped_column(default=True)


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (sa.UniqueConstraint("department_id", "mrn"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    department_id: Mapped[int] = mapped_column(sa.ForeignKey("departments.id"), index=True)
    mrn: Mapped[str] = mapped_column(sa.String(50))
    given_name: Mapped[str] = mapped_column(sa.String(100))
    family_name: Mapped[str] = mapped_column(sa.String(100))
    # The second identifier next to the MRN. Nullable only for patients registered before it
    # was asked for; every new patient has one (scheduler.records).
    date_of_birth: Mapped[date | None]
    phone_e164: Mapped[str | None] = mapped_column(sa.String(20))
    email: Mapped[str | None] = mapped_column(sa.String(254))
    language: Mapped[str] = mapped_column(sa.String(8), default="en")
    timezone: Mapped[str | None] = mapped_column(sa.String(64))  # None: the department's
    sms_consent: Mapped[bool] = mapped_column(default=False)
    sms_consent_at: Mapped[datetime | None]
    sms_opted_out: Mapped[bool] = mapped_column(default=False)
    # Set when the SMS provider says the number can never receive (invalid, not mobile...).
    sms_blocked_reason: Mapped[str | None] = mapped_column(sa.String(200))
    email_consent: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    department: Mapped[Department] = relationship()
    courses: Mapped[list[Course]] = relationship(back_populates="patient", order_by="Course.id")


class Course(Base):
    __tablename__ = "courses"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"), index=True)
    protocol_id: Mapped[int] = mapped_column(sa.ForeignKey("protocols.id"))
    status: Mapped[str] = mapped_column(sa.String(20), default=CourseStatus.DRAFT)
    priority: Mapped[int] = mapped_column(default=3)  # 1 urgent ... 5 routine
    ready_to_treat_on: Mapped[date | None]
    notes: Mapped[str] = mapped_column(sa.Text, default="")
    # Readiness checklist: each step is done when its timestamp is set.
    ct_simulation_at: Mapped[datetime | None]
    plan_approved_at: Mapped[datetime | None]
    physics_qa_at: Mapped[datetime | None]
    consent_at: Mapped[datetime | None]
    fiducials_placed_at: Mapped[datetime | None]
    review_reason: Mapped[str | None] = mapped_column(sa.Text)
    # A clinician's change to the number of fractions (None: the protocol's), and why.
    prescribed_fractions: Mapped[int | None]
    prescription_reason: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="courses")
    protocol: Mapped[Protocol] = relationship()
    fractions: Mapped[list[Fraction]] = relationship(
        back_populates="course", order_by="(Fraction.number, Fraction.id)"
    )

    @property
    def ready_to_treat(self) -> bool:
        """Plan approval and physics QA recorded: the first fraction may be confirmed."""
        return self.plan_approved_at is not None and self.physics_qa_at is not None

    @property
    def fraction_count(self) -> int:
        """How many fractions the patient is to have: the prescription, else the protocol's."""
        if self.prescribed_fractions is not None:
            return self.prescribed_fractions
        return self.protocol.fractions

    @property
    def held_numbers(self) -> list[int]:
        """Positions that hold a fraction still to come or delivered."""
        return sorted({f.number for f in self.fractions if f.status in HELD_FRACTION_STATUSES})

    @property
    def missing_numbers(self) -> list[int]:
        """Positions still to be rebooked for the course to reach its prescribed count.

        A draft, cancelled or completed course misses nothing: there is nothing to rebook.
        """
        if self.status in (CourseStatus.DRAFT, CourseStatus.CANCELLED, CourseStatus.COMPLETED):
            return []
        held = set(self.held_numbers)
        short = self.fraction_count - len(held)
        if short <= 0:
            return []
        open_numbers = [n for n in range(1, self.protocol.fractions + 1) if n not in held]
        return open_numbers[:short]

    @property
    def incomplete(self) -> bool:
        return bool(self.missing_numbers)


class Fraction(Base):
    __tablename__ = "fractions"
    __table_args__ = (
        sa.CheckConstraint("ends_at > starts_at", name="positive_length"),
        sa.CheckConstraint("number BETWEEN 1 AND 5", name="number_range"),
        sa.Index("ix_fractions_linac_time", "linac_id", "starts_at"),
        sa.Index("ix_fractions_patient_time", "patient_id", "starts_at"),
        # One active row per position in a course (a missed fraction's rebooking is a new row).
        sa.Index(
            "uq_fractions_active_number",
            "course_id",
            "number",
            unique=True,
            sqlite_where=sa.text(ACTIVE_FRACTION_SQL),
            postgresql_where=sa.text(ACTIVE_FRACTION_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(sa.ForeignKey("courses.id"), index=True)
    # Denormalised from the course so the database can forbid a patient's overlapping sessions.
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"))
    linac_id: Mapped[int] = mapped_column(sa.ForeignKey("linacs.id"))
    number: Mapped[int]
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(sa.String(20), default=FractionStatus.BOOKED)
    # Incremented on every change; reminders carry it so a stale one is never sent.
    version: Mapped[int] = mapped_column(default=1)
    override_reason: Mapped[str | None] = mapped_column(sa.Text)
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
    # A MissedReason for a missed fraction; status_reason holds the words shown for it.
    missed_reason: Mapped[str | None] = mapped_column(sa.String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    course: Mapped[Course] = relationship(back_populates="fractions")
    linac: Mapped[Linac] = relationship()

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_FRACTION_STATUSES


class BookingEvent(Base):
    """A booking change, written in the same transaction as the change itself.

    The reminder pipeline consumes these rows (change notices, confirmations), so an event
    exists if and only if its change was committed.
    """

    __tablename__ = "booking_events"
    __table_args__ = (sa.Index("ix_booking_events_unprocessed", "processed_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # A BookingEventKind; stored as its text so a new kind needs no migration.
    kind: Mapped[str] = mapped_column(sa.String(40))
    course_id: Mapped[int] = mapped_column(sa.ForeignKey("courses.id"), index=True)
    fraction_id: Mapped[int | None] = mapped_column(sa.ForeignKey("fractions.id"))
    payload: Mapped[dict] = mapped_column(default=dict)
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    role: Mapped[str] = mapped_column(sa.String(20), default=Role.VIEWER)
    password_hash: Mapped[str | None] = mapped_column(sa.String(200))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Each session cookie carries the epoch it was signed in under; raising it (sign-out,
    # password, role or active change) ends every session of the user on the server.
    session_epoch: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))

    # The departments whose patients, schedules and messages the user works with
    # (scheduler.access); admins administer the whole installation regardless.
    departments: Mapped[list[Department]] = relationship(
        secondary="department_members", order_by="Department.id"
    )

    @property
    def department_ids(self) -> list[int]:
        return [department.id for department in self.departments]


class DepartmentMember(Base):
    """A staff user's membership of one department."""

    __tablename__ = "department_members"

    user_id: Mapped[int] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    department_id: Mapped[int] = mapped_column(
        sa.ForeignKey("departments.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ApiToken(Base):
    """A bearer token for integrations; only its SHA-256 digest is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    token_digest: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()


class AuditEntry(Base):
    """Who viewed or changed which record, and when."""

    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("ix_audit_log_subject", "subject_type", "subject_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(sa.String(40))
    subject_type: Mapped[str] = mapped_column(sa.String(40))
    subject_id: Mapped[int | None]
    detail: Mapped[dict] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerHeartbeat(Base):
    """Last time a background process showed it was alive: `beat` (it published its heartbeat
    tick) and `worker` (a worker ran that tick); see scheduler.heartbeats."""

    __tablename__ = "worker_heartbeats"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    last_seen_at: Mapped[datetime]


class TaskFailure(Base):
    """A background task that ended in an exception, kept for the admins' System page.

    Only the task's name, the exception's type and a message with anything resembling patient
    data masked are kept: arguments are never recorded (see scheduler.task_failures).
    """

    __tablename__ = "task_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_name: Mapped[str] = mapped_column(sa.String(200))
    exception_type: Mapped[str] = mapped_column(sa.String(200))
    message: Mapped[str] = mapped_column(sa.Text, default="")
    failed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class PatientLink(Base):
    """A patient's secure link to their schedule: a random token, stored only as a digest.

    The token carries no personal data and means nothing by itself; it expires, is bound to
    one purpose and can be revoked.
    """

    __tablename__ = "patient_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_digest: Mapped[str] = mapped_column(sa.String(64), unique=True)
    purpose: Mapped[str] = mapped_column(sa.String(20), default="schedule")
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"), index=True)
    course_id: Mapped[int | None] = mapped_column(sa.ForeignKey("courses.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]  # single-use purposes are spent once used
    revoked_at: Mapped[datetime | None]


class CalendarFeed(Base):
    """A secret-URL iCalendar feed of one linac's bookings for staff calendar apps."""

    __tablename__ = "calendar_feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_digest: Mapped[str] = mapped_column(sa.String(64), unique=True)
    linac_id: Mapped[int] = mapped_column(sa.ForeignKey("linacs.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100), default="")
    # The admin who made it: the feed stops for good when they are deactivated.
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    # When a calendar app last fetched it, to the nearest FEED_USE_RESOLUTION (scheduler.links).
    last_used_at: Mapped[datetime | None]

    created_by: Mapped[User | None] = relationship()
    linac: Mapped[Linac] = relationship()


class LoginAttempt(Base):
    """Checked sign-in attempts, kept for review; the email is kept only as a digest."""

    __tablename__ = "login_attempts"
    __table_args__ = (sa.Index("ix_login_attempts_email_at", "email_digest", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email_digest: Mapped[str] = mapped_column(sa.String(64))
    remote_addr: Mapped[str | None] = mapped_column(sa.String(64))
    succeeded: Mapped[bool] = mapped_column(default=False)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class SignInThrottle(Base):
    """Failed sign-ins counted per throttle key (an account from one address, or an address).

    The key is a digest, so neither the email nor the address is kept in the clear. One row
    per key, changed under a row lock, so parallel guesses are counted one after another.
    """

    __tablename__ = "sign_in_throttles"

    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    last_failure_at: Mapped[datetime | None]


class SimulationRunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class SimulationRun(Base):
    """A what-if simulation an admin asked for: its scenario, how far it got, what it found.

    The run's files (summary, courses, report) live in `output_dir` under the SIMULATION_DIR
    setting; the simulation's own throwaway database sits there too, never in this one.
    """

    __tablename__ = "simulation_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    department_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("departments.id", ondelete="SET NULL"), index=True
    )
    created_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    scenario: Mapped[dict]
    policy: Mapped[str] = mapped_column(sa.String(20), default="online")
    seed: Mapped[int] = mapped_column(default=0)
    # A SimulationRunStatus, stored as its text.
    status: Mapped[str] = mapped_column(sa.String(20), default=SimulationRunStatus.QUEUED)
    days_done: Mapped[int] = mapped_column(default=0)
    days_total: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[datetime | None]
    # Written with each progress step: a running run that has not moved for long has lost its
    # worker (scheduler.simulation.execution.fail_abandoned_runs).
    progressed_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    summary: Mapped[dict | None]
    # The run's directory name inside SIMULATION_DIR (a name, never a path from outside).
    output_dir: Mapped[str | None] = mapped_column(sa.String(100))

    department: Mapped[Department | None] = relationship()
    created_by: Mapped[User | None] = relationship()
