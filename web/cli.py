"""Flask CLI commands for operators: `flask --app web create-user|create-token|seed-demo`,
`flask --app web simulate` (the year simulation) and `flask --app web health worker|beat`
(the containers' health checks)."""

from __future__ import annotations

from pathlib import Path

import click
import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy.orm import Session

from scheduler import accounts
from scheduler.errors import ServiceError
from scheduler.models import Department, User
from scheduler.unit_of_work import transaction


def _session():
    from web.db import get_session

    return get_session()


def _fail(exc: ServiceError) -> None:
    details = "; ".join(f"{e.field} {e.message}" for e in getattr(exc, "errors", []))
    raise click.ClickException(f"{exc.detail} {details}".strip())


@click.command("create-user")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option(
    "--role", type=click.Choice(sorted(accounts.ROLES)), default="scheduler", show_default=True
)
@click.option(
    "--department",
    "departments",
    multiple=True,
    help="A department (id or exact name) the user works in; repeat for several. Schedulers "
    "and viewers see only their departments; admins see every department.",
)
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Prompted for when not given (keeps it out of shell history).",
)
def create_user_command(
    email: str, name: str, role: str, departments: tuple[str, ...], password: str
) -> None:
    """Create a staff user who can sign in."""
    session = _session()
    department_ids = [_department_id(session, wanted) for wanted in departments]
    try:
        with transaction(session):
            user = accounts.create_user(
                session,
                email=email,
                name=name,
                role=role,
                password=password,
                department_ids=department_ids,
            )
    except ServiceError as exc:
        _fail(exc)
    names = ", ".join(d.name for d in user.departments) or "none"
    click.echo(
        f"Created user {user.id} <{user.email}> with role {user.role}; departments: {names}."
    )


def _department_id(session: Session, wanted: str) -> int:
    """The department named by id or exact name."""
    query = sa.select(Department.id).where(Department.name == wanted.strip())
    if wanted.strip().isdigit() and len(wanted.strip()) <= 10:
        query = sa.select(Department.id).where(
            sa.or_(Department.id == int(wanted), Department.name == wanted.strip())
        )
    found = session.scalars(query).all()
    if len(found) != 1:
        raise click.ClickException(f"No single department {wanted!r}; give its id or name.")
    return found[0]


@click.command("create-token")
@click.option("--email", required=True, help="The staff user the token acts as.")
@click.option("--name", required=True, help="What the token is for, e.g. 'EHR integration'.")
def create_token_command(email: str, name: str) -> None:
    """Create an API token and print it (it is shown only this once)."""
    session = _session()
    user = session.scalar(sa.select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise click.ClickException(f"No user with email {email}.")
    try:
        with transaction(session):
            token = accounts.create_api_token(session, user.id, name)
    except ServiceError as exc:
        _fail(exc)
    click.echo(token)


@click.command("seed-demo")
def seed_demo_command() -> None:
    """Load the demo department, linacs, protocols and staff (idempotent); print credentials."""
    from scheduler.demo import seed_demo  # the demo data is only needed by this command

    result = seed_demo(_session(), current_app.extensions["sbrt.settings"])
    for key, value in result.items():
        click.echo(f"{key}: {value}")


@click.command("simulate")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for summary.json, courses.csv, weekly.csv and report.html.",
)
@click.option("--seed", default=0, show_default=True, help="Same seed, same year.")
@click.option(
    "--policy",
    type=click.Choice(["online", "batch-daily", "hindsight"]),
    default="online",
    show_default=True,
    help="online: first-ranked proposal at arrival; batch-daily: each day's arrivals placed "
    "together by the optimiser; hindsight: every arrival known in advance (the bound).",
)
@click.option(
    "--database",
    "database_url",
    default=None,
    help="An empty database to simulate in (default: a throwaway SQLite file).",
)
@click.option(
    "--solver-seconds",
    type=float,
    default=None,
    help="Time limit of each optimiser solve (batch-daily, hindsight).",
)
def simulate_command(
    scenario: Path,
    out_dir: Path,
    seed: int,
    policy: str,
    database_url: str | None,
    solver_seconds: float | None,
) -> None:
    """Replay a scenario's year through the booking services and measure it."""
    from scheduler.simulation import ScenarioError, load_scenario, run_simulation

    try:
        document = load_scenario(scenario)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from exc
    with click.progressbar(length=document["days"], label="Simulating days") as bar:
        done = 0

        def advance(days_done: int, _total: int) -> None:
            nonlocal done
            bar.update(days_done - done)
            done = days_done

        summary = run_simulation(
            document,
            out_dir,
            seed=seed,
            policy=policy,
            database_url=database_url,
            progress=advance,
            solver_seconds=solver_seconds,
        )
    wait = summary["wait_days"]
    click.echo(
        f"{summary['courses']} courses measured; wait median {wait['median']} / "
        f"p90 {wait['p90']} days; SBRT utilisation {summary['sbrt_utilisation'] or 0:.1%}; "
        f"{summary['runtime_seconds']:.0f} s. Files in {out_dir}."
    )


@click.group("health")
def health_group() -> None:
    """Container health checks: exit 0 when that process's heartbeat is fresh, else 1."""


def _heartbeat_check(name: str) -> None:
    from datetime import UTC, datetime

    from scheduler import health
    from web import SETTINGS_KEY

    settings = current_app.extensions[SETTINGS_KEY]
    report = health.readiness(_session(), settings, now=datetime.now(UTC), broker=False)
    database = report.check(health.CheckName.DATABASE)
    check = report.check(name)
    if database is None or database.status == health.Status.FAIL:
        raise click.ClickException(f"{name}: not known, the database is unreachable")
    if check is None or check.status == health.Status.FAIL:
        detail = check.detail if check is not None else "not checked"
        raise click.ClickException(f"{name}: {detail}")
    click.echo(f"{name}: {check.detail}")


@health_group.command("worker")
def health_worker_command() -> None:
    """A worker, connected to the broker, stamped its heartbeat recently."""
    _heartbeat_check("worker")


@health_group.command("beat")
def health_beat_command() -> None:
    """Beat published its heartbeat tick recently."""
    _heartbeat_check("beat")


def init_app(app: Flask) -> None:
    for command in (
        health_group,
        create_user_command,
        create_token_command,
        seed_demo_command,
        simulate_command,
    ):
        app.cli.add_command(command)
