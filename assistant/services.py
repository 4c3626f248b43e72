"""The one composition root: every adapter is built here, lazily, from the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import sessionmaker

from assistant.answering import Answerer
from assistant.db import make_engine, make_session_factory
from assistant.documents import DocumentService, pending_ids
from assistant.embedding import Embedder, SentenceTransformerEmbedder
from assistant.generation import Generator, LlamaGenerator
from assistant.keyword_index import KeywordIndex
from assistant.retrieval import Retriever
from assistant.settings import Settings, load_settings
from assistant.vectorstore import ChromaStore

logger = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker
    embedder: Embedder
    store: ChromaStore
    keywords: KeywordIndex
    generator: Generator
    documents: DocumentService
    retriever: Retriever
    answerer: Answerer


def build_services(
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    generator: Generator | None = None,
) -> Services:
    """Models load on first use (once per process), not here."""
    settings = settings or load_settings()
    settings.ensure_dirs()
    sessions = make_session_factory(make_engine(settings.sqlalchemy_url))
    embedder = embedder or SentenceTransformerEmbedder(
        settings.embedding_model_path, settings.embedding_batch_size
    )
    generator = generator or LlamaGenerator(settings.generator, settings.models_dir)
    store = ChromaStore(settings.chroma_dir)
    keywords = KeywordIndex(settings.keyword_index_path)
    retriever = Retriever(sessions, embedder, store, keywords, settings.retrieval)
    return Services(
        settings=settings,
        sessions=sessions,
        embedder=embedder,
        store=store,
        generator=generator,
        keywords=keywords,
        documents=DocumentService(settings, sessions, embedder, store, keywords),
        retriever=retriever,
        answerer=Answerer(settings, retriever, generator),
    )


def pending_document_ids(settings: Settings) -> list[str]:
    """Queued or processing documents, read with the database alone (safe before fork)."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        return pending_ids(make_session_factory(engine))
    finally:
        engine.dispose()
