"""Parsing each supported format, chunk offsets, and the bad files an admin may upload."""

from __future__ import annotations

import itertools
import re

import pytest

from assistant.chunking import chunk_document
from assistant.errors import DocumentError, UnsupportedFileType
from assistant.parsing import ParsedDocument, check_extension, parse
from tests.documents import (
    HTML,
    MARKDOWN,
    csv_bytes,
    docx_bytes,
    eml_bytes,
    odt_bytes,
    pdf_bytes,
    pptx_bytes,
    scanned_pdf_bytes,
    xlsx_bytes,
)


def test_pdf_keeps_page_numbers() -> None:
    parsed = parse(pdf_bytes(), ".pdf")
    assert parsed.page_count == 2
    offset = parsed.text.index("Kestrel Point")
    assert parsed.page_at(offset) == 2
    assert parsed.page_at(parsed.text.index("mooring")) == 1


def test_docx_html_markdown_text() -> None:
    assert "breakfast until 10:00" in parse(docx_bytes(), ".docx").text
    html = parse(HTML.encode(), ".html").text
    assert "north gate reception" in html
    assert "tracking" not in html and "color: red" not in html
    assert "Amara Okafor" in parse(MARKDOWN.encode(), ".md").text


def test_plain_text_with_byte_order_mark_and_windows_newlines() -> None:
    parsed = parse("\ufeffline one\r\nline two\r\n".encode(), ".txt")
    assert parsed.text == "line one\nline two"


@pytest.mark.parametrize("filename", ["virus.exe", "notes", "archive.tar.gz", "sheet.xls"])
def test_unsupported_type_names_the_file_and_the_allowed_types(filename: str) -> None:
    with pytest.raises(UnsupportedFileType, match=r"unsupported file type.*\.pdf"):
        check_extension(filename)


def test_empty_file() -> None:
    with pytest.raises(DocumentError, match="empty"):
        parse(b"", ".txt")


def test_whitespace_only_file_has_no_text() -> None:
    with pytest.raises(DocumentError, match="no text"):
        parse(b"  \n\n  ", ".md")


def test_corrupt_pdf() -> None:
    with pytest.raises(DocumentError, match="PDF is damaged"):
        parse(b"%PDF-1.4\nthis is not really a pdf", ".pdf")


def test_pdf_over_the_page_limit() -> None:
    with pytest.raises(DocumentError, match="2 pages; the limit is 1"):
        parse(pdf_bytes(), ".pdf", max_pdf_pages=1)


def test_corrupt_docx() -> None:
    with pytest.raises(DocumentError, match="DOCX file is damaged"):
        parse(b"PK\x03\x04 broken zip", ".docx")


def test_non_utf8_text_says_where_and_what_to_do() -> None:
    with pytest.raises(DocumentError, match=r"not valid UTF-8.*position 3.*save it as UTF-8"):
        parse("café".encode("latin-1") + b" au lait", ".txt")


def test_binary_data_in_a_text_file() -> None:
    with pytest.raises(DocumentError, match="binary"):
        parse(b"abc\x00def", ".txt")


def test_chunks_point_at_their_exact_text_and_overlap() -> None:
    paragraphs = [f"Paragraph {n} talks about topic {n} in some detail." * 3 for n in range(30)]
    parsed = ParsedDocument("\n\n".join(paragraphs))
    chunks = chunk_document(parsed, size=300, overlap=60)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.text == parsed.text[chunk.start : chunk.end]
        assert 0 < len(chunk.text) <= 300
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end  # overlapping, so no sentence is cut off alone
        assert after.start > before.start
    assert chunks[-1].end == len(parsed.text)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_chunks_carry_their_pdf_page() -> None:
    parsed = parse(pdf_bytes(), ".pdf")
    chunks = chunk_document(parsed, size=120, overlap=20)
    pages = {c.page for c in chunks if "Kestrel" in c.text}
    assert pages == {2}


