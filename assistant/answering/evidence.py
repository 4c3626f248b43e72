"""Evidence for the model: the sentences of the retrieved passages that best match the
question, each with its neighbours, within a character budget. Prompt tokens are the cost
of an answer on a CPU, so the model reads these sentences, not whole chunks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# Sentence ends: . ! ? (optionally closed by a quote or bracket) then space and a capital,
# digit or opening quote. Abbreviations such as "e.g. the" (lower case next) do not split.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]?\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
# A paragraph: text up to a blank line. Single line breaks inside it (a PDF's wrapped lines)
# do not end a sentence.
_PARAGRAPH = re.compile(r"\S(?:.|\n(?![ \t\f\v\xa0]*\n))*")
_ABBREVIATION = re.compile(
    r"(?:\b(?:Dr|Mr|Mrs|Ms|Prof|St|Sr|Jr|No|Co|Inc|Ltd|vs|etc|Corp|Art|Sec)|\b[A-Z])\.$"
)
_WORD = re.compile(r"\w+")
_STOPWORDS_TEXT = """a an the of in on at to for from by with about as into over after before under
    between during and or but not no nor is are was were be been being am do does did
    has have had what which who whom whose when where why how that this these those it
    its their there they them he she his her him i you we our your my me can could would
    should will shall may might must than then so such also if one ones any some many
    much more most other yes"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


@dataclass(frozen=True)
class Evidence:
    """A run of sentences of one retrieved passage, with where it came from."""

    text: str
    passage: int  # index into the passages given to select_evidence
    start: int  # character offsets inside that passage's text
    end: int
    score: float = 0.0  # of its best sentence


def split_sentences(text: str, max_chars: int = 400) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text`, stripped; long ones cut at a space."""
    spans: list[tuple[int, int]] = []
    for block in _PARAGRAPH.finditer(text):
        start, body = block.start(), block.group()
        cuts = [
            m.start()
            for m in _SENTENCE_END.finditer(body)
            if not _ABBREVIATION.search(body[max(0, m.start() - 5) : m.start()])
        ] + [len(body)]
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


_ORDINAL = re.compile(r"^(\d+)(?:st|nd|rd|th)$")


def normalise_word(word: str) -> str:
    """Lower case, without a possessive or a plural s, so "Agreements" matches "agreement",
    and ordinals as numbers ("24th" matches "24")."""
    word = _ORDINAL.sub(r"\1", word.lower().removesuffix("'s").removesuffix("\u2019s"))
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def content_words(text: str) -> set[str]:
    return {normalise_word(w) for w in _WORD.findall(text) if w.lower() not in STOPWORDS}


def keyword_overlap(question: str, text: str) -> float:
    """The share of the question's content words that `text` contains (0 to 1)."""
    wanted = content_words(question)
    return len(wanted & content_words(text)) / len(wanted) if wanted else 0.0


def select_evidence(
    question: str,
    passages: Sequence[str],
    embedder: Embedder | None,
    *,
    count: int,
    window: int = 1,
    keyword_weight: float = 0.5,
    max_chars: int = 1400,
    contexts: Sequence[str] = (),
) -> list[Evidence]:
    """The `count` sentences that best match the question (MiniLM cosine of the sentence,
    prefixed with its passage's context, plus `keyword_weight` times keyword overlap), each
    widened by `window` neighbouring sentences of its passage, merged where they touch, in
    reading order (passage rank, then position), and cut to `max_chars` in score order.
    `count` 0 makes each whole passage one piece of evidence."""
    if count == 0:
        return [Evidence(text, index, 0, len(text)) for index, text in enumerate(passages)]
    sentences = [
        (index, start, end)
        for index, passage in enumerate(passages)
        for start, end in split_sentences(passage)
    ]
    if not sentences:
        return []
    texts = [passages[i][s:e] for i, s, e in sentences]
    scores = np.asarray([keyword_weight * keyword_overlap(question, t) for t in texts])
    if embedder is not None:
        shown = [
            f"{contexts[i]}: {t}" if i < len(contexts) and contexts[i] else t
            for (i, _, _), t in zip(sentences, texts, strict=True)
        ]
        vectors = np.asarray(embedder.embed([question, *shown]))
        scores = scores + vectors[1:] @ vectors[0]
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))[:count]
    runs: list[tuple[int, int, float]] = []  # (first sentence, last sentence, best score)
    covered: set[int] = set()
    budget = max_chars
    for best in ranked:
        passage = sentences[best][0]
        low = max(best - window, 0)
        high = min(best + window, len(sentences) - 1)
        while sentences[low][0] != passage:  # neighbours of the same passage only
            low += 1
        while sentences[high][0] != passage:
            high -= 1
        cost = sum(len(texts[i]) + 1 for i in range(low, high + 1) if i not in covered)
        if cost > budget and runs:
            continue
        budget -= cost
        covered.update(range(low, high + 1))
        runs.append((low, high, float(scores[best])))
    return [
        Evidence(
            passages[sentences[a][0]][sentences[a][1] : sentences[b][2]],
            sentences[a][0],
            sentences[a][1],
            sentences[b][2],
            score,
        )
        for a, b, score in _merge(sorted(runs), sentences)
    ]


def _merge(
    runs: list[tuple[int, int, float]], sentences: list[tuple[int, int, int]]
) -> list[tuple[int, int, float]]:
    """Join runs that overlap or touch inside one passage; a run keeps its best score."""
    merged: list[tuple[int, int, float]] = []
    for a, b, score in runs:
        if merged and a <= merged[-1][1] + 1 and sentences[a][0] == sentences[merged[-1][1]][0]:
            last_a, last_b, last_score = merged[-1]
            merged[-1] = (last_a, max(last_b, b), max(last_score, score))
        else:
            merged.append((a, b, score))
    return merged
