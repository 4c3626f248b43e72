"""Shared fixtures. Real parts by default: the packaged models, Chroma and SQLite in a
temporary directory, real worker processes. The fakes serve fast tests of logic only."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine, create_engine, event, text

from assistant.answering.generation import ExtractiveFakeGenerator
from assistant.db import make_engine, upgrade_database
from assistant.embedding import HashingEmbedder
from assistant.services import Services, build_services
from assistant.settings import Settings, load_settings
from tests.documents import sample_files
from web import create_app

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# The documented way this machine starts its Redis (see README, "Test").
REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip


# The first admin's password in tests (ASSISTANT_ADMIN_PASSWORD in production).
ADMIN_PASSWORD = "test admin password 1"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One assembled GGUF and one exported embedding model for the whole test run."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def settings(tmp_path: Path, model_cache: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path / "var", admin_password=ADMIN_PASSWORD, model_cache_dir=model_cache
    )


class RecordingQueue:
    """Stands in for the broker: records which documents were sent for ingestion."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_ingest(self, document_id: str) -> None:
        self.sent.append(document_id)


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def app(fake_services: Services, queue: RecordingQueue) -> Flask:
    """The web app over the fast fake services; the queue records what it was sent."""
    app = create_app(services=fake_services, task_sender=queue)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client signed in as the first admin."""
    client = app.test_client()
    sign_in(client)
    return client


def sign_in(client: FlaskClient, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    """Sign in through the login form; later requests carry the session's CSRF token."""
    response = post_login(client, username=username, password=password)
    assert response.status_code == 303, response.get_data(as_text=True)
    with client.session_transaction() as session:
        client.environ_base["HTTP_X_CSRF_TOKEN"] = session["csrf_token"]


def post_login(client: FlaskClient, headers: dict[str, str] | None = None, **form: str) -> Any:
    """POST /login as the sign-in form does: with the CSRF token the form page gave."""
    client.get("/login", headers=headers)
    with client.session_transaction() as session:
        token = session["csrf_token"]
    return client.post("/login", data={"csrf_token": token, **form}, headers=headers)


@pytest.fixture
def fake_services(settings: Settings) -> Services:
    """Fast deterministic embedder and generator: for the logic around the models."""
    return build_services(settings, embedder=HashingEmbedder(), generator=ExtractiveFakeGenerator())


@pytest.fixture
def impatient(settings: Settings) -> tuple[Flask, Services]:
    """An app (and its services) whose statements wait at most 1 s for a lock."""
    services = build_services(
        settings.model_copy(update={"database_busy_seconds": 1.0}),
        embedder=HashingEmbedder(),
        generator=ExtractiveFakeGenerator(),
    )
    return create_app(services=services, task_sender=RecordingQueue()), services


@pytest.fixture
def services(settings: Settings) -> Services:
    """The real packaged models (loaded once per test process, on first use)."""
    return build_services(settings)


