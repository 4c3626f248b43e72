"""Checking an answer against its sources before it is shown: each sentence must have its
new words (those not already in the question) in one evidence sentence, or in two evidence
sentences together, which become its citations. Unsupported sentences are dropped."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from assistant.answering.evidence import Evidence, content_words, keyword_overlap, split_sentences

_MARKER = re.compile(r"\s*\[\d{1,2}\]")


@dataclass(frozen=True)
class Support:
    """A sentence of a retrieved passage, offsets inside that passage's text."""

    passage: int
    start: int
    end: int


@dataclass(frozen=True)
class Checked:
    """One sentence of the answer and the evidence sentences that support it."""

    text: str
    share: float  # of its new words found in the supporting sentences (1.0: all)
    supports: list[Support] = field(default_factory=list)

    def supported(self, minimum: float) -> bool:
        return bool(self.supports) and self.share >= minimum


def strip_markers(text: str) -> str:
    return _MARKER.sub("", text).strip()


def answer_sentences(text: str) -> list[str]:
    """The answer's sentences, without citation markers; a sentence with no content word of
    its own ("Yes.") is joined to the next one, so it is checked with it."""
    clean = strip_markers(text)
    pieces = [clean[s:e] for s, e in split_sentences(clean, max_chars=1000)]
    joined: list[str] = []
    carry = ""
    for piece in pieces:
        if not content_words(piece):
            carry = f"{carry}{piece} "
            continue
        joined.append(carry + piece)
        carry = ""
    if carry.strip():
        if joined:
            joined[-1] = f"{joined[-1]} {carry.strip()}"
        else:
            joined.append(carry.strip())
    return joined


def _units(evidence: Sequence[Evidence]) -> list[tuple[Support, set[str]]]:
    """Each evidence sentence with its content words."""
    units = []
    for item in evidence:
        for s, e in split_sentences(item.text):
            words = content_words(item.text[s:e])
            units.append((Support(item.passage, item.start + s, item.start + e), words))
    return units


def check_sentence(sentence: str, question: str, evidence: Sequence[Evidence]) -> Checked:
    """The evidence sentence holding most of `sentence`'s new words; failing full support,
    it and the next best sentence that adds some of the rest. A sentence that only repeats
    the question's words is checked on all its words."""
    words = content_words(sentence)
    new = words - content_words(question) or words
    units = _units(evidence)
    if not new or not units:
        return Checked(sentence, 0.0)
    ranked = sorted(units, key=lambda unit: -len(new & unit[1]))
    best, best_words = ranked[0]
    share = len(new & best_words) / len(new)
    if share == 0:
        return Checked(sentence, 0.0)
    if share < 1.0:
        for other, other_words in ranked[1:]:
            gain = (new & other_words) - best_words
            joint = len(new & (best_words | other_words)) / len(new)
            if gain and joint > share:
                return Checked(sentence, joint, [best, other])
    return Checked(sentence, share, [best])


def check_answer(text: str, question: str, evidence: Sequence[Evidence]) -> list[Checked]:
    return [check_sentence(s, question, evidence) for s in answer_sentences(text)]


def with_reason(text: str, question: str, evidence: Sequence[Evidence]) -> str:
    """A bare "Yes." or "No." cannot be checked, and tells the reader nothing to check: it is
    completed with the evidence sentence that shares most words with the question, so the
    answer says why (and cites it) instead of being dropped as unsupported."""
    bare = strip_markers(text).strip()
    if bare.rstrip(".!").lower() not in {"yes", "no"}:
        return text
    sentences = [item.text[s:e] for item in evidence for s, e in split_sentences(item.text)]
    if not sentences:
        return text
    best = max(sentences, key=lambda sentence: keyword_overlap(question, sentence))
    return f"{bare} {best}"
