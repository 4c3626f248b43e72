"""Verification of answer sentences against their evidence: pure logic."""

from __future__ import annotations

from assistant.answering.evidence import Evidence
from assistant.answering.verification import (
    answer_sentences,
    check_answer,
    check_sentence,
    with_reason,
)

EVIDENCE = [
    Evidence("The canteen opens at half past seven. It closes at two.", 0, 100, 156),
    Evidence("Visitor permits are issued at the north gate.", 1, 0, 46),
]


def test_a_copied_fact_is_supported_by_the_sentence_that_holds_it() -> None:
    checked = check_sentence("half past seven", "When does the canteen open?", EVIDENCE)
    assert checked.share == 1.0 and checked.supported(0.75)
    [support] = checked.supports
    assert (support.passage, support.start, support.end) == (0, 100, 137)


def test_a_sentence_with_new_words_nowhere_in_the_sources_is_not_supported() -> None:
    checked = check_sentence(
        "The canteen serves free breakfast to contractors.", "What does the canteen do?", EVIDENCE
    )
    assert not checked.supported(0.75)


def test_a_sentence_drawing_on_two_passages_cites_both() -> None:
    checked = check_sentence(
        "The canteen opens at half past seven and permits come from the north gate.",
        "When does the canteen open and where are permits issued?",
        EVIDENCE,
    )
    assert checked.supported(0.75)
    assert {s.passage for s in checked.supports} == {0, 1}


def test_yes_is_checked_with_the_sentence_after_it_and_markers_are_ignored() -> None:
    assert answer_sentences("Yes. Permits are issued at the north gate [2].") == [
        "Yes. Permits are issued at the north gate."
    ]
    [checked] = check_answer(
        "Yes. Permits are issued at the north gate [2].", "Are permits issued?", EVIDENCE
    )
    assert checked.supported(0.75) and checked.supports[0].passage == 1


def test_a_bare_yes_or_no_is_completed_with_the_sentence_that_says_why() -> None:
    evidence = [
        Evidence("Dogs are not allowed in the reading room. Bicycles go in the rack.", 0, 0, 66),
        Evidence("The reading room opens at nine.", 1, 0, 31),
    ]
    question = "Can I bring my dog into the reading room?"
    completed = with_reason("No.", question, evidence)
    assert completed == "No. Dogs are not allowed in the reading room."
    [checked] = check_answer(completed, question, evidence)
    assert checked.supported(0.75)
    # Anything else is left as the model wrote it.
    for text in ("No. Dogs are not allowed.", "Nine.", "Yes, in the rack."):
        assert with_reason(text, question, evidence) == text
    assert with_reason("Yes.", question, []) == "Yes."
