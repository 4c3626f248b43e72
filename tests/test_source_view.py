"""The source view's sentence highlight through the Flask test client: good offsets mark
exactly that sentence inside its passage, bad ones fall back to the passage and say why
(never a 500), access checks come before the offsets are looked at, and every view (and
every denial) is audited. Real SQLite, Chroma and FTS5; the fast deterministic models."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from assistant.answering.generation import ExtractiveFakeGenerator
from assistant.answering.prompts import Prompt
from assistant.db import Chunk
from assistant.embedding import HashingEmbedder
from assistant.services import Services, build_services
from assistant.settings import RetrievalSettings, Settings
from tests.conftest import RecordingQueue, sign_in
from tests.test_access import client_for, make_library
from tests.test_hardening_access import flush_refusals
from web import create_app

SENTENCE = "Two nurses sign for <b>controlled</b> drugs & keep the register."
# Long sections around the medication rules put them in a passage of their own, neither the
# document's first nor its last (1,000-character chunks).
PREFACE = " ".join(f"Rule {n} of the ward is kept in the blue binder." for n in range(40))
WARD = f"""# Ward procedures

## General

{PREFACE}

## Medication

Nurses check the patient's wristband before every dose. {SENTENCE} The pharmacy is open until
22:00 on weekdays.

## Visiting

Visitors are welcome from 14:00 to 20:00. {PREFACE}
"""


@pytest.fixture
def library(fake_services: Services) -> dict[str, Any]:
    documents = make_library(fake_services)
    added = fake_services.documents.add("ward.md", WARD.encode(), "hr")
    documents["ward"] = fake_services.documents.ingest(added.id)
    return documents


@pytest.fixture
def ward(fake_services: Services, library: dict[str, Any]) -> tuple[str, Chunk, int, int]:
    """The ward document's id, its one passage and SENTENCE's offsets in its text."""
    document = library["ward"]
    start = fake_services.documents.text(document.id).index(SENTENCE)
    end = start + len(SENTENCE)
    chunks = fake_services.documents.chunks(document.id)
    chunk = next(c for c in chunks if c.char_start <= start and end <= c.char_end)
    assert chunk.char_start > 0 and chunk.char_end < len(WARD.rstrip())
    return document.id, chunk, start, end


def sentence_url(document_id: str, chunk_id: str, start: int, end: int) -> str:
    return f"/documents/{document_id}/source?chunk={chunk_id}&start={start}&end={end}"


def cited_url(citation: dict[str, Any]) -> str:
    """The source view at a citation's sentence, as the Ask page links it."""
    return sentence_url(
        citation["document_id"],
        citation["chunk_id"],
        citation["sentence_start"],
        citation["sentence_end"],
    )


def marks(page: str) -> dict[str, str]:
    """The text inside the passage mark (its own tags removed) and inside the sentence mark."""
    found = {}
    passage = re.search(r'<mark id="cited">(.*)</mark>', page, flags=re.S)
    if passage:
        found["passage"] = html.unescape(re.sub(r"</?mark[^>]*>", "", passage.group(1)))
    sentence = re.search(r'<mark id="sentence"[^>]*>(.*?)</mark>', page, flags=re.S)
    if sentence:
        found["sentence"] = html.unescape(sentence.group(1))
    return found


def last_view(services: Services) -> dict[str, Any]:
    return services.audit_log.search(action="document.view")[0]["details"]


def test_good_offsets_mark_exactly_the_sentence_inside_its_passage(
    app: Flask, fake_services: Services, ward: tuple[str, Chunk, int, int]
) -> None:
    document_id, chunk, start, end = ward
    client = client_for(app, "alice")
    url = sentence_url(document_id, chunk.id, start, end)
    response = client.get(url)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert marks(page) == {"passage": chunk.text, "sentence": SENTENCE}
    assert "<b>controlled</b>" not in page  # the document's text is escaped, never HTML
    assert 'class="source-text with-sentence"' in page
    assert "The sentence cited in the answer is highlighted" in page
    assert 'id="source-notice"' not in page
    # The whole document is still there around the passage, for a reader.
    assert "Visitors are welcome" in html.unescape(page)
    assert last_view(fake_services) == {
        "document_id": document_id,
        "filename": "ward.md",
        "chunk_id": chunk.id,
        "sentence_start": start,
        "sentence_end": end,
    }


