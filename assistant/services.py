"""The one composition root: every adapter is built here, lazily, from the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import sessionmaker

from assistant.access import DEFAULT_COLLECTION, AccessService
from assistant.accounts import AccountService
from assistant.actors import Principal, record_fields
from assistant.answering import Answerer
from assistant.answering.generation import Generator, LlamaGenerator
from assistant.audit import AuditLog
from assistant.conversations import ConversationService
from assistant.db import Document, make_engine, make_session_factory
from assistant.documents import DocumentService, pending_ids
from assistant.embedding import Embedder, SentenceTransformerEmbedder
from assistant.errors import AuditError
from assistant.index_check import IndexChecker
from assistant.keyword_index import KeywordIndex
from assistant.retrieval import Retriever
from assistant.settings import Settings, load_settings
from assistant.vectorstore import ChromaServer, ChromaStore

logger = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker
    embedder: Embedder
    store: ChromaStore
    keywords: KeywordIndex
    generator: Generator
    large_generator: Generator | None
    documents: DocumentService
    index: IndexChecker
    retriever: Retriever
    answerer: Answerer
    audit_log: AuditLog
    accounts: AccountService
    access: AccessService
    conversations: ConversationService

    def upload(
        self,
        actor: Principal | None,
        filename: str,
        data: bytes,
        collection: str = DEFAULT_COLLECTION,
        batch_id: str | None = None,
    ) -> Document:
        """Store an upload and audit it; if the audit cannot be written the file is removed
        again (fail closed: nothing unaudited is kept or indexed). Not yet queued."""
        document = self.documents.add(filename, data, collection, batch_id)
        try:
            self.audit(actor, "document.upload", document.described())
        except AuditError:
            self.documents.delete(document.id)
            raise
        return document

    def audit(
        self, actor: Principal | None, action: str, details: dict[str, Any] | None = None
    ) -> int:
        """Append one audit record (raises AuditError: callers fail closed). Admin changes
        write theirs in their own transaction instead (`assistant.actors.AuditedService`)."""
        return self.audit_log.record(**record_fields(actor, action, details))


def build_services(
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    generator: Generator | None = None,
    large_generator: Generator | None = None,
) -> Services:
    """Models load on first use (once per process), not here."""
    settings = settings or load_settings()
    settings.ensure_dirs()
    engine = make_engine(settings.sqlalchemy_url, settings.database_busy_seconds)
    sessions = make_session_factory(engine)
    embedder = embedder or SentenceTransformerEmbedder(
        settings.embedding_model_path,
        settings.embedding_batch_size,
        backend=settings.embedding_backend,
        models_dir=settings.models_dir,
        threads=settings.embedding_threads,
    )
    generator = generator or LlamaGenerator(settings.generator, settings.models_dir)
    # The larger model of routing; a test double of the small model stands in for it too.
    if large_generator is None and settings.routing.mode != "off":
        real = isinstance(generator, LlamaGenerator)
        large_generator = (
            LlamaGenerator(settings.routing.large, settings.models_dir) if real else generator
        )
    if settings.chroma_url:
        server = ChromaServer.from_url(settings.chroma_url)
        store = ChromaStore(server=server, wait=settings.chroma_wait_seconds)
    else:
        store = ChromaStore(settings.chroma_dir)
    keywords = KeywordIndex(settings.keyword_index_path)
    retriever = Retriever(sessions, embedder, store, keywords, settings.retrieval)
    audit_log = AuditLog(sessions, settings)
    access = AccessService(sessions, settings, audit_log)
    return Services(
        settings=settings,
        sessions=sessions,
        embedder=embedder,
        store=store,
        generator=generator,
        large_generator=large_generator,
        keywords=keywords,
        documents=DocumentService(settings, sessions, embedder, store, keywords),
        index=IndexChecker(sessions, embedder, store, keywords),
        retriever=retriever,
        answerer=Answerer(settings, retriever, generator, large_generator),
        audit_log=audit_log,
        accounts=AccountService(sessions, settings, audit_log, memberships=access),
        access=access,
        conversations=ConversationService(sessions, settings, audit_log),
    )


def pending_document_ids(settings: Settings) -> list[str]:
    """Queued or processing documents, read with the database alone (safe before fork)."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        return pending_ids(make_session_factory(engine))
    finally:
        engine.dispose()
