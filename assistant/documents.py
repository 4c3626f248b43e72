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

from assistant.access import DEFAULT_COLLECTION
from assistant.db import Chunk, Document, DocumentStatus, IngestJob
from assistant.embedding import Embedder
from assistant.errors import DuplicateDocument, FileTooLarge, InvalidInput, NotFound
from assistant.ingestion import Ingestion
from assistant.keyword_index import KeywordIndex
from assistant.parsing import check_extension
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
        self.ingestion = Ingestion(settings, sessions, embedder, store, keywords)

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
        """Parse, chunk, embed and index one document (see assistant/ingestion.py)."""
        return self.ingestion.run(document_id, force)

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

    def filenames(self, document_ids: Sequence[str]) -> dict[str, str]:
        """Document id -> file name, for the ids that still exist (e.g. in audit records)."""
        if not document_ids:
            return {}
        query = select(Document.id, Document.filename).where(Document.id.in_(set(document_ids)))
        with self.sessions() as session:
            return {row.id: row.filename for row in session.execute(query)}

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
