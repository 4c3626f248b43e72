"""Relational storage: documents, their chunks and ingestion jobs (SQLite or PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column, sessionmaker


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


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

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
    return create_engine(url, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker:
    import assistant.audit
    import assistant.index_check  # noqa: F401
    from assistant import access, accounts  # noqa: F401  (register their tables)

    Base.metadata.create_all(engine)
    return sessionmaker(engine, expire_on_commit=False)
