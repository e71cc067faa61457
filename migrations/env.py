"""Alembic environment: the database URL comes from the application settings.

A caller (tests, tools) may pass a URL explicitly with `config.attributes["database_url"]`
or `alembic -x database_url=...`.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

import notifications.models  # noqa: F401  (registers the outbox tables on Base.metadata)
from bootstrap import make_engine
from config import load_settings_or_exit
from scheduler.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    return (
        config.attributes.get("database_url")
        or context.get_x_argument(as_dictionary=True).get("database_url")
        # Bad settings stop the migration with one error line, as they stop every other process.
        or load_settings_or_exit().database_url
    )


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = _database_url()
    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
