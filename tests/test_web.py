"""The Flask adapter through its test client, over real core services (real SQLite, real
Chroma, fast deterministic embedder and generator). The queue is a recorder of ids; the
documents it receives are ingested in-process, as the worker would."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from assistant.answering.generation import ExtractiveFakeGenerator
from assistant.embedding import HashingEmbedder
from assistant.services import Services, build_services
from assistant.settings import ChunkingSettings, LimitSettings, Settings
from tests.conftest import RecordingQueue, sign_in
from web import create_app
from web.tasks import TaskSender

GUIDE = (
    b"# Travel policy\n\n"
    b"Staff book rail travel through the travel desk. Economy class is the default.\n\n"
    b"## Expenses\n\n"
    b"Hotel costs are refunded up to 140 euros per night. Receipts are kept for seven years.\n"
)


def upload(client: FlaskClient, *files: tuple[str, bytes], url: str = "/api/documents") -> Any:
    data = {"files": [(io.BytesIO(content), name) for name, content in files]}
    return client.post(url, data=data, content_type="multipart/form-data")


def ingest_sent(services: Services, queue: RecordingQueue) -> None:
    """What the worker does with each id it receives."""
    for document_id in queue.sent:
        services.documents.ingest(document_id)


def sse_events(body: str) -> list[tuple[str, Any]]:
    events = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def ask(client: FlaskClient, question: Any) -> Any:
    return client.post("/api/ask", json={"question": question})


# -- health and pages ---------------------------------------------------------------------
def test_healthz_needs_no_sign_in_and_reveals_nothing(app: Flask) -> None:
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_pages_render_without_external_resources(client: FlaskClient) -> None:
    for path in ("/", "/documents"):
        response = client.get(path)
        assert response.status_code == 200
        html = response.get_data(as_text=True)
        assert "http://" not in html and "https://" not in html
    assert 'type="file"' in client.get("/documents").get_data(as_text=True)
    assert client.get("/static/style.css").status_code == 200


# -- uploads: bad input -------------------------------------------------------------------
def test_unsupported_file_type_is_rejected_with_reason(
    client: FlaskClient, queue: RecordingQueue
) -> None:
    response = upload(client, ("setup.exe", b"MZ\x90\x00"))
    assert response.status_code == 400
    assert response.json["accepted"] == []
    [rejected] = response.json["rejected"]
    assert rejected["filename"] == "setup.exe"
    assert "unsupported file type (.exe)" in rejected["error"]
    assert queue.sent == []
    assert client.get("/api/documents").json["documents"] == []


def test_empty_file_is_rejected(client: FlaskClient) -> None:
    response = upload(client, ("notes.txt", b""))
    assert response.status_code == 400
    assert response.json["rejected"][0]["error"] == "notes.txt: the file is empty"


def test_no_files_is_a_clear_400(client: FlaskClient) -> None:
    response = client.post("/api/documents", data={}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "choose one or more files" in response.json["error"]


def test_corrupt_pdf_is_accepted_then_fails_with_reason(
    client: FlaskClient, fake_services: Services, queue: RecordingQueue
) -> None:
    response = upload(client, ("report.pdf", b"%PDF-1.4 garbage"))
    assert response.status_code == 201
    [document] = response.json["accepted"]
    assert document["status"] == "queued"
    assert queue.sent == [document["id"]]
    ingest_sent(fake_services, queue)
    detail = client.get(f"/api/documents/{document['id']}").json
    assert detail["status"] == "failed"
    assert "the PDF is damaged" in detail["error"]
    assert detail["chunks"] == 0


def test_non_utf8_text_fails_with_reason(
    client: FlaskClient, fake_services: Services, queue: RecordingQueue
) -> None:
    [document] = upload(client, ("latin1.txt", "café au lait".encode("latin-1"))).json["accepted"]
    ingest_sent(fake_services, queue)
    detail = client.get(f"/api/documents/{document['id']}").json
    assert detail["status"] == "failed"
    assert "not valid UTF-8" in detail["error"]


def test_one_bad_file_never_loses_the_others(
    client: FlaskClient, fake_services: Services, queue: RecordingQueue
) -> None:
    response = upload(
        client,
        ("guide.md", GUIDE),
        ("virus.exe", b"MZ"),
        ("empty.txt", b""),
        ("notes.txt", b"The canteen opens at eight."),
    )
    assert response.status_code == 207
    assert [d["filename"] for d in response.json["accepted"]] == ["guide.md", "notes.txt"]
    assert [r["filename"] for r in response.json["rejected"]] == ["virus.exe", "empty.txt"]
    assert queue.sent == [d["id"] for d in response.json["accepted"]]
    ingest_sent(fake_services, queue)
    listing = client.get("/api/documents").json
    assert {d["filename"]: d["status"] for d in listing["documents"]} == {
        "guide.md": "indexed",
        "notes.txt": "indexed",
    }
    assert listing["counts"]["indexed"] == 2


def fake_client(settings: Settings, **changes: Any) -> tuple[FlaskClient, Services, RecordingQueue]:
    """An app over settings with some changes (smaller limits, smaller chunks)."""
    services = build_services(
        settings.model_copy(update=changes),
        embedder=HashingEmbedder(),
        generator=ExtractiveFakeGenerator(),
    )
    queue = RecordingQueue()
    client = create_app(services=services, task_sender=queue).test_client()
    sign_in(client)
    return client, services, queue


def test_too_large_file_is_rejected_and_others_kept(settings: Settings) -> None:
    client, _, _ = fake_client(settings, limits=LimitSettings(max_upload_bytes=1000))
    response = upload(client, ("big.txt", b"x" * 1001), ("small.txt", b"fits"))
    assert response.status_code == 207
    assert response.json["rejected"] == [
        {"filename": "big.txt", "error": "big.txt: the file is 1001 bytes; the limit is 1000"}
    ]
    assert response.json["accepted"][0]["filename"] == "small.txt"


def test_oversized_request_is_a_clear_413(settings: Settings) -> None:
    client, _, _ = fake_client(settings, limits=LimitSettings(max_upload_bytes=1000))
    response = upload(client, ("huge.txt", b"x" * 200_000))
    assert response.status_code == 413
    assert "larger than" in response.json["error"]
    assert "each file may be at most 1000 bytes" in response.json["error"]
    page = upload(client, ("huge.txt", b"x" * 200_000), url="/documents")
    assert page.status_code == 413
    assert "each file may be at most 1000 bytes" in page.get_data(as_text=True)
    assert client.get("/api/documents").json["documents"] == []


# -- the HTML upload form -----------------------------------------------------------------
def test_form_upload_shows_one_banner_and_keeps_rejected_files_on_the_batch_page(
    client: FlaskClient, queue: RecordingQueue
) -> None:
    """Issue 14, item 17: rejected files vanished after their banner, and banners stacked."""
    files = [("guide.md", GUIDE), ("photo.png", b"\x89PNG"), ("empty.txt", b"")]
    response = upload(client, *files, url="/documents")
    assert response.status_code == 303
    # Accepted files lead to the batch page, which follows their progress.
    batch_page = response.headers["Location"]
    assert batch_page.startswith("/batches/")
    page = client.get(batch_page).get_data(as_text=True)
    assert page.count('class="flash flash-success"') == 1
    assert "1 file(s) accepted and queued for indexing, 2 rejected" in page
    # Item 15: nobody may read `default` yet, and the admin is told so.
    assert page.count('class="flash flash-warning"') == 1
    assert "no group may read the collection &#39;default&#39;" in page
    assert 'data-status="queued"' in page and "0 of 1 done" in page
    assert len(queue.sent) == 1
    # The rejected files stay on the batch page, with their reasons, after the banner.
    again = client.get(batch_page).get_data(as_text=True)
    assert "accepted and queued" not in again  # the banner is shown once
    assert "photo.png: unsupported file type (.png)" in again
    assert "empty.txt: the file is empty" in again
    rejected = client.get(f"/api{batch_page}").json["rejected"]
    assert [r["filename"] for r in rejected] == ["photo.png", "empty.txt"]
    # An upload with nothing accepted has its batch page too.
    only_bad = upload(client, ("tool.exe", b"MZ"), url="/documents")
    page = client.get(only_bad.headers["Location"]).get_data(as_text=True)
    assert "tool.exe: unsupported file type" in page and "No file of this batch" in page


def test_form_upload_without_files(client: FlaskClient) -> None:
    response = client.post(
        "/documents",
        data={"files": [(io.BytesIO(b""), "")]},
        content_type="multipart/form-data",
        follow_redirects=True,
    )
    assert response.status_code == 200
    assert "choose one or more files" in response.get_data(as_text=True)


def test_form_delete(client: FlaskClient, queue: RecordingQueue) -> None:
    [document] = upload(client, ("guide.md", GUIDE)).json["accepted"]
    response = client.post(f"/documents/{document['id']}/delete", follow_redirects=True)
    assert "guide.md: deleted" in response.get_data(as_text=True)
    assert client.get(f"/api/documents/{document['id']}").status_code == 404


# -- asking: bad input --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("question", "message"),
    [("", "the question is empty"), ("   \n ", "the question is empty"), (42, "must be a string")],
)
def test_bad_questions_are_400_json(client: FlaskClient, question: Any, message: str) -> None:
    response = ask(client, question)
    assert response.status_code == 400
    assert response.mimetype == "application/json"
    assert message in response.json["error"]


def test_over_long_question_is_400(client: FlaskClient, settings: Settings) -> None:
    limit = settings.limits.max_question_chars
    response = ask(client, "why " * limit)
    assert response.status_code == 400
    assert f"the limit is {limit}" in response.json["error"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("hello", "text/plain"),
        ("{not json", "application/json"),
        ('["a list"]', "application/json"),
        ('{"q": "wrong key"}', "application/json"),
    ],
)
def test_non_json_ask_body_is_400(client: FlaskClient, body: str, content_type: str) -> None:
    response = client.post("/api/ask", data=body, content_type=content_type)
    assert response.status_code == 400
    assert "question" in response.json["error"]


# -- unknown ids ----------------------------------------------------------------------------
def test_unknown_document_is_404_json_and_html(client: FlaskClient) -> None:
    response = client.get("/api/documents/nope")
    assert response.status_code == 404
    assert response.json == {"error": "no document nope"}
    assert client.delete("/api/documents/nope").status_code == 404
    page = client.get("/documents/nope/source")
    assert page.status_code == 404
    assert page.mimetype == "text/html"
    assert "no document nope" in page.get_data(as_text=True)
    assert client.post("/documents/nope/delete").status_code == 404
    assert client.get("/api/nothing-here").json["error"]


def indexed(client: FlaskClient, services: Services, queue: RecordingQueue, *files: Any) -> list:
    accepted = upload(client, *files).json["accepted"]
    ingest_sent(services, queue)
    return [client.get(f"/api/documents/{d['id']}").json for d in accepted]


def test_source_view_rejects_a_chunk_of_another_document(
    client: FlaskClient, fake_services: Services, queue: RecordingQueue
) -> None:
    guide, notes = indexed(
        client, fake_services, queue, ("guide.md", GUIDE), ("notes.txt", b"The canteen opens.")
    )
    [other_chunk] = fake_services.documents.chunks(notes["id"])
    response = client.get(f"/documents/{guide['id']}/source?chunk={other_chunk.id}")
    assert response.status_code == 404
    assert "is not part of document guide.md" in response.get_data(as_text=True)
    missing = client.get(f"/documents/{guide['id']}/source?chunk={guide['id']}:1:99")
    assert missing.status_code == 404


# -- happy paths ----------------------------------------------------------------------------
def test_upload_ingest_ask_streams_a_cited_answer(
    client: FlaskClient, fake_services: Services, queue: RecordingQueue
) -> None:
    [guide] = indexed(client, fake_services, queue, ("guide.md", GUIDE))
    assert guide["status"] == "indexed" and guide["chunks"] >= 1
    response = ask(client, "How much are hotel costs refunded per night?")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    events = sse_events(response.get_data(as_text=True))
    kinds = [kind for kind, _ in events]
    # Verified sentences stream before the whole answer (each after its check).
    assert kinds[0] == "status" and kinds[-1] == "answer" and "text" in kinds
    streamed = "".join(data["text"] for kind, data in events if kind == "text")
    answer = events[-1][1]
    assert not answer["declined"]
    assert streamed == answer["answer"]
    citation = answer["citations"][0]
    assert citation["sentence"] in citation["text"]
    assert citation["sentence_start"] >= citation["start"]
    assert citation["sentence_end"] <= citation["end"]
    assert citation["document_id"] == guide["id"]
    assert citation["chunk_id"].startswith(f"{guide['id']}:")
    assert citation["filename"] == "guide.md"
    assert "[1]" in answer["answer"]
    [record] = fake_services.audit_log.search(action="question")
    details = record["details"]
    assert record["actor_id"] == "user:admin" and record["request_id"]
    assert details["question"] == "How much are hotel costs refunded per night?"
    assert details["answer"] == answer["answer"] and details["declined"] is False
    # One citation per supporting sentence: a passage may be cited for two of them.
    assert [c["chunk_id"] for c in details["cited"]] == [c["chunk_id"] for c in answer["citations"]]
    assert details["cited"][0]["sentence_start"] == citation["sentence_start"]
    # The question and its passages were recorded before any text was sent.
    [asked] = fake_services.audit_log.search(action="question.asked")
    assert asked["seq"] < record["seq"]
    assert asked["details"]["retrieved"] == details["retrieved"]
    retrieved = details["retrieved"][0]
    assert retrieved["document_sha256"] == guide["sha256"] and retrieved["chunk_id"]
    assert details["collections"] is None  # admins read every collection
    assert fake_services.audit_log.verify().ok


def test_declined_answer_offers_the_closest_passages(
    client: FlaskClient, fake_services: Services, queue: RecordingQueue
) -> None:
    indexed(client, fake_services, queue, ("guide.md", GUIDE))
    events = sse_events(ask(client, "Who won the 1998 football world cup?").get_data(as_text=True))
    kind, answer = events[-1]
    assert kind == "answer"
    assert answer["declined"] is True
    assert answer["citations"] == []


def test_source_view_highlights_the_cited_chunk_and_escapes_text(
    client: FlaskClient, fake_services: Services, queue: RecordingQueue
) -> None:
    hostile = b"Policy <script>alert('x')</script> text.\n\nThe second paragraph & more."
    [document] = indexed(client, fake_services, queue, ("page.txt", hostile))
    [chunk] = fake_services.documents.chunks(document["id"])
    response = client.get(f"/documents/{document['id']}/source?chunk={chunk.id}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    marked = html.split('<mark id="cited">', 1)[1].split("</mark>", 1)[0]
    assert marked.startswith("Policy &lt;script&gt;")
    assert marked.endswith("The second paragraph &amp; more.")
    assert "page.txt" in html


def test_source_view_marks_exactly_the_chunk_range(settings: Settings) -> None:
    chunking = ChunkingSettings(size=120, overlap=20)
    client, services, queue = fake_client(settings, chunking=chunking)
    text = "\n\n".join(f"Paragraph {n} says the code word is w{n}." * 2 for n in range(8))
    [document] = indexed(client, services, queue, ("words.txt", text.encode()))
    chunks = services.documents.chunks(document["id"])
    assert len(chunks) > 2
    middle = chunks[len(chunks) // 2]
    html = client.get(f"/documents/{document['id']}/source?chunk={middle.id}").get_data(
        as_text=True
    )
    marked = html.split('<mark id="cited">', 1)[1].split("</mark>", 1)[0]
    assert marked == middle.text


def test_document_detail_has_chunks_and_error(
    client: FlaskClient, fake_services: Services, queue: RecordingQueue
) -> None:
    [document] = indexed(client, fake_services, queue, ("guide.md", GUIDE))
    assert document["chunks"] == len(fake_services.documents.chunks(document["id"]))
    assert document["error"] is None
    assert client.get("/api/documents").json["counts"]["indexed"] == 1


# -- the real task producer -----------------------------------------------------------------
def test_task_sender_puts_the_task_on_the_filesystem_broker(
    fake_services: Services, settings: Settings
) -> None:
    TaskSender(settings).send_ingest("abc123")
    [message] = list((settings.broker_dir / "queue").glob("*.msg"))
    body = json.loads(message.read_text())
    assert body["headers"]["task"] == "ingest_document"
    assert "abc123" in json.dumps(body)


def test_task_sender_failure_keeps_the_upload_queued(
    fake_services: Services, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
    app = create_app(services=fake_services, task_sender=TaskSender(unreachable))
    started = time.monotonic()
    client = app.test_client()
    sign_in(client)
    response = upload(client, ("guide.md", GUIDE))
    assert time.monotonic() - started < 30
    assert response.status_code == 201
    [document] = response.json["accepted"]
    assert fake_services.documents.get(document["id"]).status == "queued"
    assert Path(fake_services.documents.original_path(document["id"])).exists()
    assert "could not enqueue document" in caplog.text
