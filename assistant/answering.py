"""Answer a question from retrieved passages, with numbered citations, or decline honestly."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from assistant.errors import InvalidInput
from assistant.generation import Generator, Prompt
from assistant.grounding import (
    Embedder,
    Evidence,
    Signals,
    Thresholds,
    decline_reason,
    keyword_overlap,
    select_evidence,
    supporting_evidence,
)
from assistant.retrieval import Passage, Retriever
from assistant.settings import Settings

DECLINE_TEXT = "Your documents do not contain an answer to this question."
_CITATION = re.compile(r"\[(\d{1,2})\]")
_NOT_FOUND = re.compile(
    r"^\W*(not found|unknown|none|n/?a|i don'?t know|no answer)\W*$", re.IGNORECASE
)


@dataclass(frozen=True)
class Citation:
    number: int
    passage: Passage

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, **self.passage.to_dict()}


@dataclass
class Answer:
    question: str
    text: str
    declined: bool
    citations: list[Citation] = field(default_factory=list)
    # When declined: the closest passages, offered as "you may want to look at".
    suggestions: list[Passage] = field(default_factory=list)
    model: str = ""
    first_token_seconds: float | None = None
    total_seconds: float = 0.0
    # Why it was declined (see grounding.decline_reason), and the signals it was decided on.
    decline_reason: str | None = None
    signals: dict[str, Any] = field(default_factory=dict)
    # Every passage retrieval returned (inside the reader's collections), for the audit log.
    retrieved: list[Passage] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.text,
            "declined": self.declined,
            "citations": [c.to_dict() for c in self.citations],
            "suggestions": [p.to_dict() for p in self.suggestions],
            "model": self.model,
            "first_token_seconds": self.first_token_seconds,
            "total_seconds": round(self.total_seconds, 3),
        }


def validate_question(question: object, max_chars: int) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InvalidInput("the question is empty")
    question = question.strip()
    if len(question) > max_chars:
        raise InvalidInput(f"the question is {len(question)} characters; the limit is {max_chars}")
    return question


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def attach_citations(text: str, passages: list[Passage]) -> tuple[str, list[Citation]]:
    """Map [n] markers to passages. An answer without a marker is attributed to the passage
    that shares most of its words, and the marker is added, so every answer cites a source."""
    numbers = [int(n) for n in _CITATION.findall(text) if 1 <= int(n) <= len(passages)]
    text = _CITATION.sub(
        lambda m: m.group(0) if 1 <= int(m.group(1)) <= len(passages) else "", text
    )
    if not numbers and passages:
        words = _words(text)
        best = max(range(len(passages)), key=lambda i: (len(words & _words(passages[i].text)), -i))
        numbers = [best + 1]
        text = f"{text.rstrip()} [{best + 1}]"
    unique = list(dict.fromkeys(numbers))
    return text.strip(), [Citation(n, passages[n - 1]) for n in unique]


class Answerer:
    def __init__(
        self,
        settings: Settings,
        retriever: Retriever,
        generator: Generator,
        embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings
        self.retriever = retriever
        self.generator = generator
        # Scores evidence sentences; by default the retriever's own embedding model.
        self.embedder = embedder if embedder is not None else getattr(retriever, "embedder", None)

    @property
    def thresholds(self) -> Thresholds:
        g = self.settings.grounding
        return Thresholds(
            min_similarity=g.min_similarity,
            min_coverage=g.min_coverage,
            min_mean_logprob=g.min_mean_logprob,
            max_abstain_margin=g.max_abstain_margin,
        )

    def stream(
        self, question: str, collections: Sequence[str] | None = None
    ) -> Iterator[str | Answer]:
        """Yield answer text as it is generated, then the final Answer."""
        started = time.perf_counter()
        grounding = self.settings.grounding
        question = validate_question(question, self.settings.limits.max_question_chars)
        found = self.retriever.search(question, self.settings.retrieval.top_k, collections)
        # Only passages above the relevance threshold reach the model; none means "not found".
        passages = [p for p in found if p.similarity >= self.settings.retrieval.min_score]
        if not passages:
            yield self._declined(question, found, found, started, reason="similarity")
            return
        evidence = select_evidence(
            question,
            [p.text for p in passages],
            self.embedder,
            grounding.evidence_sentences,
            grounding.keyword_weight,
        )
        signals = {
            "similarity": max(p.similarity for p in passages),
            "coverage": keyword_overlap(question, " ".join(e.text for e in evidence)),
        }
        early = decline_reason(
            Signals(signals["similarity"], signals["coverage"], None, None, True), self.thresholds
        )
        if early is not None or not evidence:
            yield self._declined(question, passages, found, started, reason=early or "no-evidence")
            return
        prompt = Prompt(
            [e.text for e in evidence],
            question,
            extractive=grounding.constrain,
            max_tokens=grounding.max_answer_tokens,
        )
        pieces: list[str] = []
        first_token: float | None = None
        for piece in self.generator.stream(prompt):
            if first_token is None:
                first_token = time.perf_counter() - started
            pieces.append(piece)
            yield piece
        raw = _CITATION.sub("", "".join(pieces)).strip().rstrip(".").strip()
        trace = prompt.trace
        if trace.logprobs:
            signals["mean_logprob"] = sum(trace.logprobs) / len(trace.logprobs)
        if trace.abstain_margin is not None:
            signals["abstain_margin"] = trace.abstain_margin
        if not raw or _NOT_FOUND.match(raw):
            yield self._declined(question, passages, found, started, first_token, "model", signals)
            return
        best, share = supporting_evidence(raw, evidence)
        signals["support"] = share
        reason = decline_reason(
            Signals(
                similarity=signals["similarity"],
                coverage=signals["coverage"],
                mean_logprob=signals.get("mean_logprob"),
                abstain_margin=signals.get("abstain_margin"),
                supported=best is not None and share >= grounding.min_support,
            ),
            self.thresholds,
        )
        if reason is not None or best is None:
            yield self._declined(
                question, passages, found, started, first_token, reason or "unsupported", signals
            )
            return
        text, citations = self._cite(raw, evidence[best], passages)
        yield Answer(
            question=question,
            text=text,
            declined=False,
            citations=citations,
            model=self.generator.name,
            first_token_seconds=first_token,
            total_seconds=time.perf_counter() - started,
            signals=signals,
            retrieved=found,
        )

    @staticmethod
    def _cite(raw: str, evidence: Evidence, passages: list[Passage]) -> tuple[str, list[Citation]]:
        """The answer cites the passage holding the evidence sentence that supports it."""
        return f"{raw} [1]", [Citation(1, passages[evidence.passage])]

    def audit_details(self, answer: Answer, collections: Sequence[str] | None) -> dict[str, Any]:
        """What the audit log keeps about a question: enough to replay exactly what was
        retrieved (document version, chunk, score), produced it and was answered."""
        return {
            "question": answer.question,
            "collections": None if collections is None else sorted(collections),
            "retrieved": [
                {
                    "document_id": p.document_id,
                    "document_sha256": p.document_sha256,
                    "chunk_id": p.chunk_id,
                    "score": round(p.score, 6),
                    "similarity": round(p.similarity, 6),
                }
                for p in answer.retrieved
            ],
            "cited": [c.passage.chunk_id for c in answer.citations],
            "answer": answer.text,
            "declined": answer.declined,
            "decline_reason": answer.decline_reason,
            **self.generator.fingerprint(),
            "grounding": self.settings.grounding.model_dump(),
        }

    def ask(self, question: str, collections: Sequence[str] | None = None) -> Answer:
        for event in self.stream(question, collections):
            if isinstance(event, Answer):
                return event
        raise AssertionError("the answer stream ended without an answer")

    def _declined(
        self,
        question: str,
        passages: list[Passage],
        retrieved: list[Passage],
        started: float,
        first: float | None = None,
        reason: str | None = None,
        signals: dict[str, Any] | None = None,
    ) -> Answer:
        elapsed = time.perf_counter() - started
        return Answer(
            question=question,
            text=DECLINE_TEXT,
            declined=True,
            suggestions=passages,
            model=self.generator.name,
            first_token_seconds=first if first is not None else elapsed,
            total_seconds=elapsed,
            decline_reason=reason,
            signals=signals or {},
            retrieved=retrieved,
        )
