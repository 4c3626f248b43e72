"""The Chroma vector index of chunks. It is derived data: the database is the source of truth.

Chroma's PersistentClient keeps its HNSW index in memory and does not see what another
process wrote. Every write therefore bumps a marker file, and a reader whose marker is
older reopens its client before the next query (about 30 ms).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COLLECTION = "chunks"
MARKER = "index-generation"


@dataclass(frozen=True)
class VectorHit:
    chunk_id: str
    score: float  # cosine similarity, higher is closer


class ChromaStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._marker = path / MARKER
        self._lock = threading.RLock()
        self._client: Any = None
        self._collection: Any = None
        self._seen: int | None = None
        self._open()

    def _open(self) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        if self._client is not None:
            self._client.close()
        self._seen = self._generation()
        self._client = chromadb.PersistentClient(
            path=str(self.path), settings=ChromaSettings(anonymized_telemetry=False)
        )
        self._collection = self._client.get_or_create_collection(
            COLLECTION, metadata={"hnsw:space": "cosine"}
        )

    def _generation(self) -> int:
        try:
            return self._marker.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def _fresh(self) -> Any:
        """The collection, reopened if another process has written since we opened it."""
        if self._generation() != self._seen:
            self._open()
        return self._collection

    def _wrote(self) -> None:
        self._marker.touch()
        self._seen = self._generation()

    def upsert(
        self,
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float]],
        metadatas: Sequence[dict[str, Any]],
    ) -> None:
        if not ids:
            return
        with self._lock:
            self._fresh().upsert(
                ids=list(ids), embeddings=[list(e) for e in embeddings], metadatas=list(metadatas)
            )
            self._wrote()

    def delete_document(self, document_id: str, keep: Sequence[str] = ()) -> None:
        """Remove a document's vectors, except the ids in `keep`."""
        with self._lock:
            collection = self._fresh()
            found = collection.get(where={"document_id": document_id}, include=[])
            stale = [chunk_id for chunk_id in found["ids"] if chunk_id not in set(keep)]
            if stale:
                collection.delete(ids=stale)
                self._wrote()

    def query(
        self, embedding: Sequence[float], k: int, where: dict[str, Any] | None = None
    ) -> list[VectorHit]:
        with self._lock:
            result = self._fresh().query(
                query_embeddings=[list(embedding)], n_results=k, where=where, include=["distances"]
            )
        ids = result["ids"][0]
        distances = result["distances"][0]
        return [VectorHit(i, 1.0 - d) for i, d in zip(ids, distances, strict=True)]

    def embeddings(self, ids: Sequence[str]) -> dict[str, list[float]]:
        """Stored vectors by chunk id (ids that are not stored are left out)."""
        if not ids:
            return {}
        with self._lock:
            found = self._fresh().get(ids=list(ids), include=["embeddings"])
        pairs = zip(found["ids"], found["embeddings"], strict=True)
        return {chunk_id: [float(x) for x in vector] for chunk_id, vector in pairs}

    def count(self) -> int:
        with self._lock:
            return self._fresh().count()

    def ids(self) -> set[str]:
        """Every stored chunk id (for checking the index against the database)."""
        with self._lock:
            return set(self._fresh().get(include=[])["ids"])

    def delete_ids(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._lock:
            self._fresh().delete(ids=list(ids))
            self._wrote()