@pytest.fixture
def files() -> dict[str, bytes]:
    return sample_files()


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis; started with the documented command if it is down."""
    if not _port_open(REDIS_HOST, REDIS_PORT):
        Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
        Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
        subprocess.run(REDIS_START, check=True)
        deadline = time.monotonic() + 10
        while not _port_open(REDIS_HOST, REDIS_PORT):
            if time.monotonic() > deadline:
                pytest.fail("Redis did not start on 127.0.0.1:6379")
            time.sleep(0.2)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{_claim_redis_database()}"


def _claim_redis_database() -> int:
    """A Redis database (1-15) of this test run's own, held by a lock file until the run
    ends, so two runs on one machine (a developer's and CI's) never share a queue."""
    for number in range(15, 0, -1):
        lock = open(f"/tmp/assistant-tests-redis-{number}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _HELD_LOCKS.append(lock)  # released when this process exits
        return number
    pytest.fail("all Redis test databases 1-15 are in use by other test runs")


_HELD_LOCKS: list[object] = []


def _wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"worker exited early:\n{log.read_text(errors='replace')}")
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    pytest.fail(f"worker not ready after {seconds}s:\n{log.read_text(errors='replace')}")


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a real Celery worker process on the given settings; stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings) -> subprocess.Popen[bytes]:
        env = {**os.environ, "ASSISTANT_DATA_DIR": str(settings.resolved_data_dir)}
        if settings.model_cache_dir:
            env["ASSISTANT_MODEL_CACHE_DIR"] = str(settings.model_cache_dir)
        if settings.broker_url:
            env["ASSISTANT_BROKER_URL"] = settings.broker_url
        log = tmp_path / f"worker-{len(started)}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--loglevel", "INFO",
            "--concurrency", "1", "--without-gossip", "--without-mingle",
            "--hostname", f"test-{os.getpid()}-{len(started)}@%h",
        ]  # fmt: skip
        with log.open("wb") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        started.append(process)
        _wait_for_line(log, " ready.", process, seconds=120)
        return process

    yield start
    for process in started:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if it has not exited within 30 seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    pytest.fail(f"timed out after {seconds}s waiting for {what}")


POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# `ASSISTANT_TEST_DATABASE=postgresql pytest`: every test runs on a fresh PostgreSQL database
# of its own instead of SQLite files (`make test` runs the suite both ways).
TEST_DATABASE = os.environ.get("ASSISTANT_TEST_DATABASE", "sqlite")


def pytest_configure(config: pytest.Config) -> None:
    if TEST_DATABASE not in ("sqlite", "postgresql"):
        raise pytest.UsageError("ASSISTANT_TEST_DATABASE must be sqlite or postgresql")
    config.addinivalue_line(
        "markers",
        "sqlite(reason): picks its own databases or is about SQLite files; not switched to "
        "PostgreSQL in the PostgreSQL run",
    )


def pytest_report_header() -> str:
    return f"database: {TEST_DATABASE} (ASSISTANT_TEST_DATABASE)"


@pytest.fixture(autouse=True)
def release_chroma() -> Iterator[None]:
    """Chroma keeps every embedded store it opened (its SQLite file, HNSW files, threads) in
    a process-wide cache until its client is closed. Tests build hundreds of stores, so the
    ones a test opened are stopped after it; otherwise the test process runs out of file
    descriptors (past 1024, the parsing sandbox's select() fails)."""
    from chromadb.api.shared_system_client import SharedSystemClient

    before = set(SharedSystemClient._identifier_to_system)
    yield
    for identifier in set(SharedSystemClient._identifier_to_system) - before:
        system = SharedSystemClient._identifier_to_system.pop(identifier)
        SharedSystemClient._identifier_to_refcount.pop(identifier, None)
        with contextlib.suppress(Exception):
            system.stop()


@pytest.fixture(autouse=True)
def database_for_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """In the PostgreSQL run: a new database per test, made from a migrated template, in
    ASSISTANT_DATABASE_URL for every `load_settings` and every process the test starts.
    A test that opens a SQLite database file anyway fails, unless marked `sqlite`."""
    if TEST_DATABASE == "sqlite" or request.node.get_closest_marker("sqlite"):
        yield
        return
    template = request.getfixturevalue("postgres_template")
    url = create_postgres_database(template=template)
    sqlite_files: set[str] = set()

    def note_sqlite(connection: Connection) -> None:
        if connection.dialect.name == "sqlite" and connection.engine.url.database:
            sqlite_files.add(connection.engine.url.database)

    event.listen(Engine, "engine_connect", note_sqlite)
    # Not the test's `monkeypatch`, which a test may undo.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASSISTANT_DATABASE_URL", url)
        try:
            yield
        finally:
            event.remove(Engine, "engine_connect", note_sqlite)
            drop_postgres_database(url)
    if sqlite_files:
        pytest.fail(f"used SQLite {sorted(sqlite_files)} in the PostgreSQL run; mark it sqlite")


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """An empty database brought to the newest revision, copied for each test."""
    url = create_postgres_database()
    engine = make_engine(url)
    upgrade_database(engine)
    engine.dispose()  # CREATE DATABASE ... TEMPLATE needs it without connections
    yield url.rsplit("/", 1)[1]
    drop_postgres_database(url)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway database on the machine's PostgreSQL, dropped after the test."""
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


def create_postgres_database(template: str = "template1") -> str:
    ensure_postgres()
    name = f"assistant_test_{uuid.uuid4().hex[:8]}"
    with _postgres_admin().connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def drop_postgres_database(url: str) -> None:
    """Dropped even while a process is still connected (FORCE ends its connections)."""
    with _postgres_admin().connect() as connection:
        connection.execute(text(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))


@cache
def _postgres_admin() -> Engine:
    return create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")


def ensure_postgres() -> None:
    """The machine's PostgreSQL; started with the documented command if it is down."""
    if _port_open("127.0.0.1", 5432):
        return
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=True
    )
    wait_until(lambda: _port_open("127.0.0.1", 5432), 30, "PostgreSQL to start")
