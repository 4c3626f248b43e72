"""Grounding for a small model: pick the evidence sentences before generation, keep the
model's answer to a copy of that evidence, check the answer is supported by it, and decide
when to say "I don't know" from the retrieval similarity and the model's own confidence."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

# Sentence ends: . ! ? (optionally closed by a quote or bracket) then space and a capital,
# digit or opening quote. Abbreviations such as "e.g. the" (lower case next) do not split.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"\w+")
_ABBREVIATION = re.compile(r"(?:\b(?:Dr|Mr|Mrs|Ms|Prof|St|Sr|Jr|No|Co|Inc|Ltd|vs|etc)|\b[A-Z])\.$")
_STOPWORDS_TEXT = """a an the of in on at to for from by with about as into over after before under
    between during and or but not no nor is are was were be been being am do does did
    has have had what which who whom whose when where why how that this these those it
    its their there they them he she his her him i you we our your my me can could would
    should will shall may might must than then so such also if one ones any some many
    much more most other"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


@dataclass(frozen=True)
class Evidence:
    """One sentence of a retrieved passage, with where it came from."""

    text: str
    passage: int  # index into the passages given to select_evidence
    start: int  # character offsets inside that passage's text
    end: int
    score: float = 0.0


def split_sentences(text: str, max_chars: int = 400) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text`, stripped; long ones cut at a space."""
    spans: list[tuple[int, int]] = []
    for block in re.finditer(r"[^\n]+", text):
        start = block.start()
        line = block.group()
        cuts = [
            m.start()
            for m in _SENTENCE_END.finditer(line)
            if not _ABBREVIATION.search(line[max(0, m.start() - 5) : m.start()])
        ] + [len(line)]
        for cut in cuts:
            end = block.start() + cut
            if end > start:
                spans.extend(_cut_long(text, start, end, max_chars))
            start = end
    return [(s, e) for s, e in (_strip(text, s, e) for s, e in spans) if e > s]


def _cut_long(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    pieces = []
    while end - start > max_chars:
        space = text.rfind(" ", start + max_chars // 2, start + max_chars)
        cut = space if space > start else start + max_chars
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS}


def keyword_overlap(question: str, text: str) -> float:
    """The share of the question's content words that `text` contains (0 to 1)."""
    wanted = content_words(question)
    return len(wanted & content_words(text)) / len(wanted) if wanted else 0.0


def select_evidence(
    question: str,
    passages: Sequence[str],
    embedder: Embedder | None,
    count: int,
    keyword_weight: float,
) -> list[Evidence]:
    """The `count` sentences that best match the question: MiniLM cosine plus
    `keyword_weight` times keyword overlap. They are returned in document order
    (by passage rank, then position), which reads better than score order."""
    if count == 0:  # selection off: each whole passage is one piece of evidence
        return [Evidence(text, index, 0, len(text)) for index, text in enumerate(passages)]
    candidates = [
        Evidence(passage[s:e], index, s, e)
        for index, passage in enumerate(passages)
        for s, e in split_sentences(passage)
    ]
    if not candidates:
        return []
    similarity = [0.0] * len(candidates)
    if embedder is not None:
        vectors = np.asarray(embedder.embed([question] + [c.text for c in candidates]))
        similarity = (vectors[1:] @ vectors[0]).tolist()
    scored = [
        Evidence(
            c.text,
            c.passage,
            c.start,
            c.end,
            sim + keyword_weight * keyword_overlap(question, c.text),
        )
        for c, sim in zip(candidates, similarity, strict=True)
    ]
    best = sorted(range(len(scored)), key=lambda i: (-scored[i].score, i))[:count]
    return [scored[i] for i in sorted(best)]


def supporting_evidence(answer: str, evidence: Sequence[Evidence]) -> tuple[int | None, float]:
    """The evidence sentence that best supports `answer`, and the share of the answer's
    words it contains (1.0: every word is in that sentence). None if nothing overlaps."""
    words = _WORD.findall(answer.lower())
    if not words or not evidence:
        return None, 0.0
    best, best_share = None, 0.0
    normalized = _normalize(answer)
    for index, item in enumerate(evidence):
        have = set(_WORD.findall(item.text.lower()))
        share = sum(w in have for w in words) / len(words)
        if normalized and normalized in _normalize(item.text):
            share += 1.0  # a verbatim copy beats a bag of the same words
        if share > best_share:
            best, best_share = index, share
    return best, min(best_share, 1.0)


def _normalize(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


class SpanConstraint:
    """A llama-cpp-python logits processor that lets the model only copy: every generated
    token must continue a contiguous run of one of the evidence token sequences. Once at
    least one token is out, `stop_tokens` (newline, end of text) are allowed too.

    It also records the model's own, unconstrained log-probability of each token it emits
    and, at the first step, of the `abstain_tokens` (the start of "unknown")."""

    def __init__(
        self,
        sequences: Sequence[Sequence[int]],
        stop_tokens: Sequence[int],
        abstain_tokens: Sequence[int] = (),
    ) -> None:
        self.sequences = [list(s) for s in sequences if s]
        self.stop_tokens = list(stop_tokens)
        self.abstain_tokens = list(abstain_tokens)
        self.prompt_length: int | None = None
        # (sequence, position of the next token to copy) for every run the output matches.
        self.alive: list[tuple[int, int]] = []
        self.copied = 0  # tokens emitted so far
        self.logprobs: list[float] = []
        self.abstain_logprob: float | None = None
        self.best_first_logprob: float | None = None
        self._pending: dict[int, float] = {}  # log-probabilities at the previous step

    def allowed(self) -> set[int]:
        """The tokens the model may emit next."""
        if self.copied == 0:
            return {t for s in self.sequences for t in s}
        tokens = {self.sequences[s][p] for s, p in self.alive if p < len(self.sequences[s])}
        return tokens | set(self.stop_tokens)

    def advance(self, token: int) -> None:
        """The model emitted `token`: keep only the runs it continues."""
        if self.copied == 0:
            starts = [(s, p) for s, seq in enumerate(self.sequences) for p in range(len(seq))]
        else:
            starts = self.alive
        self.alive = [
            (s, p + 1)
            for s, p in starts
            if p < len(self.sequences[s]) and self.sequences[s][p] == token
        ]
        self.copied += 1

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.prompt_length is None:
            self.prompt_length = len(input_ids)
        elif len(input_ids) > self.prompt_length + self.copied:
            token = int(input_ids[-1])
            self.logprobs.append(self._pending.get(token, -math.inf))
            self.advance(token)
        allowed = np.fromiter(self.allowed(), dtype=np.int64)
        if allowed.size == 0:
            allowed = np.asarray(self.stop_tokens, dtype=np.int64)
        logits = np.asarray(scores, dtype=np.float32)
        top = float(logits.max())
        log_total = top + math.log(float(np.exp(logits - top).sum()))
        # The model's own log-probability of each token it may pick, kept for the next call.
        self._pending = {
            int(t): float(v) - log_total for t, v in zip(allowed, logits[allowed], strict=True)
        }
        if self.copied == 0:
            if self.abstain_tokens:
                self.abstain_logprob = float(logits[self.abstain_tokens].max()) - log_total
            self.best_first_logprob = max(self._pending.values())
        masked = np.full_like(logits, -np.inf)
        masked[allowed] = logits[allowed]
        return masked


@dataclass(frozen=True)
class Signals:
    """What the abstention decision looks at."""

    similarity: float  # cosine of the best retrieved passage to the question
    coverage: float  # share of the question's content words found in the evidence
    mean_logprob: float | None  # the model's mean log-probability of its answer tokens
    abstain_margin: float | None  # log p("unknown") minus log p(best copy start)
    supported: bool  # the answer is a copy of (or fully contained in) one evidence sentence


@dataclass(frozen=True)
class Thresholds:
    min_similarity: float
    min_coverage: float
    min_mean_logprob: float
    max_abstain_margin: float


def decline_reason(signals: Signals, thresholds: Thresholds) -> str | None:
    """Why the answer should be declined, or None to show it."""
    if signals.similarity < thresholds.min_similarity:
        return "similarity"
    if signals.coverage < thresholds.min_coverage:
        return "coverage"
    if not signals.supported:
        return "unsupported"
    if (
        signals.abstain_margin is not None
        and signals.abstain_margin > thresholds.max_abstain_margin
    ):
        return "model-abstained"
    if signals.mean_logprob is not None and signals.mean_logprob < thresholds.min_mean_logprob:
        return "low-confidence"
    return None
