"""A citation into a PDF in a real browser: the source view shows the cited sentence
highlighted in the text and, under it, the page as printed with the sentence's boxes
highlighted (gunicorn serving `web:create_app()`, Debian's chromium via Playwright). No
question reaches a model: the link is the one an answer's citation gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.services import Services
from assistant.settings import Settings
from tests.browsing import chromium, normalise, screenshot, serving, signed_in_page
from tests.conftest import ADMIN_PASSWORD
from tests.test_page_images import SENTENCE, pdf

pytestmark = pytest.mark.slow


def test_a_pdf_citation_shows_the_printed_page_with_the_sentence_highlighted(
    settings: Settings, services: Services, tmp_path: Path
) -> None:
    added = services.documents.add("contract.pdf", pdf())
    document = services.documents.ingest(added.id)
    assert document.status == "indexed"
    start = services.documents.text(document.id).index(SENTENCE)
    end = start + len(SENTENCE)
    [chunk] = [
        c
        for c in services.documents.chunks(document.id)
        if c.char_start <= start and end <= c.char_end
    ]
    link = f"/documents/{document.id}/source?chunk={chunk.id}&start={start}&end={end}"
    with serving(settings, tmp_path) as server, chromium() as browser:
        page = signed_in_page(browser, server, "admin", ADMIN_PASSWORD)
        page.goto(server + link)
        assert normalise(page.locator("#sentence").inner_text()) == SENTENCE
        image = page.locator("img.page-image")
        image.scroll_into_view_if_needed()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
        )
        width = image.evaluate("img => img.naturalWidth")
        assert 0 < width <= 1200
        assert "Page 2 of contract.pdf" in (image.get_attribute("alt") or "")
        assert "highlighted" in page.locator("#page-note").inner_text()
        page.locator("#page-heading").evaluate("h => h.scrollIntoView()")
        screenshot(page, "source-pdf-page")
        # On a phone the page image fits the screen: no sideways scrolling.
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.locator("#page-heading").evaluate("h => h.scrollIntoView()")
        screenshot(page, "source-pdf-page-narrow")
