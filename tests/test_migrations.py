"""Alembic migrations on SQLite and PostgreSQL: from empty to exactly the models' schema, a
database made before migrations, processes starting together, and `assistant migrate`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, func, inspect, select, text
from sqlalchemy.orm import Session

from assistant.accounts import User
from assistant.cli import main
from assistant.db import (
    BASELINE_REVISION,
    MIGRATION_LOCK_KEY,
    Document,
    current_revision,
    head_revision,
    make_engine,
    migration_config,
    model_metadata,
    schema_differences,
    upgrade_database,
)
from assistant.errors import ConfigurationError
from assistant.settings import Settings, load_settings

# These tests pick their databases themselves, SQLite files among them.
picks_its_databases = pytest.mark.sqlite("compares migrations on SQLite and on PostgreSQL")


def test_the_postgresql_switch_reaches_every_way_settings_are_made(
    settings: Settings, tmp_path: Path
) -> None:
    """ASSISTANT_TEST_DATABASE=postgresql: the `settings` fixture, a direct load_settings and
    a process the test starts all use the test's PostgreSQL database."""
    wanted = os.environ.get("ASSISTANT_TEST_DATABASE", "sqlite")
    direct = load_settings(data_dir=tmp_path / "other")
    for url in (settings.sqlalchemy_url, direct.sqlalchemy_url):
        assert make_engine(url).dialect.name == wanted
    script = "from assistant.settings import load_settings; print(load_settings().sqlalchemy_url)"
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(settings.resolved_data_dir)}
    child = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert child.stdout.strip() == settings.sqlalchemy_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """As ASSISTANT_DATABASE_URL would hold it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'assistant.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    yield engine
    engine.dispose()


def _tables(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(inspect(connection).get_table_names())


@picks_its_databases
def test_upgrading_an_empty_database_gives_exactly_the_models_schema(engine: Engine) -> None:
    assert upgrade_database(engine) == head_revision()
    assert schema_differences(engine) == []
    assert _tables(engine) == {*model_metadata().tables, "alembic_version"}


@picks_its_databases
def test_an_up_to_date_database_costs_one_quick_read(engine: Engine) -> None:
    upgrade_database(engine)
    seconds = []
    for _ in range(5):
        start = time.perf_counter()
        upgrade_database(engine)
        seconds.append(time.perf_counter() - start)
    assert sorted(seconds)[2] < 0.05, seconds  # about 1 ms here: it runs in every start


@picks_its_databases
def test_a_database_made_before_migrations_is_stamped_and_keeps_its_data(engine: Engine) -> None:
    # What make_session_factory's create_all made before there were migrations: the
    # baseline's tables, without the alembic_version table.
    with engine.begin() as connection:
        command.upgrade(migration_config(connection), BASELINE_REVISION)
        connection.execute(text("DROP TABLE alembic_version"))
    with Session(engine) as session, session.begin():
        session.add(Document(id="d1", filename="a.md", extension=".md", sha256="0" * 64,
                             size_bytes=3))  # fmt: skip
        session.add(User(username="alice", role="staff", password_hash="x"))
    assert upgrade_database(engine) == head_revision()
    with Session(engine) as session:
        assert session.get(Document, "d1").filename == "a.md"  # type: ignore[union-attr]
        assert session.scalars(select(User.username)).all() == ["alice"]
    assert schema_differences(engine) == []


@picks_its_databases
def test_tables_from_before_migrations_that_differ_are_refused(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE documents (id VARCHAR(32) PRIMARY KEY)"))
    with pytest.raises(ConfigurationError, match=r"differ from the first revision.*documents"):
        upgrade_database(engine)
    assert _tables(engine) == {"documents"}  # left as it was


@picks_its_databases
def test_processes_starting_together_migrate_once(engine: Engine, database_url: str) -> None:
    """Three processes start against a new database while the migration lock is held; once
    it is released, one migrates and the others find the database current."""
    script = (
        "import sys; from assistant.db import make_engine, upgrade_database; "
        "print(upgrade_database(make_engine(sys.argv[1])))"
    )
    url = database_url.replace("postgresql://", "postgresql+psycopg://")
    with engine.connect() as holder:
        if engine.dialect.name == "postgresql":
            holder.execute(select(func.pg_advisory_lock(MIGRATION_LOCK_KEY)))
        else:
            holder.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite's write lock
        processes = [
            subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        _wait_for_waiters(holder, processes)
        if engine.dialect.name == "postgresql":
            holder.execute(select(func.pg_advisory_unlock(MIGRATION_LOCK_KEY)))
        else:
            holder.rollback()
        outputs = [process.communicate(timeout=120)[0].strip() for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0]
    assert outputs == [head_revision()] * 3
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert current_revision(connection) == head_revision()
    assert schema_differences(engine) == []


def _wait_for_waiters(holder: Connection, processes: list[subprocess.Popen[str]]) -> None:
    """Until all three wait for PostgreSQL's advisory lock; SQLite shows no waiters, so
    there, long enough for them to start and reach its write lock."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert all(process.poll() is None for process in processes), "a process exited early"
        if holder.dialect.name != "postgresql":
            time.sleep(3)
            return
        waiting = holder.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        ).scalar()
        if waiting == len(processes):
            return
        time.sleep(0.2)
    pytest.fail("the processes never waited for the migration lock")


# -- assistant migrate --------------------------------------------------------------------
def _migrate(tmp_path: Path, database_url: str, *args: str) -> tuple[int, str]:
    environment = {
        "ASSISTANT_DATA_DIR": str(tmp_path / "var"),
        "ASSISTANT_DATABASE_URL": database_url,
    }
    result = CliRunner().invoke(main, ["migrate", *args], env=environment)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@picks_its_databases
def test_migrate_upgrades_and_check_compares_the_models(
    tmp_path: Path, database_url: str, engine: Engine
) -> None:
    code, output = _migrate(tmp_path, database_url, "--check")
    assert code == 1 and "run `assistant migrate`" in output  # a new database: not at head
    upgraded = f"database at revision {head_revision()} (head)\n"
    assert _migrate(tmp_path, database_url) == (0, upgraded)
    assert _migrate(tmp_path, database_url) == (0, upgraded)  # nothing left to do
    assert _migrate(tmp_path, database_url, "--check") == (0, "the models match the migrations\n")
    with engine.begin() as connection:  # a model's index that no migration creates
        connection.execute(text("DROP INDEX ix_documents_status"))
    code, output = _migrate(tmp_path, database_url, "--check")
    assert code == 1 and "ix_documents_status" in output and "differ from the migrations" in output


@picks_its_databases
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://postgres:secret@127.0.0.1:1/assistant", "cannot open the database"),
        ("postgresql://postgres@127.0.0.1:5432/assistant_no_such_db", "does not exist"),
        ("sqlite:////nonexistent/directory/assistant.db", "unable to open database file"),
        ("not a database url", "invalid database URL"),
        ("mysql://host/assistant", "invalid database URL"),
    ],
)
def test_migrate_with_a_bad_database_url_says_what_is_wrong(
    tmp_path: Path, url: str, message: str
) -> None:
    code, output = _migrate(tmp_path, url)
    assert code == 1
    assert output.startswith("Error: ") and message in output
    assert "secret" not in output  # passwords are not shown
