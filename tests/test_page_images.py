"""A cited PDF page as an image: the sentence located on the real page that prints it
(across a line break and a hyphen, or in part, or not at all, and said so), the PNG of the
size promised with highlight pixels inside the sentence's boxes, and the route that serves
it under the source view's access rule (access first, the same 404 as an unknown document,
bounded input, an audit record before the bytes). Real PDFs written by reportlab, real
pdfium, Pillow, SQLite, Chroma and the parsing sandbox; the fast deterministic models."""

from __future__ import annotations

import io
import re
from typing import Any

import pypdfium2 as pdfium
import pytest
from flask import Flask
from PIL import Image
from sqlalchemy import text

from assistant import page_images
from assistant.db import Chunk
from assistant.errors import NotFound
from assistant.services import Services
from tests.conftest import RecordingQueue
from tests.test_access import client_for, make_library
from web import create_app

SENTENCE = "The boiler room key hangs in the caretaker's office."
FIRST_LINE = "Heating is switched on from October to April in every wing."
# Page 2 prints SENTENCE on one line at (72, 700), and a sentence hyphenated across lines.
PAGES = [
    ["Fire drills are held on the first Monday of each term.", "Assembly points are marked."],
    [
        FIRST_LINE,
        SENTENCE,
        "The emergency exits are inspec-",
        "ted monthly by the fire warden.",
    ],
    ["The library closes at six on Fridays."],
]
LEFT, TOP, LEADING, SIZE = 72, 700, 20, 12


def pdf(pages: list[list[str]] = PAGES, size: tuple[float, float] = (595.0, 842.0)) -> bytes:
    """One line of text per entry, 12 pt Helvetica, from (72, 700) down."""
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=size)
    for lines in pages:
        for number, line in enumerate(lines):
            page.setFont("Helvetica", SIZE)
            page.drawString(LEFT, TOP - number * LEADING, line)
        page.showPage()
    page.save()
    return buffer.getvalue()


def rotated(data: bytes, page: int, degrees: int) -> bytes:
    document = pdfium.PdfDocument(data)
    document[page - 1].set_rotation(degrees)
    buffer = io.BytesIO()
    document.save(buffer)
    document.close()
    return buffer.getvalue()


# -- locating the sentence ----------------------------------------------------------------
def test_the_sentence_is_found_on_the_page_that_prints_it_and_nowhere_else() -> None:
    data = pdf()
    sentence, _ = page_images.locate(data, 2, SENTENCE)
    assert sentence.found and sentence.complete
    [(left, bottom, right, top)] = sentence.boxes  # one line, in PDF points
    line = TOP - LEADING  # the second line's baseline
    assert LEFT - 1 <= left < LEFT + 2 and LEFT + 200 < right < 450
    assert line - 4 <= bottom <= line + 1 and line + 7 <= top <= line + SIZE + 1
    for other in (1, 3):
        assert page_images.locate(data, other, SENTENCE)[0] == page_images.Located()


def test_white_space_case_and_a_hyphen_at_a_line_break_do_not_stop_the_match() -> None:
    cited = "The emergency exits are INSPECTED\nmonthly  by the fire warden."
    sentence, _ = page_images.locate(pdf(), 2, cited)
    assert sentence.complete
    first, second = sorted(sentence.boxes, key=lambda box: -box[3])  # two lines, top first
    assert first[3] > second[3] + LEADING / 2
    assert second[2] > first[2] - 80  # "ted monthly by the fire warden." with its full stop


def test_a_changed_word_highlights_the_longest_runs_and_says_it_is_partial() -> None:
    changed = SENTENCE.replace("caretaker's", "janitor's")
    sentence, _ = page_images.locate(pdf(), 2, changed)
    assert sentence.found and not sentence.complete
    [(left, _, right, _)] = sentence.boxes
    whole = page_images.locate(pdf(), 2, SENTENCE)[0].boxes[0]
    assert left == pytest.approx(whole[0]) and right < whole[2]  # up to "in the", no further
    # Too little in common (fewer than three words in a row): nothing is highlighted.
    assert page_images.locate(pdf(), 2, "The boiler exploded yesterday.")[0].found is False


