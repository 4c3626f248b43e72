"""The answerer: retrieve, pick the evidence, let the small model answer, check each sentence
against the passage it cites, and decide with the calibrated confidence whether to show it,
hand the question to the larger model, or say "not found" with the closest passages.

`Answerer.stream` yields events: `Retrieved` (before any text, so the caller can audit the
question and its passages first), `Status`, `Text` (verified sentences, each ending with its
citation marker) and, last, the `Answer`."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from assistant.answering.answers import (
    DECLINE_TEXT,
    Answer,
    Citation,
    Event,
    Retrieved,
    Status,
    Text,
    retrieved_details,
    validate_question,
)
from assistant.answering.calibration import probability, rounded, signals
from assistant.answering.evidence import Embedder, Evidence, select_evidence
from assistant.answering.followup import Asked, Exchange, resolve
from assistant.answering.generation import Generator
from assistant.answering.prompts import DECLINE_MARKER, Prompt, build_prompt
from assistant.answering.verification import (
    Checked,
    Support,
    answer_sentences,
    check_sentence,
    with_reason,
)
from assistant.retrieval import Passage, Retriever
from assistant.settings import Settings

Supported = tuple[int, int, int]  # supporting sentence(s): passage index, start, end


@dataclass
class _Draft:
    """One model's attempt: its checked sentences, signals and confidence."""

    route: str
    model: str
    kept: list[Checked] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    signals: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.0
    first_token: float | None = None
    model_declined: bool = False