def test_the_offsets_of_a_real_answer_open_its_supporting_sentence(
    app: Flask, fake_services: Services, ward: tuple[str, Chunk, int, int]
) -> None:
    """What /api/ask cites is what the source view marks."""
    client = client_for(app, "alice")
    stream = client.post("/api/ask", json={"question": "Who checks the patient's wristband?"})
    answer = answer_event(stream.get_data(as_text=True))
    assert not answer["declined"]
    for citation in answer["citations"]:
        found = marks(client.get(cited_url(citation)).get_data(as_text=True))
        assert found["sentence"] == citation["sentence"]
        assert found["passage"] == citation["text"]


def answer_event(stream: str) -> dict[str, Any]:
    [data] = [
        block.split("data: ", 1)[1] for block in stream.split("\n\n") if "event: answer" in block
    ]
    answer: dict[str, Any] = json.loads(data)
    return answer


# {s}, {e}: the sentence's offsets; {b}, {a}: just before and just after the passage.
BAD_OFFSETS = {
    "not a number": "start=abc&end={e}",
    "a fraction": "start={s}.5&end={e}",
    "negative": "start=-{s}&end={e}",
    "a plus sign": "start=%2B{s}&end={e}",
    "a space": "start=%20{s}&end={e}",
    "not ASCII digits": "start=%D9%A3&end={e}",
    "too large": "start={s}&end=99999999999999999999",
    "start only": "start={s}",
    "end only": "end={e}",
    "empty": "start=&end=",
    "empty range": "start={s}&end={s}",
    "reversed": "start={e}&end={s}",
    "past the passage": "start={s}&end={a}",
    "before the passage": "start={b}&end={e}",
}