def test_the_sentence_inside_its_passage_is_preferred_when_a_page_prints_it_twice() -> None:
    data = pdf([[SENTENCE, FIRST_LINE, SENTENCE]])
    sentence, passage = page_images.locate(data, 1, SENTENCE, f"{FIRST_LINE} {SENTENCE}")
    assert passage.complete and len(passage.boxes) == 2
    [box] = sentence.boxes
    assert box[1] < TOP - LEADING  # the third line, inside the passage, not the first


def test_a_page_that_does_not_exist_is_not_found() -> None:
    for page in (0, 4):
        with pytest.raises(NotFound, match="the PDF has 3 page"):
            page_images.locate(pdf(), page, SENTENCE)


# -- rendering ------------------------------------------------------------------------------
def yellow(pixel: tuple[int, ...]) -> bool:
    red, green, blue = pixel[:3]
    return red > 200 and green > 150 and blue < 170


def test_the_png_has_the_promised_size_and_highlights_inside_the_sentence_box() -> None:
    result = page_images.render(pdf(), 2, SENTENCE, f"{FIRST_LINE} {SENTENCE}")
    image = Image.open(io.BytesIO(result.png))
    assert image.format == "PNG" and image.size == (result.width, result.height)
    assert result.width == page_images.MAX_WIDTH  # A4 at 1200 px wide
    assert abs(result.height - 842 * result.width / 595) <= 1
    assert result.sentence.complete and result.passage.complete
    [(left, top, right, bottom)] = result.sentence.boxes  # pixels now
    scale = result.width / 595
    assert abs(left - LEFT * scale) < 4 and abs(bottom - (842 - (TOP - LEADING)) * scale) < 12
    inside = [image.getpixel((x, y)) for x in range(left, right) for y in range(top, bottom)]
    assert sum(map(yellow, inside)) > 0.5 * len(inside)
    assert any(max(p[:3]) < 120 for p in inside)  # the printed text still shows through
    below = [image.getpixel((x, y)) for x in range(left, right) for y in range(bottom + 80, 1600)]
    assert not any(map(yellow, below))  # nothing highlighted where nothing was cited


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_boxes_land_on_the_printed_text_of_a_rotated_page(degrees: int) -> None:
    result = page_images.render(rotated(pdf(), 2, degrees), 2, SENTENCE)
    image = Image.open(io.BytesIO(result.png)).convert("RGB")
    assert result.sentence.complete
    [(left, top, right, bottom)] = result.sentence.boxes
    inside = [image.getpixel((x, y)) for x in range(left, right) for y in range(top, bottom)]
    assert sum(map(yellow, inside)) > 0.4 * len(inside)
    assert any(max(p) < 120 for p in inside)  # the text is under the box
    assert image.size[0] <= page_images.MAX_WIDTH


@pytest.mark.parametrize("size", [(5000.0, 5000.0), (200.0, 14400.0), (40.0, 30.0)])
def test_odd_page_sizes_are_rendered_within_the_bounds(size: tuple[float, float]) -> None:
    result = page_images.render(pdf([["Tiny."]], size=size), 1)
    assert result.width <= page_images.MAX_WIDTH
    assert result.width * result.height <= page_images.MAX_PIXELS
    assert result.width <= size[0] * page_images.MAX_SCALE + 1
    assert Image.open(io.BytesIO(result.png)).size == (result.width, result.height)