class Answerer:
    def __init__(
        self,
        settings: Settings,
        retriever: Retriever,
        generator: Generator,
        large: Generator | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings
        self.retriever = retriever
        self.generator = generator
        self.large = large
        # Scores evidence sentences; by default the retriever's own embedding model.
        self.embedder = embedder if embedder is not None else getattr(retriever, "embedder", None)

    def ask(
        self,
        question: str,
        collections: Sequence[str] | None = None,
        history: Sequence[Exchange] = (),
    ) -> Answer:
        for event in self.stream(question, collections, history):
            if isinstance(event, Answer):
                return event
        raise AssertionError("the answer stream ended without an answer")

    def stream(
        self,
        question: str,
        collections: Sequence[str] | None = None,
        history: Sequence[Exchange] = (),
        mode: str | None = None,
    ) -> Iterator[Event]:
        """The answer's events; the Answer's first_token_seconds is when its first verified
        text was ready (or the decline, when there is none). `history`: the conversation's
        earlier turns, oldest first, that a follow-up question is resolved from. `mode`
        overrides the routing setting for this question ("always": regenerate with the
        larger model)."""
        started = time.perf_counter()
        first: float | None = None
        question = validate_question(question, self.settings.limits.max_question_chars)
        asked = resolve(question, history)
        for event in self._events(asked, collections, started, mode):
            if isinstance(event, Text) and first is None:
                first = time.perf_counter() - started
            if isinstance(event, Answer):
                event.first_token_seconds = first if first is not None else event.total_seconds
                event.resolved_question = asked.resolved
            yield event

    def _events(
        self, asked: Asked, collections: Sequence[str] | None, started: float, mode: str | None
    ) -> Iterator[Event]:
        config = self.settings.answering
        question = asked.question
        found = self.retriever.search(asked.resolved, self.settings.retrieval.top_k, collections)
        yield Retrieved(found, asked.resolved)
        # Only passages above the relevance floor reach the model; none means "not found".
        passages = [p for p in found if p.similarity >= self.settings.retrieval.min_score]
        # The sentences that answer what is asked now, among the passages found for the
        # question with its context (a follow-up's earlier question would pull in its topic).
        evidence = select_evidence(
            question,
            [p.text for p in passages],
            self.embedder,
            count=config.evidence_sentences,
            window=config.evidence_window,
            keyword_weight=config.keyword_weight,
            max_chars=config.evidence_chars,
            contexts=[p.context for p in passages],
        )
        if not evidence:
            yield self._declined(question, found, passages, started, "no-passage", None)
            return
        base = {
            "similarity": max(p.similarity for p in passages),
            "evidence": max(e.score for e in evidence),
        }
        mode = (mode or self.settings.routing.mode) if self.large is not None else "off"
        if mode == "always" and self.large is not None:
            draft = self._complete(self.large, "large", asked, passages, evidence, base, started)
            yield from self._finish(question, found, passages, draft, started, False)
            return
        draft = _Draft("small", self.generator.name)
        shown: list[Citation] = []
        for event in self._gated(draft, asked, passages, evidence, base, mode, started):
            if isinstance(event, Text):
                shown.extend(event.citations)
            yield event
        if draft.kept and shown:  # the small model's answer was shown as it was written
            yield self._answered(question, found, passages, draft, started, False)
            return
        if mode == "auto" and self.large is not None and not draft.model_declined:
            yield Status(f"checking with the larger model ({getattr(self.large, 'title', '')})")
            large = self._complete(self.large, "large", asked, passages, evidence, base, started)
            large.signals["small_confidence"] = round(draft.confidence, 4)
            # What the small model said and why it was overruled, for the audit log and
            # for fitting its calibrator on the questions it handed on.
            large.signals["small"] = {
                "draft": " ".join(c.text for c in draft.kept),
                **{k: rounded(v) for k, v in draft.signals.items()},
            }
            yield from self._finish(question, found, passages, large, started, True)
            return
        yield from self._finish(question, found, passages, draft, started, False)

    # -- the small model, shown sentence by sentence once the first one is trusted ----------
    def _gated(
        self,
        draft: _Draft,
        asked: Asked,
        passages: list[Passage],
        evidence: list[Evidence],
        base: dict[str, float],
        mode: str,
        started: float,
    ) -> Iterator[Text]:
        config = self.settings.answering
        prompt = _prompt(asked, passages, evidence, config.max_answer_tokens)
        # Words of the question (and of the one a follow-up leans on) are not new in an answer.
        question = asked.resolved
        pieces = iter(self.generator.stream(prompt))
        text, done, decided = "", False, False
        numbers: dict[Supported, int] = {}
        try:
            while not done:
                piece = next(pieces, None)
                if piece is None:
                    done = True
                    text = with_reason(text, question, evidence)
                else:
                    if draft.first_token is None:
                        draft.first_token = time.perf_counter() - started
                    text += piece
                sentences = answer_sentences(text)
                complete = sentences if done else sentences[:-1]
                if not decided and complete:
                    if _is_marker(text):
                        draft.model_declined = True
                        return
                    first = check_sentence(complete[0], question, evidence)
                    draft.signals = signals(base, prompt.trace, [first], evidence, asked.question)
                    draft.confidence = self._confidence("small", draft.signals)
                    threshold = config.route_threshold if mode == "auto" else 0.0
                    if draft.confidence < max(threshold, config.answer_threshold):
                        draft.kept = [first] if first.supported(config.min_support) else []
                        return
                    decided = True
                if decided:
                    for sentence in complete[len(draft.kept) + len(draft.dropped) :]:
                        checked = check_sentence(sentence, question, evidence)
                        if not checked.supported(config.min_support):
                            draft.dropped.append(sentence)
                            continue
                        draft.kept.append(checked)
                        yield self._text(checked, passages, numbers, len(draft.kept) == 1)
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()  # stops generation when the small model is overruled

    def _text(
        self, checked: Checked, passages: list[Passage], numbers: dict[Supported, int], first: bool
    ) -> Text:
        """The sentence as shown, ending with the marker of each passage it cites."""
        new: list[Citation] = []
        # One number per supporting span, not per passage: each [n] opens the very sentence(s)
        # that support the sentence it ends, even when one passage supports two of them.
        keys: list[Supported] = []
        for passage in dict.fromkeys(support.passage for support in checked.supports):
            spans = [s for s in checked.supports if s.passage == passage]
            key = (passage, *_span(spans))
            if key not in numbers:
                numbers[key] = len(numbers) + 1
                new.append(_citation(numbers[key], passages[passage], spans))
            keys.append(key)
        markers = "".join(f"[{numbers[k]}]" for k in keys)
        body = checked.text.rstrip()
        end = body[-1] if body and body[-1] in ".!?" else ""
        body = body[:-1] if end else body
        return Text(f"{'' if first else ' '}{body} {markers}{end}", new)

    # -- the large model: the whole answer, then its checks ---------------------------------
    def _complete(
        self,
        generator: Generator,
        route: str,
        asked: Asked,
        passages: list[Passage],
        evidence: list[Evidence],
        base: dict[str, float],
        started: float,
    ) -> _Draft:
        config = self.settings.answering
        prompt = _prompt(asked, passages, evidence, config.max_answer_tokens)
        question = asked.resolved
        draft = _Draft(route, generator.name)
        text = ""
        for piece in generator.stream(prompt):
            if draft.first_token is None:
                draft.first_token = time.perf_counter() - started
            text += piece
        if _is_marker(text):
            draft.model_declined = True
            return draft
        text = with_reason(text, question, evidence)
        checked = [check_sentence(s, question, evidence) for s in answer_sentences(text)]
        draft.kept = [c for c in checked if c.supported(config.min_support)]
        draft.dropped = [c.text for c in checked if not c.supported(config.min_support)]
        draft.signals = signals(base, prompt.trace, checked[:1], evidence, asked.question)
        if config.judge:
            draft.signals["judge"] = generator.judge(prompt, text)
        draft.confidence = self._confidence(route, draft.signals)
        return draft

    def _finish(
        self,
        question: str,
        found: list[Passage],
        passages: list[Passage],
        draft: _Draft,
        started: float,
        routed: bool,
    ) -> Iterator[Text | Answer]:
        config = self.settings.answering
        if draft.model_declined or not draft.kept or draft.confidence < config.answer_threshold:
            reason = (
                "model" if draft.model_declined
                else "unsupported" if not draft.kept
                else "low-confidence"
            )  # fmt: skip
            answer = self._declined(question, found, passages, started, reason, draft)
            answer.routed = routed
            yield answer
            return
        numbers: dict[Supported, int] = {}
        for index, checked in enumerate(draft.kept):
            yield self._text(checked, passages, numbers, index == 0)
        yield self._answered(question, found, passages, draft, started, routed)

    def _answered(
        self,
        question: str,
        found: list[Passage],
        passages: list[Passage],
        draft: _Draft,
        started: float,
        routed: bool,
    ) -> Answer:
        numbers: dict[Supported, int] = {}
        pieces = [self._text(c, passages, numbers, i == 0) for i, c in enumerate(draft.kept)]
        elapsed = time.perf_counter() - started
        return Answer(
            question=question,
            text="".join(p.text for p in pieces),
            declined=False,
            citations=[c for p in pieces for c in p.citations],
            model=draft.model,
            route=draft.route,
            routed=routed,
            confidence=draft.confidence,
            model_first_token_seconds=draft.first_token,
            total_seconds=elapsed,
            signals=draft.signals,
            retrieved=found,
            dropped=draft.dropped,
        )

    def _confidence(self, route: str, signals: dict[str, Any]) -> float:
        calibration = self.settings.answering.calibration[route]
        return probability(signals, calibration.weights, calibration.intercept)

    def _declined(
        self,
        question: str,
        found: list[Passage],
        passages: list[Passage],
        started: float,
        reason: str,
        draft: _Draft | None,
    ) -> Answer:
        elapsed = time.perf_counter() - started
        return Answer(
            question=question,
            text=DECLINE_TEXT,
            declined=True,
            suggestions=passages[:3],
            model=draft.model if draft else self.generator.name,
            route=draft.route if draft else "small",
            confidence=draft.confidence if draft else None,
            total_seconds=elapsed,
            decline_reason=reason,
            signals=draft.signals if draft else {},
            retrieved=found,
            dropped=draft.dropped if draft else [],
            draft=" ".join(c.text for c in draft.kept) if draft else "",
        )

    def audit_details(self, answer: Answer, collections: Sequence[str] | None) -> dict[str, Any]:
        """What the audit log keeps about an answer: enough to replay exactly what was
        retrieved (document version, chunk, score), produced it and was answered."""
        generator = self.large if answer.route == "large" and self.large else self.generator
        return {
            "question": answer.question,
            "resolved_question": answer.resolved_question,
            "collections": None if collections is None else sorted(collections),
            "retrieved": retrieved_details(answer.retrieved),
            "cited": [
                {
                    "chunk_id": c.passage.chunk_id,
                    "sentence_start": c.sentence_start,
                    "sentence_end": c.sentence_end,
                }
                for c in answer.citations
            ],
            "answer": answer.text,
            "declined": answer.declined,
            "decline_reason": answer.decline_reason,
            "dropped": answer.dropped,
            "withheld": answer.draft,
            "route": answer.route,
            "routed": answer.routed,
            "confidence": None if answer.confidence is None else round(answer.confidence, 4),
            "signals": {k: rounded(v) for k, v in answer.signals.items()},
            **generator.fingerprint(),
            "answering": self.settings.answering.model_dump(mode="json", exclude={"calibration"}),
        }


def _prompt(
    asked: Asked, passages: list[Passage], evidence: list[Evidence], max_tokens: int
) -> Prompt:
    """One numbered source per passage (its evidence runs joined), labelled once with the
    passage's document title and section: labels are prompt tokens too."""
    runs: dict[int, list[str]] = {}
    for item in evidence:
        runs.setdefault(item.passage, []).append(item.text)
    return build_prompt(
        asked.question,
        [" … ".join(texts) for texts in runs.values()],
        [passages[index].context for index in runs],
        max_tokens,
        [(turn.question, turn.answer) for turn in asked.history],
    )


def _is_marker(text: str) -> bool:
    return text.strip().upper().startswith(DECLINE_MARKER)


def _span(spans: list[Support]) -> tuple[int, int]:
    """Where the supporting sentence(s) of one passage start and end, inside its text."""
    return min(s.start for s in spans), max(s.end for s in spans)


def _citation(number: int, passage: Passage, spans: list[Support]) -> Citation:
    """The passage, with the supporting sentence(s) in it as offsets into the document."""
    start, end = _span(spans)
    return Citation(number, passage, passage.start + start, passage.start + end)
