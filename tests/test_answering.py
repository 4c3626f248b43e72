"""Answering with the real embedding model and the real default GGUF model."""

from __future__ import annotations

import pytest

from assistant.answering import DECLINE_TEXT, Answer, attach_citations
from assistant.errors import InvalidInput
from assistant.retrieval import Passage
from assistant.services import Services


def _ingest_all(services: Services, files: dict[str, bytes]) -> dict[str, str]:
    ids = {}
    for name, data in files.items():
        document = services.documents.ingest(services.documents.add(name, data).id)
        ids[name] = document.id
    return ids


@pytest.mark.slow
def test_answer_streams_and_cites_the_right_document(
    services: Services, files: dict[str, bytes]
) -> None:
    ids = _ingest_all(services, files)
    events = list(services.answerer.stream("When was the Kestrel Point lighthouse automated?"))
    pieces, answer = events[:-1], events[-1]
    assert isinstance(answer, Answer)
    assert not answer.declined
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert answer.citations
    cited = answer.citations[0].passage
    assert cited.document_id == ids["lighthouse.pdf"]
    assert cited.page == 2
    assert "Kestrel Point" in cited.text
    assert cited.text == services.documents.text(cited.document_id)[cited.start : cited.end]
    assert answer.first_token_seconds is not None
    assert answer.first_token_seconds <= answer.total_seconds


@pytest.mark.slow
def test_nothing_indexed_declines_plainly(services: Services) -> None:
    answer = services.answerer.ask("What is the boiling point of mercury?")
    assert answer.declined
    assert answer.text == DECLINE_TEXT
    assert answer.citations == []


@pytest.mark.slow
def test_unrelated_question_declines_and_offers_passages(
    services: Services, files: dict[str, bytes]
) -> None:
    _ingest_all(services, files)
    answer = services.answerer.ask("How many moons does Jupiter have?")
    assert answer.declined
    assert answer.text == DECLINE_TEXT
    assert answer.citations == []


@pytest.mark.parametrize(
    ("question", "message"),
    [("", "empty"), ("   \n ", "empty"), ("x" * 1001, "1001 characters; the limit is 1000")],
)
def test_bad_questions_are_rejected_clearly(
    fake_services: Services, question: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        fake_services.answerer.ask(question)


def _passage(n: int, text: str) -> Passage:
    return Passage(f"d:1:{n}", "d", "doc.md", text, None, 0, len(text), 0.9)


def test_citation_markers_map_to_passages_and_bad_numbers_are_dropped() -> None:
    passages = [_passage(0, "alpha beta"), _passage(1, "gamma delta")]
    text, citations = attach_citations("gamma [2] and [7] alpha [1][2]", passages)
    assert [c.number for c in citations] == [2, 1]
    assert "[7]" not in text
    assert citations[0].passage.chunk_id == "d:1:1"


def test_an_answer_without_a_marker_cites_the_passage_it_copies() -> None:
    passages = [_passage(0, "the canteen opens at seven"), _passage(1, "parking at north gate")]
    text, citations = attach_citations("north gate", passages)
    assert text == "north gate [2]"
    assert [c.number for c in citations] == [2]
