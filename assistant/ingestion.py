"""The ingestion pipeline: parse (in a limited child process) → chunk → embed → index, as a
state machine queued → parsing → embedding → indexed (or failed with a reason). Every step
is a compare-and-set on (status, attempt), so a redelivered task, a racing worker or a
worker killed mid-way can never leave a document half-indexed or indexed twice."""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import sessionmaker

from assistant.chunking import chunk_document
from assistant.db import Chunk, Document, DocumentStatus, IngestJob, utcnow
from assistant.embedding import Embedder
from assistant.errors import DocumentError, InvalidInput, NotFound
from assistant.formats.document import ParsedDocument
from assistant.index_check import check_index_settings, index_settings
from assistant.keyword_index import KeywordIndex
from assistant.sandbox import parse_isolated
from assistant.settings import TASK_TIME_LIMIT, Settings
from assistant.vectorstore import ChromaStore

logger = logging.getLogger(__name__)
# Who holds a document while it is processed: "<host>:<pid>" of the worker process.
HOLDER_PREFIX = f"{socket.gethostname()[:40]}:"


def holder_gone(claimed_by: str | None, claimed_at: datetime | None) -> bool:
    """Whether the worker that claimed a document is gone: on this host, its process no
    longer exists; on another host, its claim is older than the task time limit."""
    if not claimed_by or claimed_at is None:
        return True
    if claimed_by.startswith(HOLDER_PREFIX):
        try:
            os.kill(int(claimed_by.removeprefix(HOLDER_PREFIX)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        return False
    return utcnow() - claimed_at > timedelta(seconds=TASK_TIME_LIMIT)


def load(sessions: sessionmaker, document_id: str) -> Document:
    with sessions() as session:
        document = session.get(Document, document_id)
        if document is None:
            raise NotFound(f"no document {document_id}")
        return document


class Ingestion:
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

    def run(self, document_id: str, force: bool = False) -> Document:
        """Parse, chunk, embed and index one document: queued → parsing → embedding →
        indexed, or failed with a reason. Each step is a compare-and-set on (status,
        attempt), so a worker that lost the document to another attempt stops quietly.
        Idempotent: chunk ids are deterministic and every write is an upsert. An indexed
        or failed document is left alone unless `force` (a re-ingest or a retry).
        A DocumentError fails the document; other errors propagate for a retry."""
        claimed = self._claim(document_id, force)
        if claimed is None or claimed.status != DocumentStatus.PARSING:
            return claimed or load(self.sessions, document_id)
        document, attempt, job_id = claimed, claimed.attempts, self._job(claimed)
        try:
            data = (self.settings.originals_dir / document_id).read_bytes()
            check_index_settings(
                self.sessions, index_settings(self.embedder.name, self.settings.chunking)
            )
            parsed = parse_isolated(
                data, document.extension, self.settings.limits, self.settings.scratch_dir
            )
            if not self._step(
                document_id, attempt, DocumentStatus.PARSING, DocumentStatus.EMBEDDING
            ):
                return load(self.sessions, document_id)
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

    def _claim(self, document_id: str, force: bool) -> Document | None:
        # None: not ours to process (another worker holds or moved it).
        """Move the document to parsing and count the attempt, recording who holds it. A
        document found parsing or embedding is taken over only when its holder is gone (a
        worker that died); after `max_attempts` such deaths it is failed instead (a poison
        file must not kill workers forever). A live holder keeps it."""
        with self.sessions() as session:
            document = session.get(Document, document_id)
            if document is None:
                raise NotFound(f"no document {document_id}")
        status, attempts = document.status, document.attempts
        if status in (DocumentStatus.INDEXED, DocumentStatus.FAILED) and not force:
            return document
        if not document.current:
            raise InvalidInput(f"document {document_id} is an older version; it is not indexed")
        died = status in (DocumentStatus.PARSING, DocumentStatus.EMBEDDING)
        if died and not holder_gone(document.claimed_by, document.claimed_at):
            return None  # another worker is processing it right now
        values: dict[str, object] = {
            "status": DocumentStatus.PARSING,
            "error": None,
            "attempts": 1 if force else attempts + 1,
            "claimed_by": HOLDER_PREFIX + str(os.getpid()),
            "claimed_at": utcnow(),
        }
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
        return load(self.sessions, document_id)

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
        return load(self.sessions, document_id)

    def _supersede(self, document_id: str) -> None:
        """A newly indexed version replaces the one it supersedes in the search indexes.
        The old row, its chunks and its original stay for admins and for the audit log."""
        document = load(self.sessions, document_id)
        if document.supersedes is None:
            return
        with self.sessions.begin() as session:
            session.execute(
                update(Document).where(Document.id == document.supersedes).values(current=False)
            )
        self.store.delete_document(document.supersedes)
        self.keywords.delete_document(document.supersedes)
