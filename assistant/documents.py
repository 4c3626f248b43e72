"""Documents and their lifecycle: upload, ingest (parse → chunk → embed → index), list, delete."""

from __future__ import annotations

import hashlib
import logging
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import sessionmaker

from assistant.chunking import chunk_document
from assistant.db import Chunk, Document, DocumentStatus, IngestJob, utcnow
from assistant.embedding import Embedder
from assistant.errors import DocumentError, FileTooLarge, InvalidInput, NotFound
from assistant.keyword_index import KeywordIndex
from assistant.parsing import check_extension, parse
from assistant.settings import Settings
from assistant.vectorstore import ChromaStore

logger = logging.getLogger(__name__)
DEFAULT_COLLECTION = "default"
Scope = Sequence[str] | None  # the collections a reader may see; None: all of them


def clean_filename(filename: str) -> str:
    """A display name only: never used as a path."""
    name = unicodedata.normalize("NFC", filename).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:255] or "unnamed"


def pending_ids(sessions: sessionmaker) -> list[str]:
    """Documents left queued or processing (for example by a crash): to enqueue again."""
    with sessions() as session:
        rows = session.scalars(
            select(Document.id)
            .where(Document.status.in_(DocumentStatus.PENDING))
            .order_by(Document.created_at)
        )
        return list(rows)


