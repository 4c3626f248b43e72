"""The Chroma vector index of chunks. It is derived data: the database is the source of truth.

Two ways to reach Chroma, with one interface:

- Embedded (the default): a PersistentClient in the data directory. It keeps its HNSW index
  in memory and does not see what another process wrote, so every write bumps a marker
  file, and a reader whose marker is older reopens its client before the next query
  (about 30 ms).
- A Chroma server (`ASSISTANT_CHROMA_URL`): an HttpClient. The server is the one copy, so no
  marker is needed. The client connects on first use, so the web server starts (and
  `/readyz` says what is wrong) while the server is down. A server that does not answer
  raises VectorStoreUnavailable; writes are retried for `chroma_wait_seconds` first, so a
  Chroma restart in the middle of an ingestion loses nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from assistant.errors import ConfigurationError, Unavailable

logger = logging.getLogger(__name__)
COLLECTION = "chunks"
MARKER = "index-generation"
SAME_VECTOR = 1e-4  # cosine distance below which two stored vectors are copies
T = TypeVar("T")


class VectorStoreUnavailable(Unavailable):
    """The Chroma server does not answer (down, restarting or unreachable)."""


def unreachable(exc: Exception) -> bool:
    """Whether an error of the HTTP client means that the server does not answer."""
    import httpx

    # chromadb turns a refused connection while opening into this ValueError.
    opening = isinstance(exc, ValueError) and "Could not connect to a Chroma server" in str(exc)
    return opening or isinstance(exc, httpx.TransportError)


@dataclass(frozen=True)
class VectorHit:
    chunk_id: str
    score: float  # cosine similarity, higher is closer


@dataclass(frozen=True)
class ChromaServer:
    """Where a Chroma server listens, from a URL such as http://127.0.0.1:8000."""

    host: str
    port: int
    ssl: bool

    @classmethod
    def from_url(cls, url: str) -> ChromaServer:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigurationError(f"ASSISTANT_CHROMA_URL: {exc}") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"ASSISTANT_CHROMA_URL: {url!r} is not an http:// or https:// URL with a host"
            )
        ssl = parts.scheme == "https"
        return cls(parts.hostname, port or (443 if ssl else 8000), ssl)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}"


