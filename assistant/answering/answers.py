"""What the answerer produces: the answer with its citations and the events of its stream."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from assistant.errors import InvalidInput
from assistant.retrieval import Passage

DECLINE_TEXT = "Your documents do not contain an answer to this question."


@dataclass(frozen=True)
class Citation:
    number: int
    passage: Passage
    # The sentence of the passage that supports the answer, offsets into the document text.
    sentence_start: int
    sentence_end: int

    @property
    def sentence(self) -> str:
        offset = self.passage.start
        return self.passage.text[self.sentence_start - offset : self.sentence_end - offset]

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            **self.passage.to_dict(),
            "sentence": self.sentence,
            "sentence_start": self.sentence_start,
            "sentence_end": self.sentence_end,
        }


@dataclass
class Answer:
    question: str
    text: str
    declined: bool
    citations: list[Citation] = field(default_factory=list)
    # When declined: the closest passages, offered as "you may want to look at".
    suggestions: list[Passage] = field(default_factory=list)
    model: str = ""
    route: str = "small"  # which model answered: "small" or "large"
    routed: bool = False  # the small model's answer was not confident; the large one answered
    confidence: float | None = None  # calibrated probability that the answer is right
    first_token_seconds: float | None = None  # the first verified text (or the decline)
    model_first_token_seconds: float | None = None  # the model's own first token
    total_seconds: float = 0.0
    decline_reason: str | None = None
    signals: dict[str, Any] = field(default_factory=dict)
    # Every passage retrieval returned (inside the reader's collections), for the audit log.
    retrieved: list[Passage] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # sentences removed as unsupported
    draft: str = ""  # when declined: what the model wrote (withheld), for the audit log
    # What retrieval searched for: the question itself, or a follow-up with the earlier
    # question it leans on (answering.followup).
    resolved_question: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "resolved_question": self.resolved_question or self.question,
            "answer": self.text,
            "declined": self.declined,
            "citations": [c.to_dict() for c in self.citations],
            "suggestions": [p.to_dict() for p in self.suggestions],
            "model": self.model,
            "route": self.route,
            "routed": self.routed,
            "confidence": None if self.confidence is None else round(self.confidence, 3),
            "first_token_seconds": self.first_token_seconds,
            "total_seconds": round(self.total_seconds, 3),
        }


@dataclass(frozen=True)
class Retrieved:
    passages: list[Passage]
    resolved_question: str = ""  # what was searched for (see Answer.resolved_question)


@dataclass(frozen=True)
class Status:
    text: str


@dataclass(frozen=True)
class Text:
    text: str  # a verified sentence with its marker, e.g. " It opened in 1962 [2]."
    citations: list[Citation]  # the citations it introduces


Event = Retrieved | Status | Text | Answer


def validate_question(question: object, max_chars: int) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InvalidInput("the question is empty")
    question = question.strip()
    if len(question) > max_chars:
        raise InvalidInput(f"the question is {len(question)} characters; the limit is {max_chars}")
    return question


def retrieved_details(passages: Sequence[Passage]) -> list[dict[str, Any]]:
    return [
        {
            "document_id": p.document_id,
            "document_sha256": p.document_sha256,
            "chunk_id": p.chunk_id,
            "score": round(p.score, 6),
            "similarity": round(p.similarity, 6),
        }
        for p in passages
    ]
