"""Relational storage: documents, their chunks and ingestion jobs (SQLite or PostgreSQL), and
bringing any database to the newest schema with the Alembic migrations."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Boolean,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column, sessionmaker

from assistant.errors import ConfigurationError

logger = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class DocumentStatus:
    """queued → parsing → embedding → indexed, or failed with a reason. Every transition is a
    compare-and-set on the current status (see DocumentService), so two workers racing on
    one document cannot both move it."""

    QUEUED = "queued"
    PARSING = "parsing"
    EMBEDDING = "embedding"
    INDEXED = "indexed"
    FAILED = "failed"
    PENDING = (QUEUED, PARSING, EMBEDDING)
    ALL = (QUEUED, PARSING, EMBEDDING, INDEXED, FAILED)


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    extension: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    # Access is granted per collection; the filter applies inside both searches.
    collection: Mapped[str] = mapped_column(String(64), default="default", index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    # Same name in the same collection: a new version. Only the current version of a file
    # is in the search indexes; older ones stay listed and downloadable for admins.
    version: Mapped[int] = mapped_column(Integer, default=1)
    current: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    supersedes: Mapped[str | None] = mapped_column(String(32), default=None)
    batch_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    # The worker process ("<host>:<pid>") processing it, and since when.
    claimed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    # Per-file parse report: pages, characters, pages OCR'd, tables, warnings (JSON).
    report: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(16), default=DocumentStatus.QUEUED, index=True)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    page_count: Mapped[int | None] = mapped_column(Integer, default=None)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # The extracted text that chunk offsets point into; loaded only when asked for.
    text: Mapped[str | None] = deferred(mapped_column(Text, default=None))

    def described(self) -> dict[str, object]:
        """What the audit log keeps about a document action: the exact version."""
        return {
            "document_id": self.id,
            "filename": self.filename,
            "collection": self.collection,
            "sha256": self.sha256,
            "version": self.version,
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "filename": self.filename,
            "collection": self.collection,
            "status": self.status,
            "error": self.error,
            "version": self.version,
            "current": self.current,
            "batch_id": self.batch_id,
            "report": json.loads(self.report) if self.report else None,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "pages": self.page_count,
            "chunks": self.chunk_count,
            "attempts": self.attempts,
            "created_at": self.created_at.isoformat() + "Z",
            "updated_at": self.updated_at.isoformat() + "Z",
        }


class Chunk(Base):
    __tablename__ = "chunks"

    # Deterministic: "<document id>:<version>:<index>", so re-ingesting upserts.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    document_id: Mapped[str] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    page: Mapped[int | None] = mapped_column(Integer, default=None)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    # Its document's title and the section heading above it, indexed with the text so a
    # passage deep in a document still matches questions that name the document.
    context: Mapped[str | None] = mapped_column(Text, default=None)

    @property
    def index_text(self) -> str:
        """What both search indexes hold for this chunk."""
        return f"{self.context}\n{self.text}" if self.context else self.text


class IngestJob(Base):
    """One attempt at ingesting a document, kept for the admin's history."""

    __tablename__ = "ingest_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[str] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


# How long a statement waits for a lock unless told otherwise (the web is told less: the
# settings' database_busy_seconds).
DEFAULT_BUSY_SECONDS = 30.0
# A migration waits this long for another process's migration, whatever the busy timeout.
MIGRATION_WAIT_MS = 600_000


def make_engine(url: str, busy_seconds: float = DEFAULT_BUSY_SECONDS) -> Engine:
    """`busy_seconds`: how long a statement waits for a lock before it fails
    (OperationalError): SQLite's busy timeout, PostgreSQL's lock_timeout."""
    try:
        return _create_engine(url, busy_seconds)
    except (ArgumentError, ImportError) as exc:
        raise ConfigurationError(f"invalid database URL {url!r}: {exc}") from exc


def _create_engine(url: str, busy_seconds: float) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": busy_seconds, "check_same_thread": False}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            # WAL lets the web process read while the worker writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed audit record or state change survives a power cut too.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    lock_timeout = f"-c lock_timeout={int(busy_seconds * 1000)}"
    return create_engine(url, pool_pre_ping=True, connect_args={"options": lock_timeout})


def make_session_factory(engine: Engine) -> sessionmaker:
    """Sessions on a database brought to the newest schema first."""
    upgrade_database(engine)
    return sessionmaker(engine, expire_on_commit=False)