@pytest.mark.parametrize("query", BAD_OFFSETS.values(), ids=BAD_OFFSETS.keys())
def test_bad_offsets_fall_back_to_the_passage_and_say_why(
    app: Flask, fake_services: Services, ward: tuple[str, Chunk, int, int], query: str
) -> None:
    document_id, chunk, start, end = ward
    query = query.format(s=start, e=end, b=chunk.char_start - 1, a=chunk.char_end + 1)
    client = client_for(app, "alice")
    response = client.get(f"/documents/{document_id}/source?chunk={chunk.id}&{query}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert marks(page) == {"passage": chunk.text}
    assert re.search(r'<mark id="cited">[^<]*</mark>', page)  # one plain passage mark
    assert 'class="source-text"' in page
    [notice] = re.findall(r'<p id="source-notice"[^>]*>(.*?)</p>', page)
    assert notice.endswith("so the whole passage is highlighted instead.")
    details = last_view(fake_services)
    assert details["chunk_id"] == chunk.id
    assert details["sentence_start"] is None and details["sentence_end"] is None
    refused = details["refused_offsets"]
    assert refused["reason"].lower() in html.unescape(notice).lower()
    assert len(refused["start"]) <= 32 and len(refused["end"]) <= 32


def test_offsets_without_a_passage_highlight_nothing(
    app: Flask, fake_services: Services, ward: tuple[str, Chunk, int, int]
) -> None:
    document_id, _, start, end = ward
    page = client_for(app, "alice").get(f"/documents/{document_id}/source?start={start}&end={end}")
    assert page.status_code == 200
    assert "<mark" not in page.get_data(as_text=True).split('class="source-text"', 1)[1]
    assert "needs the passage it belongs to" in page.get_data(as_text=True)
    assert last_view(fake_services)["refused_offsets"]["start"] == str(start)


def denials(services: Services, path: str) -> list[dict[str, Any]]:
    return [
        r["details"]
        for r in services.audit_log.search(action="access.denied")
        if r["details"]["path"] == path
    ]


def test_a_reader_of_other_collections_gets_404_whatever_the_offsets(
    app: Flask, fake_services: Services, ward: tuple[str, Chunk, int, int]
) -> None:
    document_id, chunk, start, end = ward
    bob: FlaskClient = client_for(app, "bob")  # reads "legal" only
    path = f"/documents/{document_id}/source"
    for query in (f"chunk={chunk.id}&start={start}&end={end}", f"chunk={chunk.id}&start=x"):
        response = bob.get(f"{path}?{query}")
        assert response.status_code == 404
        assert "wristband" not in response.get_data(as_text=True)
        unknown = bob.get(f"{path.replace(document_id, '0' * 32)}?{query}")
        assert unknown.status_code == 404
    [denied] = denials(fake_services, path)  # repeats of one path within a minute are counted
    assert denied["status"] == 404 and denied["method"] == "GET"
    flush_refusals(app)
    counted = fake_services.audit_log.search(action="access.denied", actor="user:bob")
    [repeat] = [r["details"] for r in counted if path in str(r["details"].get("samples"))]
    assert repeat["repeats"] == 1 and repeat["samples"][0]["status"] == 404
    viewed = fake_services.audit_log.search(action="document.view", actor="user:bob")
    assert viewed == []


def test_an_auditor_sees_the_sentence_in_a_retrieved_passage_only(
    app: Flask, fake_services: Services, ward: tuple[str, Chunk, int, int]
) -> None:
    document_id, chunk, start, end = ward
    auditor = client_for(app, "erin")
    url = sentence_url(document_id, chunk.id, start, end)
    assert auditor.get(url).status_code == 404  # not retrieved for any question yet
    assert denials(fake_services, f"/documents/{document_id}/source")[0]["status"] == 404
    asking = client_for(app, "alice")
    asking.post("/api/ask", json={"question": "Who signs for controlled drugs?"}).get_data()
    [asked] = fake_services.audit_log.search(action="question.asked")
    assert chunk.id in {p["chunk_id"] for p in asked["details"]["retrieved"]}
    page = auditor.get(url).get_data(as_text=True)
    assert marks(page) == {"passage": chunk.text, "sentence": SENTENCE}
    shown = re.search(r'<div class="source-text[^"]*">(.*?)</div>', page, flags=re.S)
    assert shown is not None and shown.group(1).startswith('<mark id="cited">')
    assert shown.group(1).endswith("</mark>")  # the passage and nothing around it
    assert "Only the passage retrieved" in page
    details = last_view(fake_services)
    assert (details["sentence_start"], details["sentence_end"]) == (start, end)


class Scripted(ExtractiveFakeGenerator):
    """Writes a fixed answer: the model is not under test here, the citations are."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def stream(self, prompt: Prompt) -> Iterator[str]:
        prompt.trace.logprobs, prompt.trace.decline_logprob = [-0.1] * 8, -8.0
        yield from (word + " " for word in self.answer.split(" "))


def test_two_sentences_of_one_passage_each_cite_and_open_their_own_sentence(
    settings: Settings,
) -> None:
    answer = "Nurses check the wristband before every dose. Two nurses sign for controlled drugs."
    # The fast embedder's similarities sit below the retrieval floor; the floor is not under test.
    lenient = settings.model_copy(update={"retrieval": RetrievalSettings(min_score=-1.0)})
    services = build_services(lenient, embedder=HashingEmbedder(), generator=Scripted(answer))
    added = services.documents.add("ward.md", WARD.encode())
    document = services.documents.ingest(added.id)
    client = create_app(services=services, task_sender=RecordingQueue()).test_client()
    sign_in(client)
    stream = client.post(
        "/api/ask",
        json={"question": "What do nurses check before a dose, and who signs for drugs?"},
    )
    result = answer_event(stream.get_data(as_text=True))
    assert result["answer"] == (
        "Nurses check the wristband before every dose [1]. "
        "Two nurses sign for controlled drugs [2]."
    )
    first, second = result["citations"]
    assert first["chunk_id"] == second["chunk_id"]  # one passage, two supporting sentences
    assert first["sentence"].startswith("Nurses check the patient's wristband")
    assert second["sentence"] == SENTENCE
    text = services.documents.text(document.id)
    for citation in (first, second):
        start, end = citation["sentence_start"], citation["sentence_end"]
        assert text[start:end] == citation["sentence"]
        shown = marks(client.get(cited_url(citation)).get_data(as_text=True))
        assert shown["sentence"] == citation["sentence"]


def test_an_auditor_opens_each_cited_sentence_from_the_answer_record(
    app: Flask, fake_services: Services, ward: tuple[str, Chunk, int, int]
) -> None:
    question = {"question": "Who checks the patient's wristband?"}
    stream = client_for(app, "alice").post("/api/ask", json=question)
    [citation] = answer_event(stream.get_data(as_text=True))["citations"]
    [record] = fake_services.audit_log.search(action="question")
    auditor = client_for(app, "erin")
    page = auditor.get(f"/audit/{record['seq']}").get_data(as_text=True)
    [link] = re.findall(r'<td class="cited"><a href="([^"]+)">sentence</a>', page)
    query = parse_qs(urlsplit(html.unescape(link)).query)
    offsets = (citation["sentence_start"], citation["sentence_end"])
    assert (int(query["start"][0]), int(query["end"][0])) == offsets
    shown = marks(auditor.get(html.unescape(link)).get_data(as_text=True))
    assert shown == {"passage": citation["text"], "sentence": citation["sentence"]}
