"""Grounding: evidence selection, the copy constraint, the support check and the
"I don't know" decision. Pure logic is tested fast; the support check and the decision
are also tested against real retrieval and the real default model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from assistant.answering import DECLINE_TEXT, Answer
from assistant.embedding import HashingEmbedder
from assistant.generation import FEW_SHOT_PREFIX, Prompt
from assistant.grounding import (
    Evidence,
    Signals,
    SpanConstraint,
    Thresholds,
    decline_reason,
    keyword_overlap,
    select_evidence,
    split_sentences,
    supporting_evidence,
)
from assistant.services import Services

HANDBOOK = """# Field station handbook

The Marrow Fen field station was founded in 1958 by the botanist Ilse Brandt. It sits on a
raised peat bog two kilometres north of the village of Cray.

The station keeps a herbarium of about 12,000 pressed specimens. Visiting researchers must
book a bench at least three weeks in advance through the station manager.

Water samples are taken every Tuesday from the four monitoring wells. The results are sent to
the regional water board in Dunmore.
"""


def _spans(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]


def test_sentences_split_at_full_stops_but_not_inside_abbreviations() -> None:
    text = "Dr. Brandt founded it in 1958. It has e.g. ferns and mosses. Is it open? Yes!"
    assert _spans(text) == [
        "Dr. Brandt founded it in 1958.",
        "It has e.g. ferns and mosses.",
        "Is it open?",
        "Yes!",
    ]


def test_sentence_spans_are_offsets_into_the_text_and_lines_split() -> None:
    text = "# Title\n\nFirst one here.  Second one.\nThird"
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == ["# Title", "First one here.", "Second one.", "Third"]


def test_a_very_long_sentence_is_cut_at_spaces() -> None:
    text = " ".join(["word"] * 300)
    pieces = _spans(text)
    assert len(pieces) > 1
    assert all(len(p) <= 400 for p in pieces)
    assert " ".join(pieces) == text


def test_keyword_overlap_ignores_stopwords_and_case() -> None:
    assert keyword_overlap("Who founded the station?", "The STATION was founded in 1958") == 1.0
    assert keyword_overlap("Who founded the station?", "A bog near Cray") == 0.0
    assert keyword_overlap("what is it", "anything") == 0.0  # no content words at all


def test_evidence_keeps_the_best_sentences_in_reading_order_with_their_passage() -> None:
    passages = [
        "Water samples are taken every Tuesday. The results go to Dunmore.",
        "The station was founded in 1958 by Ilse Brandt. It sits on a bog.",
    ]
    chosen = select_evidence(
        "Who founded the station?", passages, HashingEmbedder(), count=2, keyword_weight=0.5
    )
    assert len(chosen) == 2
    founded = [e for e in chosen if "founded" in e.text]
    assert founded and founded[0].passage == 1
    item = founded[0]
    assert passages[item.passage][item.start : item.end] == item.text
    assert chosen == sorted(chosen, key=lambda e: (e.passage, e.start))


def test_support_check_finds_the_sentence_an_answer_was_copied_from() -> None:
    evidence = [
        Evidence("It sits on a raised peat bog.", 0, 0, 29),
        Evidence("It was founded in 1958 by Ilse Brandt.", 1, 0, 38),
    ]
    assert supporting_evidence("Ilse Brandt", evidence) == (1, 1.0)
    assert supporting_evidence("raised peat bog", evidence) == (0, 1.0)
    index, share = supporting_evidence("Ilse Brandt of Vienna", evidence)
    assert index == 1 and share == 0.5
    assert supporting_evidence("Jupiter", evidence) == (None, 0.0)
    assert supporting_evidence("", evidence) == (None, 0.0)


class _Tokens:
    """A tiny vocabulary for the constraint: 0..9 words, 10 newline, 11 end, 12 unknown."""

    NEWLINE, END, UNKNOWN, SIZE = 10, 11, 12, 16


def _step(constraint: SpanConstraint, history: list[int], preferred: list[int]) -> int:
    """One greedy step: the model prefers tokens in `preferred` order; returns the choice."""
    scores = np.full(_Tokens.SIZE, -5.0, dtype=np.float32)
    for rank, token in enumerate(preferred):
        scores[token] = 10.0 - rank
    masked = constraint(np.asarray(history, dtype=np.intc), scores)
    return int(np.argmax(masked))


def _allowed(constraint: SpanConstraint, history: list[int]) -> set[int]:
    masked = constraint(np.asarray(history, dtype=np.intc), np.zeros(_Tokens.SIZE, np.float32))
    return {int(t) for t in np.flatnonzero(np.isfinite(masked))}


def test_constraint_only_lets_the_model_copy_a_contiguous_span() -> None:
    constraint = SpanConstraint(
        [[1, 2, 3, 4], [5, 2, 6]], [_Tokens.NEWLINE, _Tokens.END], [_Tokens.UNKNOWN]
    )
    history = [9, 9, 9]  # the prompt
    # The model wants "unknown" or a token not in the evidence; it must start a copy.
    first = _step(constraint, history, [_Tokens.UNKNOWN, 7, 2])
    assert first == 2
    assert constraint.abstain_logprob is not None and constraint.best_first_logprob is not None
    assert constraint.abstain_logprob > constraint.best_first_logprob
    history.append(first)
    # After 2 the evidence continues with 3 (first sequence) or 6 (second); 4 is not allowed.
    assert _allowed(constraint, history) == {3, 6, _Tokens.NEWLINE, _Tokens.END}
    second = _step(constraint, history, [4, 6])
    assert second == 6
    history.append(second)
    # The second sequence ends: only stopping is left.
    assert _allowed(constraint, history) == {_Tokens.NEWLINE, _Tokens.END}
    assert _step(constraint, history, [1, 5, _Tokens.NEWLINE]) == _Tokens.NEWLINE
    assert len(constraint.logprobs) == 2
    assert all(lp <= 0 for lp in constraint.logprobs)


def test_constraint_logprobs_are_the_models_own_unconstrained_ones() -> None:
    constraint = SpanConstraint([[1, 2]], [_Tokens.NEWLINE])
    scores = np.zeros(_Tokens.SIZE, dtype=np.float32)
    scores[5] = 3.0  # the model would rather say 5, which is not in the evidence
    constraint(np.asarray([9], dtype=np.intc), scores)
    constraint(np.asarray([9, 1], dtype=np.intc), scores)
    expected = 0.0 - (3.0 + math.log(1 + (_Tokens.SIZE - 1) * math.exp(-3.0)))
    assert constraint.logprobs == [pytest.approx(expected)]


THRESHOLDS = Thresholds(
    min_similarity=0.3, min_coverage=0.5, min_mean_logprob=-2.0, max_abstain_margin=0.0
)


@pytest.mark.parametrize(
    ("signals", "reason"),
    [
        (Signals(0.7, 1.0, -0.5, -3.0, True), None),
        (Signals(0.2, 1.0, -0.5, -3.0, True), "similarity"),
        (Signals(0.7, 0.3, -0.5, -3.0, True), "coverage"),
        (Signals(0.7, 1.0, -0.5, -3.0, False), "unsupported"),
        (Signals(0.7, 1.0, -0.5, 1.0, True), "model-abstained"),
        (Signals(0.7, 1.0, -4.0, -3.0, True), "low-confidence"),
        (Signals(0.7, 1.0, None, None, True), None),  # a model without signals: retrieval only
    ],
)
def test_decline_decision(signals: Signals, reason: str | None) -> None:
    assert decline_reason(signals, THRESHOLDS) == reason


def test_the_few_shot_prefix_comes_first_and_never_changes() -> None:
    one = Prompt(["A sentence."], "First question?").completion_text()
    two = Prompt(["Another one."], "Second question?").completion_text()
    assert one.startswith(FEW_SHOT_PREFIX) and two.startswith(FEW_SHOT_PREFIX)
    assert one.endswith("Question: First question?\nAnswer:")


def test_fake_pipeline_cites_the_passage_of_the_supporting_sentence(
    fake_services: Services,
) -> None:
    services = fake_services
    services.documents.ingest(services.documents.add("handbook.md", HANDBOOK.encode()).id)
    answer = services.answerer.ask("Who founded the Marrow Fen field station?")
    assert not answer.declined, answer.decline_reason
    assert answer.text.endswith("[1]")
    cited = answer.citations[0].passage
    assert answer.text.removesuffix("[1]").strip() in cited.text


# -- Real retrieval, real embedding model and the real default GGUF model. --


def _ingest(services: Services) -> None:
    services.documents.ingest(services.documents.add("handbook.md", HANDBOOK.encode()).id)


@pytest.mark.slow
def test_real_answer_is_a_copied_span_supported_by_its_cited_passage(services: Services) -> None:
    _ingest(services)
    events = list(services.answerer.stream("When was the Marrow Fen field station founded?"))
    answer = events[-1]
    assert isinstance(answer, Answer)
    assert all(isinstance(e, str) for e in events[:-1]) and len(events) > 1
    assert not answer.declined, answer.signals
    assert "1958" in answer.text
    body = answer.text.removesuffix("[1]").strip()
    cited = answer.citations[0].passage
    assert body in cited.text  # copied verbatim from the passage it cites
    assert answer.signals["support"] == 1.0
    assert answer.signals["mean_logprob"] <= 0.0


@pytest.mark.slow
def test_real_unsupported_answer_is_declined(services: Services) -> None:
    """With the copy constraint off, whatever the model writes must pass the support check."""
    _ingest(services)
    services.settings.grounding.constrain = False
    services.settings.grounding.max_abstain_margin = math.inf
    services.settings.grounding.min_mean_logprob = -math.inf
    answer = services.answerer.ask("In which year did the field station open to visitors?")
    if not answer.declined:
        body = answer.text.removesuffix("[1]").strip()
        assert body.lower() in answer.citations[0].passage.text.lower()
    else:
        assert answer.text == DECLINE_TEXT and answer.citations == []
        assert answer.suggestions  # the closest passages are offered instead


@pytest.mark.slow
def test_real_question_off_topic_is_declined_with_suggestions(services: Services) -> None:
    _ingest(services)
    answer = services.answerer.ask("How many moons does Jupiter have?")
    assert answer.declined
    assert answer.text == DECLINE_TEXT
    assert answer.citations == []
    assert answer.decline_reason is not None


@pytest.mark.slow
def test_real_decision_uses_the_models_own_signal(services: Services) -> None:
    """A threshold no answer can meet declines every answer as low-confidence: the
    decision really reads the model's log-probabilities."""
    _ingest(services)
    services.settings.grounding.min_mean_logprob = 0.1
    answer = services.answerer.ask("When was the Marrow Fen field station founded?")
    assert answer.declined
    assert answer.decline_reason in {"low-confidence", "model-abstained"}
    assert "mean_logprob" in answer.signals
