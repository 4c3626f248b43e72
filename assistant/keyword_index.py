"""The keyword (BM25) index of chunks: SQLite FTS5 in its own file in the data directory.

Like the vector store it is derived data, written and deleted together with it, so the two
always describe the same chunks. It is a file of its own (not a table in the main database)
so it works the same whether the main database is SQLite or PostgreSQL.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5(
    text, chunk_id UNINDEXED, document_id UNINDEXED, collection UNINDEXED,
    tokenize = 'porter unicode61 remove_diacritics 2'
)
"""
_TOKEN = re.compile(r"\w+", re.UNICODE)
# Words so common that matching them says nothing about a passage (they only cost time).
_STOPWORDS_TEXT = """a an and are as at be been but by can did do does for from had has have how
i if in into is it its of on or that the their them then there these they this those to was
were what when where which who whom whose why will with would you your"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


@dataclass(frozen=True)
class KeywordHit:
    chunk_id: str
    score: float  # BM25, higher is better


def query_terms(text: str) -> list[str]:
    """The distinct, lower-cased words of a query, without stopwords."""
    words = [w for w in _TOKEN.findall(text.lower()) if w not in STOPWORDS]
    return list(dict.fromkeys(words))


class KeywordIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._local = threading.local()
        with self._connect() as connection:
            connection.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            self._local.connection = connection
        return connection

    def upsert(self, rows: Iterable[tuple[str, str, str, str]]) -> None:
        """Rows of (chunk_id, document_id, collection, text); replaces chunks with those ids."""
        rows = list(rows)
        if not rows:
            return
        with self._lock, self._connect() as connection:
            connection.executemany(
                "DELETE FROM chunks WHERE chunk_id = ?", [(row[0],) for row in rows]
            )
            connection.executemany(
                "INSERT INTO chunks (chunk_id, document_id, collection, text) VALUES (?, ?, ?, ?)",
                rows,
            )

    def delete_document(self, document_id: str, keep: Sequence[str] = ()) -> None:
        """Remove a document's chunks, except the ids in `keep`."""
        kept = set(keep)
        with self._lock, self._connect() as connection:
            found = connection.execute(
                "SELECT chunk_id FROM chunks WHERE document_id = ?", (document_id,)
            ).fetchall()
            stale = [(chunk_id,) for (chunk_id,) in found if chunk_id not in kept]
            connection.executemany("DELETE FROM chunks WHERE chunk_id = ?", stale)

    def search(
        self, query: str, k: int, collections: Sequence[str] | None = None
    ) -> list[KeywordHit]:
        """Best `k` chunks by BM25 for any of the query's words, inside `collections`
        (None means every collection; an empty list means none)."""
        terms = query_terms(query)
        if not terms or (collections is not None and not collections):
            return []
        match = " OR ".join('"' + term.replace('"', "") + '"' for term in terms)
        sql = "SELECT chunk_id, bm25(chunks) FROM chunks WHERE chunks MATCH ?"
        parameters: list[object] = [match]
        if collections is not None:
            sql += f" AND collection IN ({', '.join('?' * len(collections))})"
            parameters.extend(collections)
        sql += " ORDER BY bm25(chunks) LIMIT ?"
        parameters.append(k)
        rows = self._connect().execute(sql, parameters).fetchall()
        # FTS5's bm25() is negative, smaller is better: flip it so higher is better.
        return [KeywordHit(chunk_id, -score) for chunk_id, score in rows]

    def count(self) -> int:
        return self._connect().execute("SELECT count(*) FROM chunks").fetchone()[0]

    def ids(self) -> set[str]:
        return {row[0] for row in self._connect().execute("SELECT chunk_id FROM chunks")}

    def delete_ids(self, ids: Sequence[str]) -> None:
        with self._lock, self._connect() as connection:
            connection.executemany("DELETE FROM chunks WHERE chunk_id = ?", [(i,) for i in ids])
