"""Flask CLI commands for operators: `flask --app web create-user|create-token|seed-demo`."""

from __future__ import annotations

import click
import sqlalchemy as sa
from flask import Flask, current_app

from scheduler import accounts
from scheduler.errors import ServiceError
from scheduler.models import User
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
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Prompted for when not given (keeps it out of shell history).",
)
def create_user_command(email: str, name: str, role: str, password: str) -> None:
    """Create a staff user who can sign in."""
    try:
        session = _session()
        with transaction(session):
            user = accounts.create_user(
                session, email=email, name=name, role=role, password=password
            )
    except ServiceError as exc:
        _fail(exc)
    click.echo(f"Created user {user.id} <{user.email}> with role {user.role}.")


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


def init_app(app: Flask) -> None:
    for command in (create_user_command, create_token_command, seed_demo_command):
        app.cli.add_command(command)
