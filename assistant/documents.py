"""Documents and their lifecycle: upload, ingest (parse → chunk → embed → index), list, delete."""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import sessionmaker

from assistant.access import DEFAULT_COLLECTION
from assistant.chunking import chunk_document
from assistant.db import Chunk, Document, DocumentStatus, IngestJob, utcnow
from assistant.embedding import Embedder
from assistant.errors import DocumentError, DuplicateDocument, FileTooLarge, InvalidInput, NotFound
from assistant.formats.document import ParsedDocument
from assistant.index_check import check_index_settings
from assistant.keyword_index import KeywordIndex
from assistant.parsing import check_extension
from assistant.sandbox import parse_isolated
from assistant.settings import Settings
from assistant.vectorstore import ChromaStore

logger = logging.getLogger(__name__)
Scope = Sequence[str] | None  # the collections a reader may see; None: all of them


def clean_filename(filename: str) -> str:
    """A display name only: never used as a path."""
    name = unicodedata.normalize("NFC", filename).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:255] or "unnamed"


def pending_ids(sessions: sessionmaker) -> list[str]:
    """Documents left queued, parsing or embedding (for example by a crash): to enqueue
    again."""
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
    def add(
        self,
        filename: str,
        data: bytes,
        collection: str = DEFAULT_COLLECTION,
        batch_id: str | None = None,
    ) -> Document:
        """Validate and store an upload under an internal id; the document starts queued.
        The same bytes already current in the collection are a duplicate (refused); the same
        name is a new version that supersedes the old one once it is indexed.
        The caller checks that `collection` exists and that the uploader may write to it."""
        name = clean_filename(filename)
        extension = check_extension(name)
        if not data:
            raise InvalidInput(f"{name}: the file is empty")
        limit = self.settings.limits.max_upload_bytes
        if len(data) > limit:
            raise FileTooLarge(f"{name}: the file is {len(data)} bytes; the limit is {limit}")
        sha256 = hashlib.sha256(data).hexdigest()
        with self.sessions() as session:
            current = select(Document).where(
                Document.collection == collection, Document.current.is_(True)
            )
            same = session.scalars(current.where(Document.sha256 == sha256)).first()
            if same is not None:
                raise DuplicateDocument(
                    f"{name}: duplicate of {same.filename} (version {same.version}, "
                    f"id {same.id}); it is not indexed twice"
                )
            previous = session.scalars(current.where(Document.filename == name)).first()
        document = Document(
            id=uuid.uuid4().hex,
            filename=name,
            extension=extension,
            sha256=sha256,
            size_bytes=len(data),
            collection=collection,
            status=DocumentStatus.QUEUED,
            version=previous.version + 1 if previous else 1,
            supersedes=previous.id if previous else None,
            batch_id=batch_id,
        )
        path = self.original_path(document.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".part")
        temporary.write_bytes(data)
        temporary.replace(path)
        with self.sessions.begin() as session:
            session.add(document)
        logger.info("stored upload %s as %s (version %s)", name, document.id, document.version)
        return document

    def original_path(self, document_id: str) -> Path:
        return self.settings.originals_dir / document_id

    # -- ingestion ----------------------------------------------------------------------
    def ingest(self, document_id: str, force: bool = False) -> Document:
        """Parse, chunk, embed and index one document: queued → parsing → embedding →
        indexed, or failed with a reason. Each step is a compare-and-set on (status,
        attempt), so a worker that lost the document to another attempt stops quietly.
        Idempotent: chunk ids are deterministic and every write is an upsert. An indexed
        or failed document is left alone unless `force` (a re-ingest or a retry).
        A DocumentError fails the document; other errors propagate for a retry."""
        claimed = self._claim(document_id, force)
        if claimed is None or claimed.status != DocumentStatus.PARSING:
            return claimed or self.get(document_id)
        document, attempt, job_id = claimed, claimed.attempts, self._job(claimed)
        try:
            data = self.original_path(document_id).read_bytes()
            check_index_settings(self.sessions, self.index_settings())
            parsed = parse_isolated(
                data, document.extension, self.settings.limits, self.settings.scratch_dir
            )
            if not self._step(
                document_id, attempt, DocumentStatus.PARSING, DocumentStatus.EMBEDDING
            ):
                return self.get(document_id)
            chunks = self._chunks(document, parsed)
            self._index(document, chunks)
        except FileNotFoundError:
            return self._finish(document_id, attempt, job_id, "the stored original is missing")
        except DocumentError as exc:
            return self._finish(document_id, attempt, job_id, str(exc))
        with self.sessions.begin() as session:
            session.execute(delete(Chunk).where(Chunk.document_id == document_id))
            session.add_all(chunks)
            session.execute(
                update(Document)
                .where(Document.id == document_id)
                .values(
                    text=parsed.text,
                    page_count=parsed.page_count,
                    chunk_count=len(chunks),
                    report=json.dumps(parsed.report),
                )
            )
        return self._finish(document_id, attempt, job_id, None)

    def index_settings(self) -> dict[str, object]:
        """What the indexes are built with; an index never mixes two of these."""
        chunking = self.settings.chunking
        return {
            "embedder": self.embedder.name,
            "chunk_size": chunking.size,
            "overlap": chunking.overlap,
        }

    def _claim(self, document_id: str, force: bool) -> Document | None:
        """Move the document to parsing and count the attempt. A document found parsing or
        embedding was left there by a worker that died; after `max_attempts` such deaths
        it is failed instead (a poison file must not kill workers forever)."""
        with self.sessions() as session:
            document = session.get(Document, document_id)
            if document is None:
                raise NotFound(f"no document {document_id}")
        status, attempts = document.status, document.attempts
        if status in (DocumentStatus.INDEXED, DocumentStatus.FAILED) and not force:
            return document
        if not document.current:
            raise InvalidInput(f"document {document_id} is an older version; it is not indexed")
        values: dict[str, object] = {"status": DocumentStatus.PARSING, "error": None}
        values["attempts"] = 1 if force else attempts + 1
        died = status in (DocumentStatus.PARSING, DocumentStatus.EMBEDDING)
        if died and attempts >= self.settings.limits.max_attempts:
            values = {
                "status": DocumentStatus.FAILED,
                "error": f"the worker stopped while processing this file {attempts} times; "
                "it may be damaged or too large",
            }
        with self.sessions.begin() as session:
            moved = session.execute(
                update(Document)
                .where(
                    Document.id == document_id,
                    Document.status == status,
                    Document.attempts == attempts,
                )
                .values(**values)
            ).rowcount
        if moved != 1:
            return None  # another worker moved it first
        return self.get(document_id)

    def _job(self, document: Document) -> int:
        with self.sessions.begin() as session:
            job = IngestJob(
                document_id=document.id, attempt=document.attempts, status=document.status
            )
            session.add(job)
            session.flush()
            return job.id

    def _step(self, document_id: str, attempt: int, before: str, after: str) -> bool:
        with self.sessions.begin() as session:
            return (
                session.execute(
                    update(Document)
                    .where(
                        Document.id == document_id,
                        Document.status == before,
                        Document.attempts == attempt,
                    )
                    .values(status=after)
                ).rowcount
                == 1
            )

    def _chunks(self, document: Document, parsed: ParsedDocument) -> list[Chunk]:
        pieces = chunk_document(parsed, self.settings.chunking.size, self.settings.chunking.overlap)
        return [
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

    def _index(self, document: Document, chunks: list[Chunk]) -> None:
        """Write both indexes, and clean them of older chunks of this document, together."""
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
        self.store.upsert(ids, vectors, metadatas)
        self.store.delete_document(document.id, keep=ids)
        self.keywords.upsert((c.id, c.document_id, document.collection, c.text) for c in chunks)
        self.keywords.delete_document(document.id, keep=ids)

    def _finish(self, document_id: str, attempt: int, job_id: int, error: str | None) -> Document:
        status = DocumentStatus.FAILED if error else DocumentStatus.INDEXED
        with self.sessions.begin() as session:
            moved = session.execute(
                update(Document)
                .where(
                    Document.id == document_id,
                    Document.status.in_((DocumentStatus.PARSING, DocumentStatus.EMBEDDING)),
                    Document.attempts == attempt,
                )
                .values(status=status, error=error)
            ).rowcount
            job = session.get(IngestJob, job_id)
            if job is not None:
                job.status, job.error, job.finished_at = status, error, utcnow()
        if moved == 1 and not error:
            self._supersede(document_id)
        if error:
            logger.warning("document %s failed: %s", document_id, error)
        else:
            logger.info("document %s indexed", document_id)
        return self.get(document_id)

    def _supersede(self, document_id: str) -> None:
        """A newly indexed version replaces the one it supersedes in the search indexes.
        The old row, its chunks and its original stay for admins and for the audit log."""
        document = self.get(document_id)
        if document.supersedes is None:
            return
        with self.sessions.begin() as session:
            session.execute(
                update(Document).where(Document.id == document.supersedes).values(current=False)
            )
        self.store.delete_document(document.supersedes)
        self.keywords.delete_document(document.supersedes)

    def requeue_all(self) -> list[str]:
        """Mark every current document queued again (after the indexes were cleared)."""
        with self.sessions.begin() as session:
            ids = list(session.scalars(select(Document.id).where(Document.current.is_(True))))
            session.execute(
                update(Document)
                .where(Document.id.in_(ids))
                .values(status=DocumentStatus.QUEUED, attempts=0, error=None)
            )
        return ids

    def requeue(self, document_id: str) -> Document:
        """Queue a failed document again (a retry) or an indexed one (a re-ingest); the
        attempt count starts again. The caller sends it to the workers."""
        with self.sessions.begin() as session:
            moved = session.execute(
                update(Document)
                .where(
                    Document.id == document_id,
                    Document.current.is_(True),
                    Document.status.in_((DocumentStatus.FAILED, DocumentStatus.INDEXED)),
                )
                .values(status=DocumentStatus.QUEUED, attempts=0, error=None)
            ).rowcount
        if moved != 1:
            raise InvalidInput(
                f"document {document_id} is still being processed or is an older version"
            )
        return self.get(document_id)

    def batch(self, batch_id: str, scope: Scope = None) -> list[Document]:
        """The files of one upload batch that the reader may see, in upload order."""
        query = select(Document).where(Document.batch_id == batch_id)
        if scope is not None:
            query = query.where(Document.collection.in_(list(scope)))
        with self.sessions() as session:
            return list(session.scalars(query.order_by(Document.created_at)))

    def mark_failed(self, document_id: str, reason: str) -> None:
        """Used by the worker when retries are exhausted on an unexpected error."""
        with self.sessions.begin() as session:
            session.execute(
                update(Document)
                .where(Document.id == document_id, Document.status != DocumentStatus.INDEXED)
                .values(status=DocumentStatus.FAILED, error=reason)
            )

    # -- reading ------------------------------------------------------------------------
    # `scope` limits every read to the collections a reader may see. A document outside it
    # gets the same NotFound as an unknown id, so ids never reveal what exists.
    @staticmethod
    def _visible(document: Document | None, scope: Scope) -> bool:
        return document is not None and (scope is None or document.collection in scope)

    def list(self, scope: Scope = None, versions: bool = False) -> list[Document]:
        """Current versions (newest first); all versions when `versions`."""
        query = select(Document).order_by(Document.created_at.desc())
        if not versions:
            query = query.where(Document.current.is_(True))
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
        counts = dict.fromkeys(DocumentStatus.ALL, 0)
        query = (
            select(Document.status, func.count())
            .where(Document.current.is_(True))
            .group_by(Document.status)
        )
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