# -- the formats added with the parse report ------------------------------------------------
def test_report_counts_pages_and_characters() -> None:
    parsed = parse(pdf_bytes(), ".pdf")
    assert parsed.report == {
        "format": "pdf",
        "pages": 2,
        "characters": len(parsed.text),
        "ocr_pages": [],
        "tables": 0,
        "warnings": [],
    }


def test_pptx_slides_are_pages_with_tables_and_notes() -> None:
    parsed = parse(pptx_bytes(), ".pptx")
    assert parsed.page_count == 2
    assert parsed.page_at(parsed.text.index("Dunmore yard")) == 2
    assert parsed.page_at(parsed.text.index("Quarter: Q3; Growth: 4%")) == 1
    assert "Notes: Mention the new office." in parsed.text
    assert parsed.report["tables"] == 1


def test_xlsx_rows_keep_their_header_and_sheets_are_pages() -> None:
    parsed = parse(xlsx_bytes(), ".xlsx")
    assert "Region: North; Sales: 10\nRegion: South; Sales: 12.5" in parsed.text
    assert parsed.page_at(parsed.text.index("Name: Ines Ferreira; Role: harbour master")) == 2
    assert parsed.text.startswith("Sales\n\n")
    assert parsed.report["tables"] == 2 and parsed.report["pages"] == 2


def test_csv_sniffs_the_delimiter_and_keeps_headers() -> None:
    parsed = parse(csv_bytes(), ".csv")  # semicolons, with a UTF-8 byte order mark
    assert parsed.text.splitlines() == [
        "Region: North; Sales: 10; Manager: Aoife Byrne",
        "Region: South; Sales: 12; Manager: Tomás Ruiz",
    ]
    assert parsed.report["tables"] == 1
    tabs = parse(b"Name\tRoom\nIda\t4B\n", ".csv")
    assert tabs.text == "Name: Ida; Room: 4B"


def test_csv_that_is_not_utf8_says_so() -> None:
    with pytest.raises(DocumentError, match=r"CSV file is not valid UTF-8.*save it as UTF-8"):
        parse("Région;Ventes\nNord;10\n".encode("cp1252"), ".csv")


def test_eml_headers_body_and_attachments_in_the_report() -> None:
    parsed = parse(eml_bytes(), ".eml")
    lines = parsed.text.splitlines()
    assert lines[:4] == [
        "Subject: Boiler inspection",
        "From: Facilities <facilities@example.org>",
        "To: staff@example.org",
        "Date: Mon, 03 Mar 2025 09:30:00 +0000",
    ]
    assert "booked for Tuesday at 9:00" in parsed.text
    assert "%PDF" not in parsed.text
    assert parsed.report["warnings"] == ["attachments not indexed: checklist.pdf"]


def test_eml_with_only_html_uses_its_text() -> None:
    html = "<html><body><p>Fire drill at <b>noon</b>.</p><script>evil()</script></body></html>"
    parsed = parse(eml_bytes(html=html, attachment=False), ".eml")
    assert "Fire drill at" in parsed.text and "noon" in parsed.text
    assert "evil" not in parsed.text and "<p>" not in parsed.text
    assert parsed.report["warnings"] == []


def test_odt_headings_paragraphs_and_tables() -> None:
    parsed = parse(odt_bytes(), ".odt")
    assert parsed.text.splitlines()[0] == "Library opening hours"
    assert "The library opens at 8:00 on weekdays." in parsed.text
    assert "Day: Saturday; Hours: 10:00-14:00" in parsed.text
    assert parsed.report["tables"] == 1


def test_docx_tables_are_read_in_place_with_headers() -> None:
    import io

    import docx

    document = docx.Document()
    document.add_paragraph("Before the table.")
    table = document.add_table(rows=2, cols=2)
    for cell, text in zip(table._cells, ["Room", "Capacity", "Atrium", "120"], strict=True):
        cell.text = text
    document.add_paragraph("After the table.")
    buffer = io.BytesIO()
    document.save(buffer)
    parsed = parse(buffer.getvalue(), ".docx")
    assert parsed.text.split("\n\n") == [
        "Before the table.",
        "Room: Atrium; Capacity: 120",
        "After the table.",
    ]
    assert parsed.report["tables"] == 1


