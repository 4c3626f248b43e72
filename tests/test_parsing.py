"""Parsing each supported format, chunk offsets, and the bad files an admin may upload."""

from __future__ import annotations

import itertools

import pytest

from assistant.chunking import chunk_document
from assistant.errors import DocumentError, UnsupportedFileType
from assistant.parsing import ParsedDocument, check_extension, parse
from tests.documents import HTML, MARKDOWN, docx_bytes, pdf_bytes


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


@pytest.mark.parametrize("filename", ["virus.exe", "notes", "archive.tar.gz", "sheet.xlsx"])
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
