"""Issue 14's user-facing items in a real browser (Debian's chromium through Playwright,
gunicorn serving `web:create_app()`): the layout at 1280 and 390 px (item 16), the upload
form's collection and warning (item 15), rejected files kept on the batch page (item 17),
and the audit page's user filter and CSV export (item 13)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistant.accounts import Principal
from assistant.services import Services
from assistant.settings import Settings
from tests.browsing import chromium, screenshot, serving, signed_in_page
from tests.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.slow

PASSWORD = "a staff password 12"
LONG_NAME = "quarterly-financial-report-for-the-board-of-directors-2026-final-approved-v3.pdf"
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    with serving(settings, tmp_path) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def overflow(page: Any, selector: str = "html") -> int:
    """How many pixels the element's content is wider than the element itself."""
    return int(page.eval_on_selector(selector, "e => e.scrollWidth - e.clientWidth"))


def test_pages_fit_at_1280_and_390_px(server: str, browser: Any, services: Services) -> None:
    """Item 16: at 1280 px the documents table was clipped (actions cut off, file names one
    character per line); at 390 px the audit and admin pages scrolled sideways."""
    operator = Principal.operator()
    for n in range(3):
        services.documents.add(f"{n}-{LONG_NAME}", b"%PDF-1.4 not really a PDF " + bytes([n]))
    broken = services.documents.add("broken-" + LONG_NAME, b"%PDF-1.4 garbage")
    services.documents.ingest(broken.id)  # fails, with a long reason
    services.access.create_group("board-of-directors", actor=operator)
    services.access.create_collection("board-only", ["board-of-directors"], actor=operator)
    services.accounts.add_user("samantha.long-name", PASSWORD, "auditor", actor=operator)

    page = signed_in_page(browser, server, "admin", ADMIN_PASSWORD)
    page.goto(f"{server}/documents")
    screenshot(page, "documents-1280")
    assert overflow(page, "#documents-table") <= 0 or overflow(page, ".table-scroll") <= 0
    card = page.eval_on_selector(".table-scroll", "e => e.getBoundingClientRect().right")
    for row in page.query_selector_all("#documents-body tr"):
        actions = row.query_selector("td:last-child")
        assert actions is not None
        box = actions.bounding_box()
        assert box is not None and box["x"] + box["width"] <= card + 1, "actions cut off"
        name = row.query_selector("td.filename")
        assert name is not None
        assert (name.bounding_box() or {"width": 0})["width"] >= 120, "file name squeezed"
    assert overflow(page) <= 0

    for path in ("/audit", "/admin", "/documents", "/"):
        phone = browser.new_context(viewport=PHONE).new_page()
        phone.context.add_cookies(page.context.cookies())
        phone.goto(f"{server}{path}")
        screenshot(phone, f"phone-{path.strip('/') or 'ask'}")
        assert overflow(phone) <= 0, f"{path} scrolls sideways at 390 px"
        phone.context.close()


def test_upload_form_batch_page_and_audit_export(
    server: str, browser: Any, services: Services, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    operator = Principal.operator()
    services.access.create_group("staff", actor=operator)
    services.access.create_collection("board-only", actor=operator)  # sorts before "default"
    services.accounts.add_user("sam", PASSWORD, "staff", ["staff"], actor=operator)
    services.accounts.add_user("audrey", PASSWORD, "auditor", actor=operator)

    # Item 15: `default` is preselected; unread collections are flagged to the admin.
    page = signed_in_page(browser, server, "admin", ADMIN_PASSWORD)
    expect(page.locator("#collection")).to_have_value("default")
    page.goto(f"{server}/admin")
    expect(page.locator("#unread-collections")).to_contain_text("board-only, default")

    # Item 17: one banner per upload; rejected files stay on the batch page.
    folder = tmp_path / "uploads"
    folder.mkdir()
    (folder / "minutes.txt").write_text("The board met on Tuesday.\n")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "tool.exe").write_bytes(b"MZ\x90\x00")
    for round_ in range(2):
        (folder / "minutes.txt").write_text(f"The board met on Tuesday, round {round_}.\n")
        page.goto(f"{server}/documents")
        page.set_input_files(
            "#files", [str(folder / n) for n in ("minutes.txt", "empty.txt", "tool.exe")]
        )
        page.click("#upload-form button[type=submit]")
        page.wait_for_url(re.compile(r"/batches/\w+$"))
    expect(page.locator(".flash-success")).to_have_count(1)
    expect(page.locator(".flash-warning")).to_have_count(1)
    expect(page.locator(".flash-warning")).to_contain_text("staff will not see these files")
    rejected = page.locator("#batch-rejected tbody tr")
    expect(rejected).to_have_count(2)
    page.reload()
    expect(page.locator(".flash")).to_have_count(0)
    expect(rejected).to_have_count(2)
    expect(page.locator("#batch-rejected")).to_contain_text("empty.txt: the file is empty")
    page.close()

    # Item 13: "sam" in the user field finds sam's records; the CSV holds what is on screen.
    services.access.set_readers("default", ["staff"], actor=operator)
    sam = signed_in_page(browser, server, "sam", PASSWORD)
    sam.goto(f"{server}/documents")
    sam.close()
    auditor = signed_in_page(browser, server, "audrey", PASSWORD)
    auditor.goto(f"{server}/audit")
    auditor.fill("input[name=actor]", "sam")
    auditor.click("#audit-filters button[type=submit]")
    rows = auditor.locator("#audit-records tbody tr")
    expect(rows.first).to_contain_text("user:sam")
    shown = {text.split()[3] for text in rows.all_inner_texts()}  # #, date, time, user
    assert shown == {"user:sam"}
    with auditor.expect_download() as download:
        auditor.click("#export-csv")
    exported = Path(download.value.path()).read_text()
    records = list(csv.DictReader(io.StringIO(exported)))
    assert records and {r["actor_id"] for r in records} == {"user:sam"}
    assert {"question", "answer", "summary", "documents"} <= set(records[0])
