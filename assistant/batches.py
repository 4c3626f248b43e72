"""Upload batches: many files or a .zip archive in one go, each file stored and queued on
its own, and the batch's progress (counts, done fraction, estimated time left). Files refused
before storage (empty, wrong type, duplicate, a damaged archive entry) are kept with the
batch, with their reasons, so the batch page goes on showing them."""

from __future__ import annotations

import uuid
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import String, Text, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from assistant.db import Base, Document, DocumentStatus, utcnow
from assistant.documents import clean_filename
from assistant.errors import DocumentError, NotFound
from assistant.formats.inspection import open_zip
from assistant.settings import LimitSettings

ARCHIVE = ".zip"
FINISHED = (DocumentStatus.INDEXED, DocumentStatus.FAILED)


def new_batch_id() -> str:
    return uuid.uuid4().hex


class RejectedUpload(Base):
    """A file of a batch refused before it was stored, and why."""

    __tablename__ = "rejected_uploads"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(32), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    collection: Mapped[str] = mapped_column(String(64))
    error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def to_dict(self) -> dict[str, str]:
        return {"filename": self.filename, "error": self.error}


def keep_rejected(sessions: sessionmaker, rejected: Sequence[RejectedUpload]) -> None:
    if rejected:
        with sessions.begin() as session:
            session.add_all(rejected)


def rejected_in(sessions: sessionmaker, batch_id: str) -> list[RejectedUpload]:
    query = select(RejectedUpload).where(RejectedUpload.batch_id == batch_id)
    with sessions() as session:
        return list(session.scalars(query.order_by(RejectedUpload.id)))


@dataclass(frozen=True)
class Upload:
    """One file of a batch: its bytes, or why it was refused before storage."""

    filename: str
    data: bytes | None
    error: str | None = None


def expand(filename: str, data: bytes, limits: LimitSettings) -> Iterator[Upload]:
    """An uploaded file as itself, or a .zip archive as the files inside it. The archive's
    central directory is checked against the limits (size, entries, compression ratio,
    symbolic links) before anything is decompressed; paths inside it are dropped (names
    only, never used as paths)."""
    if not filename.lower().endswith(ARCHIVE):
        yield Upload(filename, data)
        return
    try:
        archive = open_zip(data, limits, "ZIP")
    except DocumentError as exc:
        yield Upload(filename, None, f"{filename}: {exc}")
        return
    with archive:
        for entry in archive.infolist():
            name = clean_filename(entry.filename)
            label = f"{filename}/{entry.filename}"
            if entry.is_dir() or name.startswith(".") or "__MACOSX" in entry.filename:
                continue
            if entry.flag_bits & 0x1:
                yield Upload(label, None, f"{label}: the entry is encrypted")
                continue
            try:
                # At most the size its header declares is read; more (a lie) fails the CRC.
                data = archive.read(entry)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                yield Upload(label, None, f"{label}: the entry is damaged ({exc})")
                continue
            yield Upload(name, data)


@dataclass
class BatchProgress:
    batch_id: str
    documents: list[Document] = field(default_factory=list)
    rejected: list[RejectedUpload] = field(default_factory=list)  # shown to admins only

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(DocumentStatus.ALL, 0)
        for document in self.documents:
            counts[document.status] += 1
        return counts

    @property
    def finished(self) -> int:
        return sum(1 for d in self.documents if d.status in FINISHED)

    @property
    def eta_seconds(self) -> float | None:
        """Time left at the pace so far; None until the first file is done."""
        if not self.documents or not self.finished:
            return None
        started = min(d.created_at for d in self.documents)
        elapsed = (utcnow() - started).total_seconds()
        remaining = len(self.documents) - self.finished
        return round(elapsed / self.finished * remaining, 1)

    def to_dict(self) -> dict[str, Any]:
        total = len(self.documents)
        return {
            "batch_id": self.batch_id,
            "total": total,
            "finished": self.finished,
            "done": round(self.finished / total, 3) if total else 1.0,
            "eta_seconds": self.eta_seconds,
            "counts": self.counts,
            "documents": [d.to_dict() for d in self.documents],
            "rejected": [r.to_dict() for r in self.rejected],
        }


def progress(
    batch_id: str, documents: Sequence[Document], rejected: Sequence[RejectedUpload] = ()
) -> BatchProgress:
    if not documents and not rejected:
        raise NotFound(f"no batch {batch_id}")
    return BatchProgress(batch_id, list(documents), list(rejected))
