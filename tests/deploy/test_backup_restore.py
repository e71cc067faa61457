"""deploy/backup.sh and deploy/restore.sh on a real PostgreSQL server: a populated database
dumped, restored into a fresh one, and found the same (every table's rows, the schema version)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bootstrap import make_engine, make_session_factory
from config import load_settings
from scheduler.demo import seed_demo
from tests.conftest import POSTGRES_ADMIN_URL, REPO_ROOT, migrate, port_open, unavailable

BACKUP = REPO_ROOT / "deploy" / "backup.sh"
RESTORE = REPO_ROOT / "deploy" / "restore.sh"


@pytest.fixture
def make_database() -> Iterator[Callable[[], str]]:
    """Empty PostgreSQL databases, each dropped at the end; returns their names."""
    if not port_open(POSTGRES_ADMIN_URL, 5432):
        unavailable(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}")
    for tool in ("pg_dump", "pg_restore", "psql"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed")
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make() -> str:
        name = f"sbrt_backup_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        made.append(name)
        return name

    yield make
    with admin.connect() as conn:
        for name in made:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _url(database: str) -> str:
    return sa.make_url(POSTGRES_ADMIN_URL).set(database=database).render_as_string(False)


def _libpq_env(**extra: str) -> dict[str, str]:
    """The server of the tests as libpq's variables, as the backup service gets them."""
    url = sa.make_url(POSTGRES_ADMIN_URL)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update(PGHOST=url.host or "127.0.0.1", PGPORT=str(url.port or 5432))
    if url.username:
        env["PGUSER"] = url.username
    if url.password:
        env["PGPASSWORD"] = url.password
    return {**env, **extra}


def _contents(database: str) -> dict[str, object]:
    """Every table's row count and the schema version, plus the patients' names."""
    engine = sa.create_engine(_url(database))
    try:
        with engine.connect() as conn:
            tables = conn.scalars(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).all()
            counts = {
                table: conn.exec_driver_sql(f'SELECT count(*) FROM "{table}"').scalar_one()
                for table in sorted(tables)
            }
            version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
            names = sorted(conn.exec_driver_sql("SELECT family_name FROM patients").scalars().all())
    finally:
        engine.dispose()
    return {"counts": counts, "version": version, "patients": names}


def test_a_backup_restores_into_a_fresh_database_intact(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    source = make_database()
    migrate(_url(source))
    settings = load_settings(
        {"DATABASE_URL": _url(source), "INSTANCE_DIR": str(tmp_path / "instance")}
    )
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        seed_demo(session, settings)
    engine.dispose()
    before = _contents(source)
    assert before["counts"]["fractions"] > 0 and before["patients"]

    backups = tmp_path / "backups"
    backups.mkdir()
    # Two older dumps, named as the script names them: with BACKUP_KEEP=2 the oldest goes.
    for stamp in ("20250101T021500Z", "20250102T021500Z"):
        (backups / f"{source}-{stamp}.dump").write_bytes(b"older dump")
    (backups / "unrelated-file.txt").write_text("kept")
    backup = subprocess.run(
        ["sh", str(BACKUP), str(backups)],
        env=_libpq_env(PGDATABASE=source, BACKUP_KEEP="2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert backup.returncode == 0, backup.stdout + backup.stderr
    dumps = sorted(path.name for path in backups.glob("*.dump"))
    assert len(dumps) == 2 and dumps[0] == f"{source}-20250102T021500Z.dump"
    assert (backups / "unrelated-file.txt").exists()
    assert not list(backups.glob("*.partial"))
    newest = backups / dumps[1]
    assert f"backup written: {newest}" in backup.stdout

    target = make_database()
    restore = subprocess.run(
        ["sh", str(RESTORE), str(newest), target],
        env=_libpq_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert _contents(target) == before

    # Restoring over data is refused, and the data left as it was.
    again = subprocess.run(
        ["sh", str(RESTORE), str(newest), target],
        env=_libpq_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 2
    assert "is not empty" in again.stderr
    assert _contents(target) == before


def test_a_failed_dump_leaves_no_backup_behind(tmp_path: Path) -> None:
    if shutil.which("pg_dump") is None:
        unavailable("pg_dump is not installed")
    # Nothing listens on port 9: pg_dump fails, and neither a dump nor a partial one remains.
    result = subprocess.run(
        ["sh", str(BACKUP), str(tmp_path)],
        env=_libpq_env(PGHOST="127.0.0.1", PGPORT="9", PGDATABASE="sbrt"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert list(tmp_path.iterdir()) == []
