"""The search indexes (Chroma and the keyword index) are derived from the database. This
module keeps them honest: it records what they were built with and refuses to mix, and it
compares them with the database and repairs them (`assistant reindex --verify`)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from sqlalchemy import String, Text, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from assistant.db import Base, Chunk, Document, DocumentStatus
from assistant.embedding import Embedder
from assistant.errors import DocumentError
from assistant.keyword_index import KeywordIndex
from assistant.settings import ChunkingSettings
from assistant.vectorstore import ChromaStore

logger = logging.getLogger(__name__)
SETTINGS_KEY = "index_settings"
BATCH = 256


class IndexMeta(Base):
    __tablename__ = "index_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class IndexSettingsMismatch(DocumentError):
    """The indexes were built with another embedding model or chunking."""


# Chunks are indexed with their contextual header (assistant/chunking.py); an index built
# before headers existed must be rebuilt.
CONTEXT_VERSION = 1


def index_settings(embedder_name: str, chunking: ChunkingSettings) -> dict[str, object]:
    """What the indexes are built with; an index never mixes two of these."""
    return {
        "embedder": embedder_name,
        "chunk_size": chunking.size,
        "overlap": chunking.overlap,
        "context": CONTEXT_VERSION if chunking.headers else 0,
    }


def check_index_settings(sessions: sessionmaker, wanted: dict[str, object]) -> None:
    """Record the settings on first use; afterwards refuse to add with different ones."""
    with sessions.begin() as session:
        row = session.get(IndexMeta, SETTINGS_KEY)
        if row is None:
            session.add(IndexMeta(key=SETTINGS_KEY, value=json.dumps(wanted, sort_keys=True)))
            return
        built = json.loads(row.value)
    if built != wanted:
        raise IndexSettingsMismatch(
            f"the index was built with {built}, but the settings now say {wanted}; "
            "rebuild it with `assistant reindex --all` before adding documents"
        )


def reset_index_settings(sessions: sessionmaker, wanted: dict[str, object]) -> None:
    with sessions.begin() as session:
        session.merge(IndexMeta(key=SETTINGS_KEY, value=json.dumps(wanted, sort_keys=True)))


@dataclass
class IndexReport:
    expected_chunks: int = 0
    missing_vectors: int = 0
    extra_vectors: int = 0
    missing_keywords: int = 0
    extra_keywords: int = 0
    unreachable_vectors: int = 0  # stored, but no search finds them (see ChromaStore.upsert)
    repaired: bool = False

    @property
    def consistent(self) -> bool:
        return not (
            self.missing_vectors
            or self.extra_vectors
            or self.missing_keywords
            or self.extra_keywords
            or self.unreachable_vectors
        )

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "consistent": self.consistent}


class IndexChecker:
    def __init__(
        self,
        sessions: sessionmaker,
        embedder: Embedder,
        store: ChromaStore,
        keywords: KeywordIndex,
    ) -> None:
        self.sessions = sessions
        self.embedder = embedder
        self.store = store
        self.keywords = keywords

    def expected(self) -> dict[str, tuple[str, str]]:
        """chunk id → (collection, document id) for every chunk that should be searchable:
        those of indexed, current documents."""
        with self.sessions() as session:
            rows = session.execute(
                select(Chunk.id, Document.collection, Document.id)
                .join(Document, Document.id == Chunk.document_id)
                .where(Document.status == DocumentStatus.INDEXED, Document.current.is_(True))
            ).all()
        return {chunk_id: (collection, document_id) for chunk_id, collection, document_id in rows}

    def verify(self, repair: bool = False) -> IndexReport:
        expected = self.expected()
        vectors, keywords = self.store.ids(), self.keywords.ids()
        missing_vectors = sorted(set(expected) - vectors)
        missing_keywords = sorted(set(expected) - keywords)
        extra_vectors = sorted(vectors - set(expected))
        extra_keywords = sorted(keywords - set(expected))
        unreachable = self.store.unreachable(sorted(vectors & set(expected)))
        report = IndexReport(
            len(expected),
            len(missing_vectors),
            len(extra_vectors),
            len(missing_keywords),
            len(extra_keywords),
            len(unreachable),
        )
        if repair and not report.consistent:
            self.store.delete_ids(extra_vectors)
            self.keywords.delete_ids(extra_keywords)
            self._restore(missing_vectors + unreachable, missing_keywords, expected)
            report.repaired = True
            logger.warning("index repaired: %s", report.to_dict())
        return report

    def clear(self, wanted: dict[str, object]) -> None:
        """Empty both indexes and record the settings they are rebuilt with; the caller then
        re-ingests every current document (`assistant reindex --all`)."""
        self.store.delete_ids(sorted(self.store.ids()))
        self.keywords.delete_ids(sorted(self.keywords.ids()))
        reset_index_settings(self.sessions, wanted)

    def _restore(
        self, vectors: list[str], keywords: list[str], expected: dict[str, tuple[str, str]]
    ) -> None:
        """Re-embed and re-add the chunks the indexes lost (or cannot find), from the
        database's text."""
        need_vector, need_keyword = set(vectors), set(keywords)
        wanted = sorted(need_vector | need_keyword)
        for start in range(0, len(wanted), BATCH):
            ids = wanted[start : start + BATCH]
            with self.sessions() as session:
                chunks = list(session.scalars(select(Chunk).where(Chunk.id.in_(ids))))
            redo = [c for c in chunks if c.id in need_vector]
            if redo:
                self.store.upsert(
                    [c.id for c in redo],
                    self.embedder.embed([c.index_text for c in redo]),
                    [
                        {
                            "document_id": c.document_id,
                            "collection": expected[c.id][0],
                            "version": c.version,
                            "page": c.page or 0,
                        }
                        for c in redo
                    ],
                )
            self.keywords.upsert(
                (c.id, c.document_id, expected[c.id][0], c.index_text)
                for c in chunks
                if c.id in need_keyword
            )