def test_scanned_pdf_page_is_read_by_ocr_and_keeps_its_page_number() -> None:
    data = scanned_pdf_bytes(
        ["Kittiwake colony survey", "Nesting ledges counted 4471"], text_page="Survey cover page"
    )
    parsed = parse(data, ".pdf")
    assert parsed.report["ocr_pages"] == [2]
    assert parsed.page_at(parsed.text.index("Survey cover page")) == 1
    text = parsed.text.lower()
    for word in ("kittiwake", "colony", "survey", "nesting", "ledges", "4471"):
        assert word in text
    assert parsed.page_at(text.index("kittiwake")) == 2


def test_ocr_page_limit_leaves_a_warning() -> None:
    from assistant.settings import LimitSettings

    data = scanned_pdf_bytes(["Kittiwake"], text_page="Cover")
    with pytest.raises(DocumentError, match="no text layer, and"):
        parse(scanned_pdf_bytes(["   "]), ".pdf")
    parsed = parse(data, ".pdf", limits=LimitSettings(max_ocr_pages=0))
    assert parsed.report["ocr_pages"] == []
    assert parsed.report["warnings"] == [
        "OCR skipped 1 scanned page(s): the limit is 0 per document"
    ]


@pytest.mark.parametrize(
    ("data", "extension", "reason"),
    [
        (b"%PDF-1.7 whatever", ".docx", "a PDF document, not a Word document"),
        (b"\x89PNG\r\n\x1a\n....", ".pdf", "a PNG image; the .pdf extension is wrong"),
        (b"PK\x03\x04junk", ".txt", "not a .txt text file"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1....", ".xlsx", "save it as .xlsx without a password"),
    ],
)
def test_content_must_match_the_extension(data: bytes, extension: str, reason: str) -> None:
    with pytest.raises(DocumentError, match=re.escape(reason)):
        parse(data, extension)


def test_each_zip_format_must_hold_its_own_main_part() -> None:
    with pytest.raises(DocumentError, match=r"an Excel workbook \(\.xlsx\), not a Word document"):
        parse(xlsx_bytes(), ".docx")
    with pytest.raises(DocumentError, match=r"a Word document \(\.docx\), not an OpenDocument"):
        parse(docx_bytes(), ".odt")


def test_truncated_pdf() -> None:
    data = pdf_bytes()
    with pytest.raises(DocumentError, match=r"PDF is damaged or truncated \(no %%EOF"):
        parse(data[: len(data) - 40], ".pdf")


def test_encrypted_pdf_and_owner_password_only() -> None:
    import io

    from pypdf import PdfReader, PdfWriter

    def encrypted(user_password: str) -> bytes:
        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes())))
        writer.encrypt(user_password=user_password, owner_password="owner", algorithm="AES-128")
        buffer = io.BytesIO()
        writer.write(buffer)
        return buffer.getvalue()

    with pytest.raises(DocumentError, match="the PDF is encrypted"):
        parse(encrypted("secret"), ".pdf")
    # Only an owner password (printing or copying restrictions): anyone may read it.
    assert "Kestrel Point" in parse(encrypted(""), ".pdf").text


def test_normalising_a_long_run_of_spaces_is_fast() -> None:
    import time

    started = time.monotonic()
    parsed = parse(b"a" + b" " * 5_000_000 + b"b", ".txt")
    assert time.monotonic() - started < 5
    assert parsed.text.startswith("a ") and parsed.text.endswith(" b")


def test_sandbox_returns_the_same_document_and_report() -> None:
    from assistant.sandbox import parse_isolated

    data = xlsx_bytes()
    inline, isolated = parse(data, ".xlsx"), parse_isolated(data, ".xlsx")
    assert isolated.text == inline.text and isolated.pages == inline.pages
    assert isolated.report.pop("seconds") > 0
    assert isolated.report == inline.report
