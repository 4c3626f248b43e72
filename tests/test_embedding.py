"""The packaged MiniLM in every embedding backend, against the PyTorch reference."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from assistant import embedding
from assistant.embedding import SentenceTransformerEmbedder
from assistant.errors import ConfigurationError
from assistant.settings import EmbeddingBackend, load_settings

EXPORTED: list[EmbeddingBackend] = ["onnx", "onnx-int8"]
SENTENCES = [
    "The cat sat on the mat.",
    "A kitten is sleeping on the rug.",
    "Quarterly revenue grew by ten percent compared with last year.",
    "x",
    "Mitochondria produce most of the chemical energy of the cell. " * 40,  # truncated
]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def reference() -> list[list[float]]:
    return SentenceTransformerEmbedder(backend="torch").embed(SENTENCES)


@pytest.mark.slow
@pytest.mark.parametrize("backend", EXPORTED)
def test_backend_matches_torch(
    backend: EmbeddingBackend, models_dir: Path, reference: list[list[float]]
) -> None:
    embedder = SentenceTransformerEmbedder(backend=backend, models_dir=models_dir, batch_size=2)
    vectors = embedder.embed(SENTENCES)
    assert len(vectors) == len(SENTENCES)
    for vector, expected in zip(vectors, reference, strict=True):
        assert len(vector) == len(expected) == 384
        assert math.isclose(math.sqrt(cosine(vector, vector)), 1.0, abs_tol=1e-4)
        assert cosine(vector, expected) >= 0.98
    related, unrelated = cosine(vectors[0], vectors[1]), cosine(vectors[0], vectors[2])
    assert related > unrelated + 0.2
    assert embedder.embed([]) == []


@pytest.mark.slow
def test_export_is_made_once_and_reused(
    models_dir: Path, reference: list[list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    SentenceTransformerEmbedder(backend="onnx-int8", models_dir=models_dir).embed(["warm-up"])
    files = sorted(models_dir.glob("embedding-*/*.onnx"))
    assert [f.name for f in files] == ["model-int8.onnx", "model.onnx"]
    before = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in files}

    def no_export(*args: object) -> None:
        raise AssertionError("the export ran again")

    monkeypatch.setattr(embedding, "_export_onnx", no_export)
    monkeypatch.setattr(embedding, "_quantize_int8", no_export)
    monkeypatch.setattr(embedding, "_made_here", {})
    embedding.load_runner.cache_clear()  # as a new process would: load from the files
    for backend in EXPORTED:
        second = SentenceTransformerEmbedder(backend=backend, models_dir=models_dir)
        assert cosine(second.embed(SENTENCES[:1])[0], reference[0]) >= 0.98
    assert {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in files} == before
    assert not list(models_dir.rglob("*.part"))


def test_names_differ_per_backend() -> None:
    backends: list[EmbeddingBackend] = ["torch", *EXPORTED]
    names = {
        SentenceTransformerEmbedder(backend=b, models_dir=Path("unused")).name for b in backends
    }
    assert len(names) == len(backends)
    # Indexes built before the backends existed recorded this name, and were torch-built.
    assert SentenceTransformerEmbedder().name == "all-MiniLM-L6-v2 (packaged)"


def test_failed_export_leaves_no_file(tmp_path: Path) -> None:
    def broken(partial: Path) -> None:
        partial.write_bytes(b"half a model")
        raise RuntimeError("export failed")

    target = tmp_path / "models" / "model.onnx"
    with pytest.raises(RuntimeError):
        embedding._write_atomically(target, broken)
    assert list(target.parent.iterdir()) == []


def test_backend_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(data_dir=tmp_path).embedding_backend == "onnx-int8"
    monkeypatch.setenv("ASSISTANT_EMBEDDING_BACKEND", "torch")
    assert load_settings(data_dir=tmp_path).embedding_backend == "torch"
    monkeypatch.setenv("ASSISTANT_EMBEDDING_BACKEND", "tensorflow")
    with pytest.raises(ConfigurationError, match="ASSISTANT_EMBEDDING_BACKEND"):
        load_settings(data_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="models directory"):
        SentenceTransformerEmbedder(backend="onnx")
