"""Text generation with llama-cpp-python: the chat template from the GGUF's own metadata for
instruct models, a few-shot completion prompt for base models, the model's log-probabilities
as it writes, and its yes/no judgement of its own answer. A fake serves unit tests."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from assistant.answering.models import PACKAGED_MODELS, assemble, verified_sha256
from assistant.answering.prompts import DECLINE_MARKER, JUDGE_QUESTION, PROMPT_VERSION, Prompt
from assistant.errors import ConfigurationError
from assistant.settings import GeneratorSettings

logger = logging.getLogger(__name__)


class Generator(Protocol):
    name: str

    def stream(self, prompt: Prompt) -> Iterator[str]:
        """Yield the answer text piece by piece, filling in prompt.trace."""
        ...

    def judge(self, prompt: Prompt, answer: str) -> float | None:
        """log p(yes) - log p(no) that `answer` is stated in the sources (None: not asked)."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """The model file, prompt version and sampling settings, for the audit log."""
        ...


def resolve_model_path(settings: GeneratorSettings, models_dir: Path) -> Path:
    """The GGUF file to load: an explicit path (a site's own file), or a packaged model,
    assembled on first use and checked against its pinned SHA-256."""
    if settings.model_path is not None:
        path = settings.model_path.expanduser()
        if not path.is_file():
            raise ConfigurationError(f"no GGUF file at {path} (model_path)")
        return path
    return assemble(PACKAGED_MODELS[settings.model], models_dir)


def cpu_has_amx() -> bool:
    """Intel AMX (Sapphire Rapids and later): llama.cpp's AMX weight buffers crash these
    Q4_K_M models on the first batch (ggml-org/llama.cpp#20824), so they are not used."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            return any(line.startswith("flags") and "amx_int8" in line for line in cpuinfo)
    except OSError:
        return False


_params_lock = threading.Lock()


@cache
def _load_llama(path: str, n_ctx: int, n_threads: int, flash_attn: bool) -> Any:
    from llama_cpp import Llama
    from llama_cpp import llama_cpp as bindings  # where Llama() reads its defaults

    logger.info("loading language model %s (n_ctx=%s, threads=%s)", path, n_ctx, n_threads)
    defaults = bindings.llama_model_default_params
    extra_buffers = not cpu_has_amx()

    def model_params() -> Any:
        params = defaults()
        params.use_extra_bufts = extra_buffers  # weight repacking (AMX among them)
        return params

    # Llama() offers no argument for it: its default model parameters are swapped while it
    # loads, under a lock, since they are module-wide.
    with _params_lock:
        bindings.llama_model_default_params = model_params
        try:
            return Llama(
                model_path=path,
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_batch=512,
                flash_attn=flash_attn,
                verbose=False,
            )
        finally:
            bindings.llama_model_default_params = defaults


def _log_softmax(scores: Any) -> np.ndarray:
    logits = np.asarray(scores, dtype=np.float32)
    top = float(logits.max())
    return logits - (top + math.log(float(np.exp(logits - top).sum())))


class _Recorder:
    """A logits processor that keeps the model's own log-probability of each token it picks
    and of the decline marker at the first step, and can forbid the marker there."""

    def __init__(self, decline_token: int | None, suppress: bool) -> None:
        self.decline_token = decline_token
        self.suppress = suppress
        self.logprobs: list[float] = []
        self.decline_logprob: float | None = None
        self.prompt_tokens: int | None = None
        self._previous: np.ndarray | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.prompt_tokens is None:
            self.prompt_tokens = len(input_ids)
        elif self._previous is not None:
            self.logprobs.append(float(self._previous[int(input_ids[-1])]))
        self._previous = _log_softmax(scores)
        if len(self.logprobs) == 0 and self.decline_token is not None:
            self.decline_logprob = float(self._previous[self.decline_token])
            if self.suppress:
                scores = np.array(scores, copy=True)
                scores[self.decline_token] = -np.inf
        return scores


class LlamaGenerator:
    """Loads the GGUF on first use, once per process; one generation at a time."""

    def __init__(self, settings: GeneratorSettings, models_dir: Path) -> None:
        self.settings = settings
        self.models_dir = models_dir
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._formatter: Any = None

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
        return PACKAGED_MODELS[self.settings.model].filename

    @property
    def title(self) -> str:
        if self.settings.model_path is not None:
            return self.settings.model_path.stem
        return PACKAGED_MODELS[self.settings.model].title

    @property
    def prompt_style(self) -> str:
        if self.settings.prompt_style != "auto":
            return self.settings.prompt_style
        if self.settings.model_path is None:
            return "chat" if PACKAGED_MODELS[self.settings.model].instruct else "completion"
        name = self.settings.model_path.name.lower()
        instruct = any(tag in name for tag in ("instruct", "-it", "_it", "chat"))
        return "chat" if instruct else "completion"

    def fingerprint(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "model_sha256": verified_sha256(self.model_path),
            "prompt_version": PROMPT_VERSION,
            "prompt_style": self.prompt_style,
            "sampling": {"max_tokens": self.settings.max_tokens, "temperature": 0.0},
        }

    def load(self) -> Any:
        return _load_llama(
            str(self.model_path),
            self.settings.n_ctx,
            self.settings.n_threads,
            self.settings.flash_attn,
        )

    def _chat_text(self, llama: Any, messages: list[dict[str, str]]) -> str:
        """The prompt rendered with the chat template stored in the GGUF file."""
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            template = llama.metadata.get("tokenizer.chat_template")
            if not template:
                raise ConfigurationError(f"{self.name} has no chat template; use completion")
            vocab = llama.metadata

            def token(key: str) -> str:
                index = vocab.get(f"tokenizer.ggml.{key}_token_id")
                return llama.detokenize([int(index)], special=True).decode() if index else ""

            self._formatter = Jinja2ChatFormatter(template, token("eos"), token("bos"))
        return str(self._formatter(messages=messages).prompt)

    def _tokens(self, llama: Any, text: str) -> list[int]:
        return list(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def stream(self, prompt: Prompt) -> Iterator[str]:
        from llama_cpp import LogitsProcessorList

        llama = self.load()
        with self._lock:
            chat = self.prompt_style == "chat"
            text = self._chat_text(llama, prompt.messages()) if chat else prompt.completion_text()
            marker = self._tokens(llama, DECLINE_MARKER if chat else " " + DECLINE_MARKER)
            recorder = _Recorder(marker[0] if marker else None, prompt.suppress_decline)
            limit = min(prompt.max_tokens, self.settings.max_tokens)
            tokens = self._tokens(llama, text)
            for part in llama.create_completion(
                tokens,
                max_tokens=limit,
                temperature=0.0,
                top_k=1,
                repeat_penalty=1.0,
                stream=True,
                stop=None if chat else ["\n", "Question:", "Context:"],
                logits_processor=LogitsProcessorList([recorder]),
            ):
                piece = part["choices"][0]["text"]
                if piece:
                    yield piece
            prompt.trace.logprobs = recorder.logprobs
            prompt.trace.decline_logprob = recorder.decline_logprob
            prompt.trace.prompt_tokens = len(tokens)

    def judge(self, prompt: Prompt, answer: str) -> float | None:
        """The model's own yes/no on its answer, asked as a next turn of the same chat, so
        only the new turn is evaluated (the prompt and answer are in the KV cache)."""
        if self.prompt_style != "chat" or not answer.strip():
            return None
        from llama_cpp import LogitsProcessorList

        llama = self.load()
        with self._lock:
            messages = [
                *prompt.messages(),
                {"role": "assistant", "content": answer.strip()},
                {"role": "user", "content": JUDGE_QUESTION},
            ]
            tokens = self._tokens(llama, self._chat_text(llama, messages))
            yes = [self._tokens(llama, w)[0] for w in ("Yes", "yes")]
            no = [self._tokens(llama, w)[0] for w in ("No", "no")]
            seen: dict[str, float] = {}

            def record(_: Any, scores: Any) -> Any:
                logprobs = _log_softmax(scores)
                seen["yes"] = float(np.logaddexp.reduce(logprobs[yes]))
                seen["no"] = float(np.logaddexp.reduce(logprobs[no]))
                return scores

            llama.create_completion(
                tokens, max_tokens=1, temperature=0.0, top_k=1,
                logits_processor=LogitsProcessorList([record]),
            )  # fmt: skip
        return seen["yes"] - seen["no"] if seen else None


class ExtractiveFakeGenerator:
    """Deterministic stand-in for unit tests: answers with source 1's first sentence."""

    name = "extractive-fake"
    title = "extractive fake"
    prompt_style = "chat"

    def fingerprint(self) -> dict[str, Any]:
        return {"model": self.name, "model_sha256": None, "prompt_version": PROMPT_VERSION}

    def stream(self, prompt: Prompt) -> Iterator[str]:
        first = prompt.sources[0].split(". ")[0].rstrip(".") + "." if prompt.sources else ""
        words = first.split(" ") if first.strip() else [DECLINE_MARKER]
        prompt.trace.logprobs = [-0.1] * len(words)
        prompt.trace.decline_logprob = -8.0 if first.strip() else -0.1
        for word in words:
            yield word + " "

    def judge(self, prompt: Prompt, answer: str) -> float | None:
        return 4.0 if answer.strip() else None
