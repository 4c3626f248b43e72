"""The real UI in a real browser: gunicorn serving `web:create_app()` with the packaged
models, Debian's chromium driven by Playwright, and a real Celery worker for ingestion."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from assistant.accounts import Principal
from assistant.services import Services
from assistant.settings import Settings
from tests.browsing import chromium, normalise, screenshot, serving, signed_in_page
from tests.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.slow

HANDBOOK = """# Staff handbook

## Annual leave

Every employee receives 27 days of annual leave per calendar year.
Unused leave can be carried over until the end of March.

## Parking

The staff car park is behind building C. Permits are issued by the facilities desk.
"""
STAFF_PASSWORD = "staff password 123"
QUESTION = "How many days of annual leave does every employee receive?"
# A subject absent from every document: no passage reaches the retrieval floor
# (ASSISTANT_RETRIEVAL__MIN_SCORE), so it is declined before the model is asked, whatever
# the abstention margin (relaxed in `server`) or the llama.cpp build.
UNANSWERABLE = "What is the boiling point of tungsten in kelvin?"


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """gunicorn serving the app factory on a free port, on the test's data directory, with
    the default (small) model only: the UI is under test here, not routing."""
    with serving(settings, tmp_path, {"ASSISTANT_ROUTING__MODE": "off"}) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def test_upload_ask_and_open_the_cited_source(
    server: str,
    browser: Any,
    services: Services,
    start_worker: Callable[..., Any],
    settings: Settings,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    # A document indexed by the core in this process, while the server runs.
    handbook = services.documents.add("handbook.md", HANDBOOK.encode())
    assert services.documents.ingest(handbook.id).status == "indexed"

    # Staff read the default collection through their group; an auditor reads the log.
    accounts, operator = services.accounts, Principal.operator()
    services.access.create_group("everyone", actor=operator)
    services.access.set_readers("default", ["everyone"], actor=operator)
    accounts.add_user("sam", STAFF_PASSWORD, "staff", ["everyone"], actor=operator)
    accounts.add_user("audrey", STAFF_PASSWORD, "auditor", actor=operator)

    # -- Admin, Documents: upload one good and one bad file through the form.
    page = signed_in_page(browser, server, "admin", ADMIN_PASSWORD, shot="login")
    upload_dir = tmp_path / "uploads"
    upload_dir.mkdir()
    (upload_dir / "canteen.txt").write_text("The staff canteen opens at 7:30 every weekday.\n")
    (upload_dir / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    (upload_dir / "tool.exe").write_bytes(b"MZ\x90\x00")
    page.goto(f"{server}/documents")
    names = ["canteen.txt", "broken.pdf", "tool.exe"]
    page.set_input_files("#files", [str(upload_dir / name) for name in names])
    page.click("#upload-form button[type=submit]")
    # The batch page follows the uploads until each is indexed or failed.
    page.wait_for_url(re.compile(r"/batches/\w+$"))
    expect(page.locator(".flash-success")).to_have_text(
        ["2 file(s) accepted and queued for indexing, 1 rejected (the reasons are listed below)"]
    )
    expect(page.locator("#batch-rejected")).to_contain_text("tool.exe: unsupported file type")
    row = page.locator("#batch-body tr", has_text="canteen.txt")
    expect(row.locator(".status")).to_have_text("queued")
    expect(page.locator("#batch-summary")).to_contain_text("0 of 2 done")
    screenshot(page, "batch-queued")

    # A real worker picks the uploads up; the page follows without a reload.
    page.evaluate("window.__sameDocument = true")
    start_worker(settings)
    expect(row.locator(".status")).to_have_text("indexed", timeout=240_000)
    broken = page.locator("#batch-body tr", has_text="broken.pdf")
    expect(broken.locator(".status")).to_have_text("failed", timeout=60_000)
    expect(broken.locator(".reason")).to_contain_text("the PDF is damaged")
    expect(page.locator("#batch-summary")).to_contain_text("2 of 2 done")
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    expect(row.locator("td.filename a")).to_have_text("canteen.txt")
    screenshot(page, "batch-done")

    page.goto(f"{server}/documents")
    expect(page.locator("#documents-body tr", has_text="handbook.md")).to_contain_text("indexed")
    expect(page.locator("#documents-body tr", has_text="canteen.txt")).to_contain_text("indexed")
    screenshot(page, "admin-documents")
    page.close()

    # -- Staff, Ask: an empty question is an inline error, a real question gets a cited answer.
    page = signed_in_page(browser, server, "sam", STAFF_PASSWORD)
    expect(page.locator("#upload-form")).to_have_count(0)  # staff do not upload
    page.goto(server)
    page.click("#ask-button")
    expect(page.locator("#ask-error")).to_have_text("the question is empty")
    page.fill("#question", QUESTION)
    page.click("#ask-button")
    citation = page.locator("#thread .answer a.citation").first
    expect(citation).to_be_visible(timeout=240_000)
    expect(page.locator("#ask-error")).to_be_hidden()
    expect(page.locator("#thread .sources li").first).to_contain_text("handbook.md")
    screenshot(page, "ask-cited-answer")

    href = citation.get_attribute("href") or ""
    match = re.search(r"/documents/(\w+)/source\?chunk=([^#&]+)", href)
    assert match, href
    assert match.group(1) == handbook.id
    chunk_id = urllib.request.unquote(match.group(2))
    passage = services.documents.chunk(chunk_id)

    # -- Source view: the cited passage is highlighted.
    citation.click()
    page.wait_for_url(re.compile(r"/source\?chunk="))
    mark = page.locator("mark#cited")
    expect(mark).to_be_visible()
    assert normalise(mark.inner_text()) == normalise(passage.text)
    assert "27 days of annual leave" in mark.inner_text()
    expect(page.locator("h1")).to_have_text("handbook.md")
    screenshot(page, "source-cited-passage")

    # -- A question the documents cannot answer is declined, with places to look.
    floor = settings.retrieval.min_score
    assert all(p.similarity < floor for p in services.retriever.search(UNANSWERABLE, 10))
    page.goto(server)
    page.fill("#question", UNANSWERABLE)
    page.click("#ask-button")
    expect(page.locator("#thread .declined")).to_be_visible(timeout=240_000)
    expect(page.locator("#thread .declined")).to_contain_text("Not found in your documents")
    expect(page.locator("#thread .sources-title")).to_have_text("You may want to look at")
    screenshot(page, "ask-not-found")
    page.close()

    # -- Auditor: find sam's question in the log, open its passages, verify the chain.
    page = signed_in_page(browser, server, "audrey", STAFF_PASSWORD)
    page.goto(f"{server}/audit")
    page.fill("input[name=text]", "annual leave")
    page.select_option("select[name=action]", "question")
    page.click("#audit-filters button[type=submit]")
    row = page.locator("#audit-records tbody tr", has_text=QUESTION)
    expect(row).to_contain_text("user:sam")
    screenshot(page, "audit-log")
    row.locator("a").first.click()
    expect(page.locator("#audit-question")).to_have_text(QUESTION)
    screenshot(page, "audit-record")
    page.locator("#audit-passages a").first.click()
    expect(page.locator("mark#cited")).to_be_visible()
    page.goto(f"{server}/audit")
    page.click("#verify-now")
    expect(page.locator("#verify-result")).to_contain_text("audit log OK")
    page.close()
