"""Find the passages closest to a question. Filters are applied inside the vector query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from assistant.db import Chunk, Document
from assistant.embedding import Embedder
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
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "document_id": self.document_id,
            "filename": self.filename,
            "page": self.page,
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 4),
            "text": self.text,
        }


class Retriever:
    def __init__(self, sessions: sessionmaker, embedder: Embedder, store: ChromaStore) -> None:
        self.sessions = sessions
        self.embedder = embedder
        self.store = store

    def search(self, query: str, k: int, where: dict[str, Any] | None = None) -> list[Passage]:
        [vector] = self.embedder.embed([query])
        hits = self.store.query(vector, k, where=where)
        if not hits:
            return []
        scores = {hit.chunk_id: hit.score for hit in hits}
        with self.sessions() as session:
            rows = session.execute(
                select(Chunk, Document.filename)
                .join(Document, Document.id == Chunk.document_id)
                .where(Chunk.id.in_(list(scores)))
            ).all()
        # The database decides what exists: a vector without its row is never shown.
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
            )
            for chunk, filename in rows
        ]
        return sorted(passages, key=lambda p: p.score, reverse=True)