def test_passage_only_blanks_everything_but_the_passage_lines() -> None:
    passage = "The emergency exits are inspec- ted monthly by the fire warden."
    result = page_images.render(pdf(), 2, None, passage, passage_only=True)
    image = Image.open(io.BytesIO(result.png)).convert("RGB")
    scale = result.width / 595
    first_lines = (TOP - 2 * LEADING + SIZE) * scale
    # The first two lines (the heating rule and SENTENCE) are above the passage: all white.
    band = [
        image.getpixel((x, y))
        for x in range(0, result.width, 3)
        for y in range(int((842 - TOP - SIZE) * scale), int(842 * scale - first_lines))
    ]
    assert set(band) == {(255, 255, 255)}
    [top_box, *_] = sorted(result.passage.boxes, key=lambda box: box[1])
    shown = [image.getpixel((x, top_box[1] + 10)) for x in range(top_box[0], top_box[2])]
    assert any(max(p) < 120 for p in shown)  # the passage itself is printed
    with pytest.raises(NotFound, match="could not be located"):
        page_images.render(pdf(), 1, None, passage, passage_only=True)


# -- the route ------------------------------------------------------------------------------
@pytest.fixture
def contract(fake_services: Services) -> tuple[str, Chunk, int, int]:
    """contract.pdf in the "hr" collection: its id, the passage on page 2, SENTENCE's
    offsets in its extracted text."""
    make_library(fake_services)
    added = fake_services.documents.add("contract.pdf", pdf(), "hr")
    document = fake_services.documents.ingest(added.id)
    assert document.status == "indexed" and document.page_count == 3
    start = fake_services.documents.text(document.id).index(SENTENCE)
    end = start + len(SENTENCE)
    [chunk] = [
        c
        for c in fake_services.documents.chunks(document.id)
        if c.char_start <= start and end <= c.char_end
    ]
    assert chunk.page == 2
    return document.id, chunk, start, end


@pytest.fixture
def app(fake_services: Services, contract: tuple[str, Chunk, int, int]) -> Flask:
    app = create_app(services=fake_services, task_sender=RecordingQueue())
    app.config["TESTING"] = True
    return app


def image_url(document_id: str, page: object, query: str = "") -> str:
    return f"/documents/{document_id}/page/{page}.png" + (f"?{query}" if query else "")


def page_views(services: Services, actor: str | None = None) -> list[dict[str, Any]]:
    records = services.audit_log.search(action="document.page_view", actor=actor)
    return [record["details"] for record in records]


def test_a_reader_sees_the_page_with_the_sentence_and_the_view_is_audited(
    app: Flask, fake_services: Services, contract: tuple[str, Chunk, int, int]
) -> None:
    document_id, chunk, start, end = contract
    client = client_for(app, "alice")  # reads "hr"
    source = client.get(f"/documents/{document_id}/source?chunk={chunk.id}&start={start}&end={end}")
    page = source.get_data(as_text=True)
    [(src, alt)] = re.findall(r'<img class="page-image" src="([^"]+)" alt="([^"]+)"', page)
    assert alt == "Page 2 of contract.pdf with the cited sentence highlighted"
    assert "On the page as printed, the cited sentence is highlighted." in page
    src = src.replace("&amp;", "&")
    assert src == image_url(document_id, 2, f"chunk={chunk.id}&start={start}&end={end}")
    assert page_views(fake_services) == []  # the text view does not render the image

    response = client.get(src)
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert response.headers["Cache-Control"] == "private, no-store"
    image = Image.open(io.BytesIO(response.data))
    assert image.size[0] == page_images.MAX_WIDTH
    [details] = page_views(fake_services, "user:alice")
    assert details == {
        "document_id": document_id,
        "filename": "contract.pdf",
        "page": 2,
        "chunk_id": chunk.id,
        "sentence_start": start,
        "sentence_end": end,
        "sentence_located": "whole",
        "passage_only": False,
    }
    # Without a passage: the page as printed, nothing highlighted; still audited.
    plain = client.get(image_url(document_id, 3))
    assert plain.status_code == 200 and plain.mimetype == "image/png"
    assert page_views(fake_services)[0]["page"] == 3


