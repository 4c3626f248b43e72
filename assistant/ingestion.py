"""The ingestion pipeline: parse (in a limited child process) → chunk → embed → index, as a
state machine queued → parsing → embedding → indexed (or failed with a reason). Every step
is a compare-and-set on (status, attempt), so a redelivered task, a racing worker or a
worker killed mid-way can never leave a document half-indexed or indexed twice."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import sessionmaker

from assistant.chunking import chunk_contexts, chunk_document
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


@dataclass(frozen=True)
class Claim:
    """A document this worker moved to parsing, with its attempt number and job record."""

    document: Document
    attempt: int
    job_id: int


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
        indexed, or failed with a reason. A first attempt at a queued document also takes
        other queued documents (up to `ingest_group_documents` and `ingest_group_bytes`)
        and indexes them together: one embedding call, one index write and one commit per
        step for the group. Only the document the task is for counts an attempt: a worker
        that dies with a group must not use up the attempts of the others, and a re-ingest
        or a document whose worker died goes alone, so a poison file is soon isolated and
        failed after `max_attempts` deaths of its own. Each step is a compare-and-set on
        (status, attempt), so a worker that lost a document to another attempt leaves it
        alone. Idempotent: chunk ids are deterministic and every write is an upsert. A
        DocumentError fails its document; other errors put the group back in the queue and
        propagate for a retry."""
        lead, from_queue = self._claim(document_id, force)
        if lead is None or lead.status != DocumentStatus.PARSING:
            return lead or load(self.sessions, document_id)
        group = [lead]
        if from_queue:
            group += self._claim_queued(lead)
        claims = self._jobs(group)
        try:
            self._process(claims)
        except Exception:
            self._release(claims, lead.id)
            raise
        return load(self.sessions, document_id)

    def _process(self, claims: list[Claim]) -> None:
        try:
            check_index_settings(
                self.sessions, index_settings(self.embedder.name, self.settings.chunking)
            )
        except DocumentError as exc:
            self._finish([(claim, str(exc)) for claim in claims])
            return
        parsed: list[tuple[Claim, ParsedDocument]] = []
        failed: list[tuple[Claim, str]] = []
        for claim in claims:
            try:
                data = (self.settings.originals_dir / claim.document.id).read_bytes()
                limits, scratch = self.settings.limits, self.settings.scratch_dir
                document = parse_isolated(data, claim.document.extension, limits, scratch)
                parsed.append((claim, document))
            except FileNotFoundError:
                failed.append((claim, "the stored original is missing"))
            except DocumentError as exc:
                failed.append((claim, str(exc)))
        self._finish(failed)
        ready = self._start_embedding(parsed)
        pieces: list[tuple[Claim, ParsedDocument, list[Chunk]]] = []
        for claim, document in ready:
            try:
                pieces.append((claim, document, self._chunks(claim.document, document)))
            except DocumentError as exc:
                self._finish([(claim, str(exc))])
        self._index(pieces)
        self._finish([(claim, None) for claim, _, _ in pieces], pieces)

    def _claim(self, document_id: str, force: bool) -> tuple[Document | None, bool]:
        """Move the document to parsing and count the attempt, recording who holds it;
        returns the document (None: not ours, another worker holds or moved it) and whether
        it came straight from the queue (not a re-ingest, not taken over). A
        document found parsing or embedding is taken over only when its holder is gone (a
        worker that died); after `max_attempts` such deaths it is failed instead (a poison
        file must not kill workers forever). A live holder keeps it."""
        with self.sessions() as session:
            document = session.get(Document, document_id)
            if document is None:
                raise NotFound(f"no document {document_id}")
        status, attempts = document.status, document.attempts
        if status in (DocumentStatus.INDEXED, DocumentStatus.FAILED) and not force:
            return document, False
        if not document.current:
            raise InvalidInput(f"document {document_id} is an older version; it is not indexed")
        died = status in (DocumentStatus.PARSING, DocumentStatus.EMBEDDING)
        if died and not holder_gone(document.claimed_by, document.claimed_at):
            return None, False  # another worker is processing it right now
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
            return None, False  # another worker moved it first
        return load(self.sessions, document_id), status == DocumentStatus.QUEUED and not force

    def _claim_queued(self, lead: Document) -> list[Document]:
        """Move more queued documents (oldest first, within the group's size limits) to
        parsing for this worker. Each move is a compare-and-set on the queued status."""
        room = self.settings.ingest_group_bytes - lead.size_bytes
        with self.sessions() as session:
            candidates = session.execute(
                select(Document.id, Document.size_bytes)
                .where(
                    Document.status == DocumentStatus.QUEUED,
                    Document.current.is_(True),
                    Document.id != lead.id,
                )
                .order_by(Document.created_at)
                .limit(self.settings.ingest_group_documents - 1)
            ).all()
        picked: list[str] = []
        for document_id, size in candidates:
            if size > room:
                break
            picked.append(document_id)
            room -= size
        if not picked:
            return []
        with self.sessions.begin() as session:
            moved = [
                document_id
                for document_id in picked
                if session.execute(
                    update(Document)
                    .where(Document.id == document_id, Document.status == DocumentStatus.QUEUED)
                    .values(
                        status=DocumentStatus.PARSING,
                        error=None,
                        claimed_by=lead.claimed_by,
                        claimed_at=utcnow(),
                    )
                ).rowcount
                == 1
            ]
            return list(session.scalars(select(Document).where(Document.id.in_(moved))))

    def _jobs(self, documents: list[Document]) -> list[Claim]:
        """One ingest job record per document and attempt, written in one commit."""
        with self.sessions.begin() as session:
            jobs = [
                IngestJob(document_id=d.id, attempt=d.attempts, status=d.status) for d in documents
            ]
            session.add_all(jobs)
            session.flush()
            return [Claim(d, d.attempts, job.id) for d, job in zip(documents, jobs, strict=True)]

    def _start_embedding(
        self, parsed: list[tuple[Claim, ParsedDocument]]
    ) -> list[tuple[Claim, ParsedDocument]]:
        """Move the parsed documents to embedding; those another worker took are dropped."""
        with self.sessions.begin() as session:
            return [
                (claim, document)
                for claim, document in parsed
                if session.execute(
                    update(Document)
                    .where(
                        Document.id == claim.document.id,
                        Document.status == DocumentStatus.PARSING,
                        Document.attempts == claim.attempt,
                    )
                    .values(status=DocumentStatus.EMBEDDING)
                ).rowcount
                == 1
            ]

    def _chunks(self, document: Document, parsed: ParsedDocument) -> list[Chunk]:
        pieces = chunk_document(parsed, self.settings.chunking.size, self.settings.chunking.overlap)
        starts = [p.start for p in pieces]
        contexts: list[str | None] = (
            list(chunk_contexts(document.filename, parsed.text, starts))
            if self.settings.chunking.headers
            else [None] * len(pieces)
        )
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
                context=context,
            )
            for piece, context in zip(pieces, contexts, strict=True)
        ]

    def _index(self, pieces: list[tuple[Claim, ParsedDocument, list[Chunk]]]) -> None:
        """Write both indexes for the group, and clean them of older chunks of its
        documents, together. One embedding call for all the group's chunks."""
        chunks = [chunk for _, _, document_chunks in pieces for chunk in document_chunks]
        collections = {claim.document.id: claim.document.collection for claim, _, _ in pieces}
        vectors = self.embedder.embed([c.index_text for c in chunks]) if chunks else []
        metadatas = [
            {
                "document_id": c.document_id,
                "collection": collections[c.document_id],
                "version": c.version,
                "page": c.page or 0,
            }
            for c in chunks
        ]
        self.store.upsert([c.id for c in chunks], vectors, metadatas)
        self.keywords.upsert(
            (c.id, c.document_id, collections[c.document_id], c.index_text) for c in chunks
        )
        for claim, _, document_chunks in pieces:
            keep = [c.id for c in document_chunks]
            self.store.delete_document(claim.document.id, keep=keep)
            self.keywords.delete_document(claim.document.id, keep=keep)

    def _finish(
        self,
        outcomes: Sequence[tuple[Claim, str | None]],
        pieces: Sequence[tuple[Claim, ParsedDocument, list[Chunk]]] = (),
    ) -> None:
        """Record each document's end (indexed, or failed with the reason), and the chunks
        and parse report of the indexed ones, in one commit."""
        if not outcomes:
            return
        content = {claim.document.id: (parsed, chunks) for claim, parsed, chunks in pieces}
        indexed: list[str] = []
        with self.sessions.begin() as session:
            for claim, error in outcomes:
                document_id = claim.document.id
                status = DocumentStatus.FAILED if error else DocumentStatus.INDEXED
                values: dict[str, object] = {"status": status, "error": error}
                if document_id in content:
                    parsed, chunks = content[document_id]
                    values.update(
                        text=parsed.text,
                        page_count=parsed.page_count,
                        chunk_count=len(chunks),
                        report=json.dumps(parsed.report),
                    )
                moved = session.execute(
                    update(Document)
                    .where(
                        Document.id == document_id,
                        Document.status.in_((DocumentStatus.PARSING, DocumentStatus.EMBEDDING)),
                        Document.attempts == claim.attempt,
                    )
                    .values(**values)
                ).rowcount
                if moved == 1 and document_id in content:
                    session.execute(delete(Chunk).where(Chunk.document_id == document_id))
                    session.add_all(content[document_id][1])
                    indexed.append(document_id)
                job = session.get(IngestJob, claim.job_id)
                if job is not None:
                    job.status, job.error, job.finished_at = status, error, utcnow()
                if error:
                    logger.warning("document %s failed: %s", document_id, error)
        for document_id in indexed:
            logger.info("document %s indexed", document_id)
            self._supersede(document_id)

    def _release(self, claims: list[Claim], lead_id: str) -> None:
        """After an unexpected error: put the group's unfinished documents back in the
        queue, for the task's retry or their own messages. The attempt is not counted: the
        attempt limit is for workers that die, and the task's retries have their own."""
        with self.sessions.begin() as session:
            for claim in claims:
                session.execute(
                    update(Document)
                    .where(
                        Document.id == claim.document.id,
                        Document.status.in_((DocumentStatus.PARSING, DocumentStatus.EMBEDDING)),
                        Document.attempts == claim.attempt,
                    )
                    .values(
                        status=DocumentStatus.QUEUED,
                        attempts=claim.attempt - (claim.document.id == lead_id),
                        claimed_by=None,
                    )
                )

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
