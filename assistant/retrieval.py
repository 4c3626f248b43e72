"""Find the passages closest to a question: dense (MiniLM in Chroma) and keyword (BM25 in
FTS5) search, fused by weighted reciprocal rank. The collection filter is applied inside
both searches, never afterwards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from assistant.db import Chunk, Document
from assistant.embedding import Embedder
from assistant.keyword_index import KeywordIndex
from assistant.settings import RetrievalSettings
from assistant.vectorstore import ChromaStore


@dataclass(frozen=True)
class Passage:
    chunk_id: str
    document_id: str
    filename: str
    text: str
    page: int | None
    start: int
    end: int
    score: float  # the fused ranking score: only its order means something
    similarity: float = 0.0  # cosine similarity to the question, used to decline
    document_sha256: str = ""  # the exact version the passage came from, for the audit log
    context: str = ""  # its document's title and section heading

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "document_id": self.document_id,
            "filename": self.filename,
            "page": self.page,
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 4),
            "similarity": round(self.similarity, 4),
            "context": self.context,
            "text": self.text,
        }


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], weights: Sequence[float], k: float
) -> list[tuple[str, float]]:
    """Weighted RRF: each list adds weight / (k + rank) to its items (rank from 1).
    Ties keep the order of first appearance, so the result is deterministic."""
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda pair: pair[1], reverse=True)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return float(sum(x * y for x, y in zip(a, b, strict=True)))


class Retriever:
    def __init__(
        self,
        sessions: sessionmaker,
        embedder: Embedder,
        store: ChromaStore,
        keywords: KeywordIndex,
        settings: RetrievalSettings,
    ) -> None:
        self.sessions = sessions
        self.embedder = embedder
        self.store = store
        self.keywords = keywords
        self.settings = settings

    def search(self, query: str, k: int, collections: Sequence[str] | None = None) -> list[Passage]:
        """The best `k` passages. `collections` limits the search (None: all collections)."""
        if collections is not None and not collections:
            return []
        [vector] = self.embedder.embed([query])
        candidates = max(k, self.settings.candidates)
        where = None if collections is None else {"collection": {"$in": list(collections)}}
        dense = self.store.query(vector, candidates, where=where)
        similarity = {hit.chunk_id: hit.score for hit in dense}
        rankings: list[list[str]] = [[hit.chunk_id for hit in dense]]
        weights = [1.0]
        if self.settings.keyword_weight > 0:
            keyword = self.keywords.search(query, candidates, collections)
            rankings.append([hit.chunk_id for hit in keyword])
            weights.append(self.settings.keyword_weight)
        fused = reciprocal_rank_fusion(rankings, weights, self.settings.rrf_k)[:k]
        missing = [chunk_id for chunk_id, _ in fused if chunk_id not in similarity]
        for chunk_id, embedding in self.store.embeddings(missing).items():
            similarity[chunk_id] = _cosine(vector, embedding)
        return self._passages(dict(fused), similarity)

    def _passages(self, scores: dict[str, float], similarity: dict[str, float]) -> list[Passage]:
        if not scores:
            return []
        with self.sessions() as session:
            rows = session.execute(
                select(Chunk, Document.filename, Document.sha256)
                .join(Document, Document.id == Chunk.document_id)
                .where(Chunk.id.in_(list(scores)), Document.current.is_(True))
            ).all()
        # The database decides what exists: an index entry without its row is never shown.
        passages = [
            Passage(
                chunk_id=chunk.id,
                document_id=chunk.document_id,
                filename=filename,
                text=chunk.text,
                page=chunk.page,
                start=chunk.char_start,
                end=chunk.char_end,
                score=scores[chunk.id],
                similarity=similarity.get(chunk.id, 0.0),
                document_sha256=sha256,
                context=chunk.context or "",
            )
            for chunk, filename, sha256 in rows
        ]
        return sorted(passages, key=lambda p: p.score, reverse=True)