def model_metadata() -> MetaData:
    """Every table of the models: each module registers its tables on `Base` when imported."""
    from assistant import (  # noqa: F401
        access,
        accounts,
        audit,
        audit_checkpoints,
        batches,
        conversations,
        index_check,
        login_throttle,
        sessions,
    )

    return Base.metadata


# -- migrations (Alembic; the scripts are in assistant/migrations/) -----------------------
BASELINE_REVISION = "0001"  # the schema that create_all made before there were migrations
# Any fixed number: the PostgreSQL advisory lock that lets one process migrate at a time.
MIGRATION_LOCK_KEY = 0x61737369  # "assi"


def migration_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built here instead of read from an alembic.ini."""
    config = Config()
    config.set_main_option("script_location", "assistant:migrations")
    config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(migration_config()).get_current_head()
    assert head is not None, "assistant/migrations/versions/ holds no revision"
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at; None if it has never been migrated."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade_database(engine: Engine) -> str:
    """Bring the database to the newest revision and return it. Runs in every process start:
    an up-to-date database costs one quick read; otherwise one process at a time migrates
    while the others wait for it, then find nothing left to do."""
    head = head_revision()
    with _connected(engine) as connection:
        if current_revision(connection) == head:
            return head
    with _migration_lock(engine) as connection:
        revision = current_revision(connection)
        if revision is None and _stamp_if_premigration(connection):
            revision = BASELINE_REVISION
        if revision != head:
            logger.info("migrating the database from %s to %s", revision, head)
            command.upgrade(migration_config(connection), "head")
    return head


def schema_differences(engine: Engine) -> list[Any]:
    """What differs between the models and the migrations: Alembic's comparison of the models
    with the database, which must be at the newest revision. Empty when they agree."""
    with _connected(engine) as connection:
        revision, head = current_revision(connection), head_revision()
        if revision != head:
            raise ConfigurationError(
                f"the database is at revision {revision}, not {head}: run `assistant migrate`"
            )
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, model_metadata())


@contextmanager
def _connected(engine: Engine) -> Iterator[Connection]:
    """A connection; a database that cannot be reached is a configuration error."""
    try:
        connection = engine.connect()
    except OperationalError as exc:
        url = engine.url.render_as_string(hide_password=True)
        raise ConfigurationError(f"cannot open the database {url}: {exc.orig}") from exc
    with connection:
        yield connection


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that only one process at a time can hold, committed on
    exit: PostgreSQL's transactional DDL and SQLite's write lock make a migration all or
    nothing."""
    with engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.exec_driver_sql(f"SET LOCAL lock_timeout = {MIGRATION_WAIT_MS}")
                    connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
                yield connection
            return
        # Off for the copy-and-swap of batch ALTERs, which must not cascade deletes; the
        # pragma cannot change inside a transaction, so before BEGIN, and on again after.
        busy = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.exec_driver_sql(f"PRAGMA busy_timeout={MIGRATION_WAIT_MS}")
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # waits for another migration
            yield connection
            connection.commit()
        finally:
            connection.rollback()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.exec_driver_sql(f"PRAGMA busy_timeout={int(busy or 0)}")


def _stamp_if_premigration(connection: Connection) -> bool:
    """A database made by create_all before there were migrations: stamp it with the baseline
    revision if it has the baseline's tables with the same columns, refuse it if they differ.
    False when it holds none of our tables (a new database)."""
    found = _table_columns(connection)
    baseline = _baseline_table_columns()
    ours = {name: columns for name, columns in found.items() if name in baseline}
    if not ours:
        return False
    if ours != baseline:
        differing = sorted(
            set(ours) ^ set(baseline) | {n for n in ours if ours[n] != baseline.get(n)}
        )
        raise ConfigurationError(
            "the database has tables from before migrations that differ from the first "
            f"revision ({', '.join(differing)}); upgrade it by hand or start from a new database"
        )
    logger.info("stamping a database made before migrations with revision %s", BASELINE_REVISION)
    command.stamp(migration_config(connection), BASELINE_REVISION)
    return True


def _table_columns(connection: Connection) -> dict[str, frozenset[str]]:
    inspector = inspect(connection)
    return {
        table: frozenset(column["name"] for column in inspector.get_columns(table))
        for table in inspector.get_table_names()
        if table != "alembic_version"
    }


@cache
def _baseline_table_columns() -> dict[str, frozenset[str]]:
    """The tables and columns of the baseline revision, from running it on an in-memory
    SQLite database."""
    engine = create_engine("sqlite://")
    with engine.begin() as connection:
        command.upgrade(migration_config(connection), BASELINE_REVISION)
        return _table_columns(connection)
