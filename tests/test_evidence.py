"""Evidence selection and sentence splitting: pure logic, with the fast hashing embedder."""

from __future__ import annotations

from assistant.answering.evidence import (
    content_words,
    keyword_overlap,
    select_evidence,
    split_sentences,
)
from assistant.chunking import chunk_contexts, document_title
from assistant.embedding import HashingEmbedder


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


def test_a_pdf_line_wrap_does_not_end_a_sentence_but_a_blank_line_does() -> None:
    text = "This Agreement shall be governed by\nthe laws of the State of Texas.\n\nNext part"
    assert _spans(text) == [
        "This Agreement shall be governed by\nthe laws of the State of Texas.",
        "Next part",
    ]


def test_a_very_long_sentence_is_cut_at_spaces() -> None:
    text = " ".join(["word"] * 300)
    pieces = _spans(text)
    assert len(pieces) > 1 and all(len(p) <= 400 for p in pieces)
    assert " ".join(pieces) == text


def test_content_words_ignore_stopwords_case_and_plurals() -> None:
    assert content_words("The Agreements of the Parties") == {"agreement", "partie"}
    assert keyword_overlap("Who founded the station?", "The STATION was founded in 1958") == 1.0
    assert keyword_overlap("what is it", "anything") == 0.0


PASSAGES = [
    "Water samples are taken every Tuesday. The results go to Dunmore. Wells are fenced.",
    "The station was founded in 1958 by Ilse Brandt. It sits on a bog. Visitors book ahead.",
]


def test_evidence_keeps_the_best_sentences_with_neighbours_in_reading_order() -> None:
    chosen = select_evidence(
        "When was the station founded?", PASSAGES, HashingEmbedder(), count=1, window=1
    )
    assert [(e.passage, e.text) for e in chosen] == [
        (1, "The station was founded in 1958 by Ilse Brandt. It sits on a bog.")
    ]
    first = chosen[0]
    assert PASSAGES[1][first.start : first.end] == first.text


def test_evidence_runs_of_one_passage_merge_and_the_budget_holds() -> None:
    chosen = select_evidence(
        "station founded bog visitors", PASSAGES, HashingEmbedder(), count=3, window=1
    )
    assert [e.passage for e in chosen] == [1]  # three touching runs of passage 2, merged
    tight = select_evidence(
        "samples Tuesday station founded", PASSAGES, HashingEmbedder(), count=4, window=1,
        max_chars=90,
    )  # fmt: skip
    assert len(tight) == 1 and len(tight[0].text) <= 90


def test_whole_passages_when_selection_is_off() -> None:
    chosen = select_evidence("anything", PASSAGES, None, count=0)
    assert [e.text for e in chosen] == PASSAGES


def test_contextual_headers_name_the_document_and_its_section() -> None:
    text = (
        "EXHIBIT 10.1\nDISTRIBUTOR AGREEMENT\nThis agreement is made by Acme and Brill.\n"
        "12. Governing Law\nThis Agreement shall be governed by the laws of Texas."
    )
    starts = [0, text.index("This agreement"), text.index("This Agreement shall")]
    contexts = chunk_contexts("ACME_EX-10.1_Distributor_Agreement.pdf", text, starts)
    assert contexts[0] == "ACME EX 10.1 Distributor Agreement — EXHIBIT 10.1"
    assert contexts[1] == "ACME EX 10.1 Distributor Agreement — DISTRIBUTOR AGREEMENT"
    assert contexts[2] == "ACME EX 10.1 Distributor Agreement — 12. Governing Law"
    assert (
        document_title("notes.md", "# Field station handbook\n\nText") == "Field station handbook"
    )


def test_a_file_named_by_an_id_takes_its_first_line_as_title() -> None:
    assert document_title("4983.txt", "Vitamin D and bone health\n\nAbstract.") == (
        "Vitamin D and bone health"
    )