def test_no_bytes_leave_when_the_audit_record_cannot_be_written(
    app: Flask, fake_services: Services, contract: tuple[str, Chunk, int, int]
) -> None:
    document_id, chunk, _, _ = contract
    client = client_for(app, "alice")
    with fake_services.sessions.begin() as session:
        session.execute(text("DROP TABLE audit_head"))  # the next append cannot be written
    response = client.get(image_url(document_id, 2, f"chunk={chunk.id}"))
    assert response.status_code == 503
    assert response.mimetype != "image/png" and not response.data.startswith(b"\x89PNG")


def test_a_reader_of_other_collections_gets_the_404_of_an_unknown_document(
    app: Flask, fake_services: Services, contract: tuple[str, Chunk, int, int]
) -> None:
    document_id, chunk, start, end = contract
    bob = client_for(app, "bob")  # reads "legal" only
    for query in (f"chunk={chunk.id}&start={start}&end={end}", "", "start=x"):
        for page in (2, 0, "x"):  # access is checked before the input
            denied = bob.get(image_url(document_id, page, query))
            unknown = bob.get(image_url("0" * 32, page, query))
            assert denied.status_code == unknown.status_code == 404
            assert denied.mimetype == "text/html" and b"\x89PNG" not in denied.data
            body = denied.get_data(as_text=True)
            assert body == unknown.get_data(as_text=True).replace("0" * 32, document_id)
            assert "contract.pdf" not in body
    assert page_views(fake_services) == []
    denials = fake_services.audit_log.search(action="access.denied", actor="user:bob")
    assert denials and denials[-1]["details"]["status"] == 404
    # The source view offers bob no image either: it is a 404 as a whole.
    assert bob.get(f"/documents/{document_id}/source?chunk={chunk.id}").status_code == 404


def test_an_auditor_sees_only_a_retrieved_passage_on_its_page(
    app: Flask, fake_services: Services, contract: tuple[str, Chunk, int, int]
) -> None:
    document_id, chunk, start, end = contract
    erin = client_for(app, "erin")
    url = image_url(document_id, 2, f"chunk={chunk.id}&start={start}&end={end}")
    assert erin.get(url).status_code == 404  # not retrieved for any question yet
    assert erin.get(image_url(document_id, 2)).status_code == 404  # no passage named
    asking = client_for(app, "alice")
    asking.post("/api/ask", json={"question": "Where does the boiler room key hang?"}).get_data()
    [asked] = fake_services.audit_log.search(action="question.asked")
    assert chunk.id in {p["chunk_id"] for p in asked["details"]["retrieved"]}
    response = erin.get(url)
    assert response.status_code == 200 and response.mimetype == "image/png"
    [details] = page_views(fake_services, "user:erin")
    assert details["passage_only"] is True and details["sentence_located"] == "whole"
    page = erin.get(f"/documents/{document_id}/source?chunk={chunk.id}&start={start}&end={end}")
    assert "everything but the retrieved passage blanked" in page.get_data(as_text=True)


BAD = {
    "page zero": (0, "", 400, "not a whole number from 1"),
    "not a number": ("two", "", 400, "not a whole number from 1"),
    "a fraction": ("2.5", "", 400, "not a whole number from 1"),
    "leading zero": ("02", "", 400, "not a whole number from 1"),
    "not ASCII digits": ("%D9%A2", "", 400, "not a whole number from 1"),
    "too large": ("9" * 40, "", 400, "not a whole number from 1"),
    "past the last page": (4, "", 404, "contract.pdf has 3 page(s), not 4"),
    "not the passage's page": (1, "chunk={c}", 400, "is on page 2, not on page 1"),
    "offsets without a passage": (2, "start={s}&end={e}", 400, "needs the passage"),
    "one offset": (2, "chunk={c}&start={s}", 400, "only one end of the sentence"),
    "offsets outside": (2, "chunk={c}&start=0&end={e}", 400, "not inside this passage"),
    "negative offset": (2, "chunk={c}&start=-1&end={e}", 400, "not a pair of whole numbers"),
    "unknown passage": (2, "chunk=nope", 404, "no passage nope"),
}