class DocumentService:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker,
        embedder: Embedder,
        store: ChromaStore,
        keywords: KeywordIndex,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.embedder = embedder
        self.store = store
        self.keywords = keywords

    # -- upload -------------------------------------------------------------------------
    def add(self, filename: str, data: bytes, collection: str = DEFAULT_COLLECTION) -> Document:
        """Validate and store an upload under an internal id; the document starts queued.
        The caller checks that `collection` exists and that the uploader may write to it."""
        name = clean_filename(filename)
        extension = check_extension(name)
        if not data:
            raise InvalidInput(f"{name}: the file is empty")
        limit = self.settings.limits.max_upload_bytes
        if len(data) > limit:
            raise FileTooLarge(f"{name}: the file is {len(data)} bytes; the limit is {limit}")
        document = Document(
            id=uuid.uuid4().hex,
            filename=name,
            extension=extension,
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            collection=collection,
            status=DocumentStatus.QUEUED,
        )
        path = self.original_path(document.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".part")
        temporary.write_bytes(data)
        temporary.replace(path)
        with self.sessions.begin() as session:
            session.add(document)
        logger.info("stored upload %s as %s", name, document.id)
        return document

    def add_path(self, path: Path) -> Document:
        return self.add(path.name, path.read_bytes())

    def original_path(self, document_id: str) -> Path:
        return self.settings.originals_dir / document_id

    # -- ingestion ----------------------------------------------------------------------
    def ingest(self, document_id: str, force: bool = False) -> Document:
        """Parse, chunk, embed and index one document. Idempotent: chunk ids are
        deterministic and writes are upserts, so a second run leaves the same state.
        An indexed document is left alone unless `force` (a re-ingest).
        A DocumentError marks the document failed; other errors propagate for a retry."""
        current = self.get(document_id)
        if current.status == DocumentStatus.INDEXED and not force:
            return current
        document, job_id = self._start(document_id)
        try:
            data = self.original_path(document_id).read_bytes()
            parsed = parse(
                data, document.extension, max_pdf_pages=self.settings.limits.max_pdf_pages
            )
            pieces = chunk_document(
                parsed, self.settings.chunking.size, self.settings.chunking.overlap
            )
            chunks = [
                Chunk(
                    id=f"{document.id}:{document.version}:{piece.index}",
                    document_id=document.id,
                    version=document.version,
                    index=piece.index,
                    text=piece.text,
                    page=piece.page,
                    char_start=piece.start,
                    char_end=piece.end,
                )
                for piece in pieces
            ]
            vectors = self.embedder.embed([c.text for c in chunks])
            ids = [c.id for c in chunks]
            metadatas = [
                {
                    "document_id": c.document_id,
                    "collection": document.collection,
                    "version": c.version,
                    "page": c.page or 0,
                }
                for c in chunks
            ]
            # Both indexes are written, and cleaned of older chunks, together.
            self.store.upsert(ids, vectors, metadatas)
            self.store.delete_document(document.id, keep=ids)
            self.keywords.upsert((c.id, c.document_id, document.collection, c.text) for c in chunks)
            self.keywords.delete_document(document.id, keep=ids)
        except FileNotFoundError:
            return self._finish(document_id, job_id, error="the stored original is missing")
        except DocumentError as exc:
            return self._finish(document_id, job_id, error=str(exc))
        with self.sessions.begin() as session:
            session.execute(delete(Chunk).where(Chunk.document_id == document_id))
            session.add_all(chunks)
            session.execute(
                update(Document)
                .where(Document.id == document_id)
                .values(text=parsed.text, page_count=parsed.page_count, chunk_count=len(chunks))
            )
        return self._finish(document_id, job_id, error=None)

    def _start(self, document_id: str) -> tuple[Document, int]:
        with self.sessions.begin() as session:
            document = session.get(Document, document_id)
            if document is None:
                raise NotFound(f"no document {document_id}")
            document.status = DocumentStatus.PROCESSING
            document.attempts += 1
            document.error = None
            job = IngestJob(
                document_id=document_id, attempt=document.attempts, status=DocumentStatus.PROCESSING
            )
            session.add(job)
            session.flush()
            return document, job.id

    def _finish(self, document_id: str, job_id: int, error: str | None) -> Document:
        status = DocumentStatus.FAILED if error else DocumentStatus.INDEXED
        with self.sessions.begin() as session:
            document = session.get(Document, document_id)
            if document is None:
                raise NotFound(f"no document {document_id}")
            document.status = status
            document.error = error
            job = session.get(IngestJob, job_id)
            if job is not None:
                job.status, job.error, job.finished_at = status, error, utcnow()
        if error:
            logger.warning("document %s failed: %s", document_id, error)
        else:
            logger.info("document %s indexed", document_id)
        return document

    def mark_failed(self, document_id: str, reason: str) -> None:
        """Used by the worker when retries are exhausted on an unexpected error."""
        with self.sessions.begin() as session:
            session.execute(
                update(Document)
                .where(Document.id == document_id)
                .values(status=DocumentStatus.FAILED, error=reason)
            )

    # -- reading ------------------------------------------------------------------------
    # `scope` limits every read to the collections a reader may see. A document outside it
    # gets the same NotFound as an unknown id, so ids never reveal what exists.
    @staticmethod
    def _visible(document: Document | None, scope: Scope) -> bool:
        return document is not None and (scope is None or document.collection in scope)

    def list(self, scope: Scope = None) -> list[Document]:
        query = select(Document).order_by(Document.created_at.desc())
        if scope is not None:
            query = query.where(Document.collection.in_(list(scope)))
        with self.sessions() as session:
            return list(session.scalars(query))

    def get(self, document_id: str, scope: Scope = None) -> Document:
        with self.sessions() as session:
            document = session.get(Document, document_id)
            if document is None or not self._visible(document, scope):
                raise NotFound(f"no document {document_id}")
            return document

    def text(self, document_id: str, scope: Scope = None) -> str:
        with self.sessions() as session:
            document = session.get(Document, document_id)
            text = document.text if self._visible(document, scope) else None  # type: ignore[union-attr]
            if text is None:
                raise NotFound(f"no indexed text for document {document_id}")
            return text

    def chunk(self, chunk_id: str, scope: Scope = None) -> Chunk:
        with self.sessions() as session:
            chunk = session.get(Chunk, chunk_id)
            if chunk is None or not self._visible(session.get(Document, chunk.document_id), scope):
                raise NotFound(f"no passage {chunk_id}")
            return chunk

    def chunks(self, document_id: str) -> list[Chunk]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Chunk).where(Chunk.document_id == document_id).order_by(Chunk.index)
                )
            )

    def counts(self, scope: Scope = None) -> dict[str, int]:
        counts = dict.fromkeys(("queued", "processing", "indexed", "failed"), 0)
        query = select(Document.status, func.count()).group_by(Document.status)
        if scope is not None:
            query = query.where(Document.collection.in_(list(scope)))
        with self.sessions() as session:
            rows = session.execute(query).all()
        counts.update({status: number for status, number in rows})
        return counts

    def delete(self, document_id: str) -> None:
        self.get(document_id)
        self.store.delete_document(document_id)
        self.keywords.delete_document(document_id)
        with self.sessions.begin() as session:
            session.execute(delete(Chunk).where(Chunk.document_id == document_id))
            session.execute(delete(IngestJob).where(IngestJob.document_id == document_id))
            session.execute(delete(Document).where(Document.id == document_id))
        self.original_path(document_id).unlink(missing_ok=True)

    def ingest_all(self, document_ids: Iterable[str]) -> list[Document]:
        return [self.ingest(document_id) for document_id in document_ids]
