"""Follow-up questions: which questions lean on the conversation, what is searched for them,
and how `eval qa --follow-ups` derives a follow-up from two questions about one document
(our own example questions, never evaluation data)."""

from __future__ import annotations

from assistant.answering.followup import Exchange, is_follow_up, resolve
from assistant.answering.prompts import build_prompt
from assistant.evaluation.followups import as_follow_up, derive_pairs

CONTRACT = "the Supply Agreement between Alder Mills Ltd and Brook Foods Inc."


def test_questions_that_lean_on_the_conversation() -> None:
    for question in ("And its governing law?", "What about the renewal?", "When does it end?",
                     "Who signed them?", "Term?"):  # fmt: skip
        assert is_follow_up(question), question
    for question in (f"Which law governs {CONTRACT}?", "How do I book a study room?"):
        assert not is_follow_up(question), question


def test_a_follow_up_is_searched_with_the_question_it_follows() -> None:
    first = Exchange(f"Which law governs {CONTRACT}?", "The laws of Ontario.")
    asked = resolve("And when does it end?", [first])
    assert asked.resolved == f"And when does it end? (Which law governs {CONTRACT}?)"
    assert asked.history == (first,) and asked.follows
    # Alone, or standing on its own: searched as typed, and the model sees no history.
    assert resolve("And when does it end?", []).resolved == "And when does it end?"
    alone = resolve("How do I book a study room?", [first])
    assert alone.resolved == "How do I book a study room?" and alone.history == ()
    # A chain stays bounded: the earlier question is cut to its first 600 characters.
    long = Exchange("x" * 5000)
    assert len(resolve("And then?", [long]).resolved) < 700


def test_the_model_sees_the_earlier_turns_before_the_sources() -> None:
    prompt = build_prompt(
        "And when does it end?", ["The agreement ends on 1 May 2031."], ["Supply Agreement"], 64,
        [(f"Which law governs {CONTRACT}?", "The laws of Ontario.")],
    )  # fmt: skip
    message = prompt.user_message()
    assert message.index("Earlier question: Which law") < message.index("Sources:")
    assert "Earlier answer: The laws of Ontario." in message
    assert message.endswith("Question: And when does it end?")


def test_a_follow_up_leaves_out_the_name_both_questions_share() -> None:
    first = f"Which law governs {CONTRACT}?"
    assert as_follow_up(first, f"When does {CONTRACT} end?") == "And when does it end?"
    assert as_follow_up("Who founded Harlow Canal?", "What did Harlow Canal's barges carry?") == (
        "And what did its barges carry?"
    )
    # Only a whole name is left out; questions that share no name make no pair.
    assert as_follow_up("Where did Anna Berg live?", "When did Tom Berg die?") is None
    assert as_follow_up("What is the notice period?", "What is the renewal term?") is None


def test_pairs_come_from_one_paragraph_and_half_are_answerable() -> None:
    rows = [
        {"id": "a", "question": f"Which law governs {CONTRACT}?", "answerable": True,
         "document": "supply.pdf", "paragraph": None},
        {"id": "b", "question": f"When does {CONTRACT} end?", "answerable": True,
         "document": "supply.pdf", "paragraph": None},
        {"id": "c", "question": f"What cap on liability has {CONTRACT}?", "answerable": False,
         "document": "supply.pdf", "paragraph": None},
        {"id": "d", "question": "When does the Lease between Alder Mills Ltd and Cobb end?",
         "answerable": True, "document": "lease.pdf", "paragraph": None},
    ]  # fmt: skip
    pairs = derive_pairs(rows, 2, seed=0)
    assert len(pairs) == 2
    assert sorted(second["answerable"] for _, second, _ in pairs) == [False, True]
    for first, second, text in pairs:
        assert first["document"] == second["document"] == "supply.pdf"
        assert first["answerable"] and text.startswith("And ") and "Alder" not in text
