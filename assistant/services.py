"""The one composition root: every adapter is built here, lazily, from the settings."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import sessionmaker

from assistant.access import DEFAULT_COLLECTION, AccessService
from assistant.accounts import AccountService, Principal
from assistant.answering import Answerer
from assistant.audit import AuditLog
from assistant.db import Document, make_engine, make_session_factory
from assistant.documents import DocumentService, pending_ids
from assistant.embedding import Embedder, SentenceTransformerEmbedder
from assistant.errors import AuditError
from assistant.generation import Generator, LlamaGenerator
from assistant.index_check import IndexChecker
from assistant.keyword_index import KeywordIndex
from assistant.retrieval import Retriever
from assistant.settings import Settings, load_settings
from assistant.vectorstore import ChromaServer, ChromaStore

logger = logging.getLogger(__name__)

# The request being served (request id, client address), set by an adapter, so every audit
# record made while serving it carries them.
request_context: ContextVar[tuple[str | None, str | None]] = ContextVar(
    "request_context", default=(None, None)
)


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker
    embedder: Embedder
    store: ChromaStore
    keywords: KeywordIndex
    generator: Generator
    documents: DocumentService
    index: IndexChecker
    retriever: Retriever
    answerer: Answerer
    audit_log: AuditLog
    accounts: AccountService
    access: AccessService

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
        """Append one audit record (raises AuditError: callers fail closed)."""
        actor = actor or Principal.operator()
        request_id, client = request_context.get()
        return self.audit_log.record(
            actor_id=actor.actor,
            actor_role=actor.role,
            action=action,
            details=details,
            request_id=request_id,
            client=client,
        )


def build_services(
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    generator: Generator | None = None,
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
    if settings.chroma_url:
        server = ChromaServer.from_url(settings.chroma_url)
        store = ChromaStore(server=server, wait=settings.chroma_wait_seconds)
    else:
        store = ChromaStore(settings.chroma_dir)
    keywords = KeywordIndex(settings.keyword_index_path)
    retriever = Retriever(sessions, embedder, store, keywords, settings.retrieval)
    access = AccessService(sessions, settings)
    services = Services(
        settings=settings,
        sessions=sessions,
        embedder=embedder,
        store=store,
        generator=generator,
        keywords=keywords,
        documents=DocumentService(settings, sessions, embedder, store, keywords),
        index=IndexChecker(sessions, embedder, store, keywords),
        retriever=retriever,
        answerer=Answerer(settings, retriever, generator),
        audit_log=AuditLog(sessions, settings),
        accounts=AccountService(sessions, settings, memberships=access),
        access=access,
    )
    services.accounts.audit = services.audit
    services.access.audit = services.audit
    return services


def pending_document_ids(settings: Settings) -> list[str]:
    """Queued or processing documents, read with the database alone (safe before fork)."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        return pending_ids(make_session_factory(engine))
    finally:
        engine.dispose()
