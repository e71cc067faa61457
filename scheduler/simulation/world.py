"""The scenario's department in a throwaway database, built through the records use cases.

The database is a new SQLite file by default, or the PostgreSQL (or other) database a caller
names; either way its schema is made by the migrations, exactly as a real installation's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.orm import Session

from bootstrap import make_engine, make_session_factory
from scheduler import accounts, records, unit_of_work
from scheduler.errors import InvalidInput
from scheduler.simulation.pathway import ensure_resources
from scheduler.simulation.scenario import ScenarioError

R = TypeVar("R")

REPO_ROOT = Path(__file__).resolve().parents[2]
SIMULATION_USER_EMAIL = "simulation@simulation.example"


@dataclass(frozen=True)
class World:
    """Ids of what the scenario built, by the names the scenario uses."""

    department_id: int
    timezone: str
    linac_ids: dict[str, int]
    protocol_ids: dict[str, int]
    user_id: int


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{(directory / 'simulation.sqlite3').resolve()}"


def migrate(database_url: str) -> None:
    """Bring the database's schema to the newest migration."""
    cfg = AlembicConfig(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["configure_logging"] = False
    command.upgrade(cfg, "head")


def open_database(database_url: str) -> tuple[sa.Engine, Session]:
    """Migrate the database, then an engine and a session on it."""
    migrate(database_url)
    if sa.make_url(database_url).get_backend_name() == "postgresql":
        # One process and one session: no connection sits idle long enough to need the
        # round trip a server's pool makes to check each connection before use.
        engine = sa.create_engine(database_url, hide_parameters=True)
    else:
        engine = make_engine(database_url)
    _commit_without_waiting_for_disk(engine)
    return engine, make_session_factory(engine)()


def _commit_without_waiting_for_disk(engine: sa.Engine) -> None:
    """A simulated year commits thousands of small units of work into a database that is
    thrown away afterwards: waiting for each commit to reach the disk would be most of the
    run's time and protects nothing. Atomicity and the constraints are unchanged."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("PRAGMA synchronous=OFF")
        elif engine.dialect.name == "postgresql":
            cursor.execute("SET synchronous_commit TO off")
        cursor.close()
        if engine.dialect.name == "postgresql":
            dbapi_connection.commit()


def build_world(session: Session, scenario: dict[str, Any], *, now: datetime) -> World:
    """The department, its closures and linacs, the protocols and a staff user who acts for
    the simulation, each created by its use case in a unit of work."""
    spec = scenario["department"]
    fields = {
        k: v for k, v in spec.items() if k not in ("closures", "physicist_roster") and v is not None
    }
    with unit_of_work.transaction(session):
        department = _refused_as("department", records.create_department, session, fields)
        department_id = department.id
        for i, closure in enumerate(spec["closures"]):
            _refused_as(
                f"department.closures[{i}]",
                records.add_closure,
                session,
                department_id,
                day=date.fromisoformat(closure["day"]),
                reason=closure["reason"],
            )
        linac_ids = {
            linac["name"]: _refused_as(
                f"linacs[{i}]",
                records.create_linac,
                session,
                {**linac, "department_id": department_id},
            ).id
            for i, linac in enumerate(scenario["linacs"])
        }
        protocol_ids = {
            protocol["code"]: _refused_as(
                f"protocols[{i}]", records.create_protocol, session, protocol
            ).id
            for i, protocol in enumerate(scenario["protocols"])
        }
        if spec.get("physicist_roster") is not None:
            apply_physicist_roster(session, department_id, spec["physicist_roster"])
        if scenario.get("pathway") is not None:
            apply_pathway(session, department_id, scenario["pathway"])
        user = accounts.create_user(
            session,
            email=SIMULATION_USER_EMAIL,
            name="Simulation",
            role="scheduler",
            department_ids=[department_id],
        )
    return World(department_id, department.timezone, linac_ids, protocol_ids, user.id)


def _refused_as(where: str, create: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Run a records use case; what it refuses becomes a ScenarioError naming the JSON path."""
    try:
        return create(*args, **kwargs)
    except InvalidInput as exc:
        raise ScenarioError(
            [f"{where}.{e.field}: {e.message}" for e in exc.errors] or [f"{where}: {exc.detail}"]
        ) from exc


def apply_pathway(session: Session, department_id: int, document: dict[str, Any]) -> None:
    """Create the CT simulators and IR rooms the scenario's pathway books."""
    ensure_resources(session, department_id, document)


def apply_physicist_roster(session: Session, department_id: int, document: dict[str, Any]) -> None:
    """Store the department's physicist roster (the roster API's document)."""
    _refused_as(
        "department.physicist_roster",
        records.set_physicist_roster,
        session,
        department_id,
        document,
    )