@pytest.mark.parametrize(("page", "query", "status", "message"), BAD.values(), ids=BAD.keys())
def test_bad_pages_and_offsets_are_refused_with_a_clear_message(
    app: Flask,
    fake_services: Services,
    contract: tuple[str, Chunk, int, int],
    page: object,
    query: str,
    status: int,
    message: str,
) -> None:
    document_id, chunk, start, end = contract
    client = client_for(app, "alice")
    response = client.get(image_url(document_id, page, query.format(c=chunk.id, s=start, e=end)))
    assert response.status_code == status
    assert message in response.get_data(as_text=True).replace("&#39;", "'")
    assert page_views(fake_services) == []


def test_a_document_that_is_not_a_pdf_has_no_page_image(
    app: Flask, fake_services: Services
) -> None:
    [leave] = [d for d in fake_services.documents.list() if d.filename == "leave.md"]
    [chunk] = fake_services.documents.chunks(leave.id)
    client = client_for(app, "alice")
    response = client.get(image_url(leave.id, 1, f"chunk={chunk.id}"))
    assert response.status_code == 404
    assert "leave.md is not a PDF, so it has no page images" in response.get_data(as_text=True)
    source = client.get(f"/documents/{leave.id}/source?chunk={chunk.id}").get_data(as_text=True)
    assert "page-image" not in source
    assert page_views(fake_services) == []


def test_only_a_checked_file_is_rendered_and_staff_see_the_current_version_only(
    app: Flask, fake_services: Services, contract: tuple[str, Chunk, int, int]
) -> None:
    old_id, chunk, _, _ = contract
    queued = fake_services.documents.add("draft.pdf", pdf([["A draft, not parsed yet."]]), "hr")
    alice, admin = client_for(app, "alice"), client_for(app, "admin")
    for client in (alice, admin):  # not through the parsing sandbox: never rendered
        response = client.get(image_url(queued.id, 1))
        assert response.status_code == 404
        assert "draft.pdf has not passed its checks" in response.get_data(as_text=True)
    newer = pdf([*PAGES, ["An appendix."]])
    added = fake_services.documents.add("contract.pdf", newer, "hr")
    fake_services.documents.ingest(added.id)  # the old id is now an older version
    url = image_url(old_id, 2, f"chunk={chunk.id}")
    refused = alice.get(url)
    assert refused.status_code == 404
    assert "current version of contract.pdf only" in refused.get_data(as_text=True)
    assert admin.get(url).mimetype == "image/png"  # admins still see older versions
    assert alice.get(image_url(added.id, 4)).mimetype == "image/png"
    assert [d["document_id"] for d in page_views(fake_services)] == [added.id, old_id]


def test_a_sentence_not_printed_on_the_stored_page_is_said_to_be_not_located(
    app: Flask, fake_services: Services, contract: tuple[str, Chunk, int, int]
) -> None:
    """The page image never claims a highlight it could not place."""
    document_id, chunk, start, end = contract
    other = pdf([["Page one."], ["Something else entirely is printed here."], ["Three."]])
    fake_services.documents.original_path(document_id).write_bytes(other)
    client = client_for(app, "alice")
    query = f"chunk={chunk.id}&start={start}&end={end}"
    page = client.get(f"/documents/{document_id}/source?{query}").get_data(as_text=True)
    assert "Neither the sentence nor its passage was located on the page image" in page
    assert 'alt="Page 2 of contract.pdf; the cited text was not located on it"' in page
    response = client.get(image_url(document_id, 2, query))
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.data)).convert("RGB")
    assert not any(map(yellow, image.getdata()))  # no highlight anywhere
    assert page_views(fake_services)[0]["sentence_located"] == "no"