class ChromaStore:
    def __init__(
        self, path: Path | None = None, server: ChromaServer | None = None, wait: float = 0.0
    ) -> None:
        """Embedded in `path`, or the Chroma `server` (writes retried for `wait` seconds)."""
        if (path is None) == (server is None):
            raise ValueError("give either a path or a server")
        self.path = path
        self.server = server
        self.wait = wait
        self._lock = threading.RLock()
        self._client: Any = None
        self._collection: Any = None
        self._seen: int | None = None
        if path is not None:
            self._open()

    @property
    def where(self) -> str:
        return self.server.url if self.server else str(self.path)

    def _open(self) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        self._close()
        settings = ChromaSettings(anonymized_telemetry=False)
        if self.server is None:
            self._seen = self._generation()
            self._client = chromadb.PersistentClient(path=str(self.path), settings=settings)
        else:
            self._client = chromadb.HttpClient(
                self.server.host, self.server.port, self.server.ssl, settings=settings
            )
        self._collection = self._client.get_or_create_collection(
            COLLECTION, metadata={"hnsw:space": "cosine"}
        )

    def _close(self) -> None:
        client, self._client, self._collection = self._client, None, None
        if client is not None:
            try:
                client.close()
            except Exception:  # a client of a server that is gone; nothing to release
                logger.debug("closing the Chroma client failed", exc_info=True)

    def _generation(self) -> int:
        try:
            return (self.path / MARKER).stat().st_mtime_ns  # type: ignore[operator]
        except FileNotFoundError:
            return 0

    def _fresh(self) -> Any:
        """The collection: reopened if another process has written since we opened it
        (embedded), or opened on first use and after a failure (server)."""
        if self._collection is None or (self.server is None and self._generation() != self._seen):
            self._open()
        return self._collection

    def _wrote(self) -> None:
        if self.server is None:
            (self.path / MARKER).touch()  # type: ignore[operator]
            self._seen = self._generation()

    def _call(self, action: Callable[[Any], T], write: bool = False) -> T:
        """Run `action(collection)` under the lock. On a server, a failure drops the client
        (the next call reconnects) and a server that does not answer becomes
        VectorStoreUnavailable; a write is first retried for up to `wait` seconds."""
        if self.server is None:
            with self._lock:
                return action(self._fresh())
        deadline = time.monotonic() + (self.wait if write else 0.0)
        delay = 0.5
        while True:
            with self._lock:
                try:
                    return action(self._fresh())
                except Exception as exc:
                    self._close()
                    if not unreachable(exc):
                        raise
                    problem = exc
            left = deadline - time.monotonic()
            if left <= 0:
                raise VectorStoreUnavailable(
                    f"the Chroma server at {self.where} does not answer ({problem}); "
                    "the database still holds every document: retry once it is back"
                ) from problem
            logger.warning(
                "the Chroma server at %s does not answer (%s); retrying for %.0f s more",
                self.where,
                problem,
                left,
            )
            time.sleep(min(delay, left))
            delay = min(delay * 2, 5.0)

    def upsert(
        self,
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float]],
        metadatas: Sequence[dict[str, Any]],
    ) -> None:
        """Store vectors, replacing those of ids already stored. A replacement is a delete
        and an insert: Chroma 1.5's in-place HNSW update can leave a record that no query
        returns, even one with its own vector (chroma-core/chroma#7758; seen here after
        a worker died between storing a group's vectors and committing it)."""
        if not ids:
            return

        def replace(collection: Any) -> None:
            stored = collection.get(ids=list(ids), include=[])["ids"]
            if stored:
                collection.delete(ids=stored)
            collection.upsert(
                ids=list(ids), embeddings=[list(e) for e in embeddings], metadatas=list(metadatas)
            )

        self._call(replace, write=True)
        self._wrote()

    def delete_document(self, document_id: str, keep: Sequence[str] = ()) -> None:
        """Remove a document's vectors, except the ids in `keep`."""

        def delete(collection: Any) -> bool:
            found = collection.get(where={"document_id": document_id}, include=[])
            stale = [chunk_id for chunk_id in found["ids"] if chunk_id not in set(keep)]
            if stale:
                collection.delete(ids=stale)
            return bool(stale)

        if self._call(delete, write=True):
            self._wrote()

    def query(
        self, embedding: Sequence[float], k: int, where: dict[str, Any] | None = None
    ) -> list[VectorHit]:
        result = self._call(
            lambda c: c.query(
                query_embeddings=[list(embedding)], n_results=k, where=where, include=["distances"]
            )
        )
        ids = result["ids"][0]
        distances = result["distances"][0]
        return [VectorHit(i, 1.0 - d) for i, d in zip(ids, distances, strict=True)]

    def embeddings(self, ids: Sequence[str]) -> dict[str, list[float]]:
        """Stored vectors by chunk id (ids that are not stored are left out)."""
        if not ids:
            return {}
        found = self._call(lambda c: c.get(ids=list(ids), include=["embeddings"]))
        pairs = zip(found["ids"], found["embeddings"], strict=True)
        return {chunk_id: [float(x) for x in vector] for chunk_id, vector in pairs}

    def unreachable(self, ids: Sequence[str], batch: int = 128) -> list[str]:
        """The ids that a query with their own stored vector does not return: the HNSW graph
        has lost its way to them. A chunk whose nearest neighbours are all exact copies of
        it (the same boilerplate in many documents) counts as reachable."""
        lost: list[str] = []
        for start in range(0, len(ids), batch):
            vectors = self.embeddings(ids[start : start + batch])
            if not vectors:
                continue
            result = self._call(
                lambda c, v=vectors: c.query(
                    query_embeddings=list(v.values()), n_results=10, include=["distances"]
                )
            )
            for chunk_id, found, distances in zip(
                vectors, result["ids"], result["distances"], strict=True
            ):
                if chunk_id not in found and (not distances or distances[-1] > SAME_VECTOR):
                    lost.append(chunk_id)
        return lost

    def count(self) -> int:
        return int(self._call(lambda c: c.count()))

    def ids(self) -> set[str]:
        """Every stored chunk id (for checking the index against the database)."""
        return set(self._call(lambda c: c.get(include=[])["ids"]))

    def delete_ids(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        self._call(lambda c: c.delete(ids=list(ids)), write=True)
        self._wrote()
