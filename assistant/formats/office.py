"""Office formats: DOCX (python-docx), PPTX (python-pptx), XLSX (openpyxl) and ODT (its
content.xml, read with defusedxml). Each file was checked by formats.inspection first."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

from assistant.errors import DocumentError, ParseLimitExceeded
from assistant.formats.document import ParsedDocument, normalise, paged, table_text
from assistant.settings import LimitSettings

MAX_COLUMNS = 512  # XLSX columns read per sheet: a sheet may claim 16,384 per row


def parse_docx(data: bytes, limits: LimitSettings) -> ParsedDocument:
    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(data))
    blocks: list[str] = []
    tables = 0
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            tables += 1
            blocks.append(table_text([cell.text for cell in row.cells] for row in block.rows))
        else:
            blocks.append(block.text)
    text = normalise("\n\n".join(b for b in blocks if b.strip()))
    return ParsedDocument(text, report={"tables": tables})


def parse_pptx(data: bytes, limits: LimitSettings) -> ParsedDocument:
    """One page per slide: its shapes' text, its tables, then its speaker notes."""
    from pptx import Presentation

    presentation = Presentation(io.BytesIO(data))
    count = len(presentation.slides)
    if count > limits.max_pdf_pages:
        raise ParseLimitExceeded(
            f"the presentation has {count} slides; the limit is {limits.max_pdf_pages}"
        )
    pages: list[tuple[int, str]] = []
    tables = 0
    for number, slide in enumerate(presentation.slides, start=1):
        parts: list[str] = []
        for shape in _shapes(slide.shapes):
            if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
                parts.append(shape.text_frame.text)
            if getattr(shape, "has_table", False) and shape.has_table:
                tables += 1
                rows = shape.table.rows
                parts.append(table_text([cell.text for cell in row.cells] for row in rows))
        notes = slide.notes_slide.notes_text_frame if slide.has_notes_slide else None
        if notes is not None and notes.text.strip():
            parts.append(f"Notes: {notes.text}")
        pages.append((number, "\n\n".join(p for p in parts if p.strip())))
    return paged(pages, tables=tables)


def _shapes(shapes: Any) -> Iterator[Any]:
    from pptx.shapes.group import GroupShape

    for shape in shapes:
        if isinstance(shape, GroupShape):
            yield from _shapes(shape.shapes)
        else:
            yield shape


def parse_xlsx(data: bytes, limits: LimitSettings) -> ParsedDocument:
    """One page per sheet: its name, then each row named by the header row."""
    from openpyxl import load_workbook

    workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheets = [s for s in workbook.worksheets if hasattr(s, "iter_rows")]
        if len(sheets) > limits.max_pdf_pages:
            raise ParseLimitExceeded(
                f"the workbook has {len(sheets)} sheets; the limit is {limits.max_pdf_pages}"
            )
        pages: list[tuple[int, str]] = []
        warnings: list[str] = []
        tables = 0
        for number, sheet in enumerate(sheets, start=1):
            sheet.reset_dimensions()  # the declared size may lie; read the rows there are
            rows = sheet.iter_rows(values_only=True, max_col=MAX_COLUMNS)
            body = table_text(_watch_width(rows, sheet.title, warnings))
            tables += bool(body)
            pages.append((number, f"{sheet.title}\n\n{body}" if body else sheet.title))
    finally:
        workbook.close()
    return paged(pages, tables=tables, warnings=warnings)


def _watch_width(
    rows: Iterator[Sequence[object]], title: str, warnings: list[str]
) -> Iterator[Sequence[object]]:
    warned = False
    for row in rows:
        if not warned and len(row) >= MAX_COLUMNS and row[-1] is not None:
            warnings.append(f"sheet {title}: columns after the first {MAX_COLUMNS} were ignored")
            warned = True
        yield row


_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"


def parse_odt(data: bytes, limits: LimitSettings) -> ParsedDocument:
    """Headings, paragraphs, lists and tables of content.xml, in document order."""
    from defusedxml.ElementTree import fromstring

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        root = fromstring(archive.read("content.xml"), forbid_dtd=True)
    body = root.find(f"{_OFFICE}body/{_OFFICE}text")
    if body is None:
        raise DocumentError("the ODT file has no text body")
    blocks: list[str] = []
    tables = _odf_blocks(body, blocks)
    text = normalise("\n\n".join(b for b in blocks if b.strip()))
    return ParsedDocument(text, report={"tables": tables})


def _odf_blocks(element: Any, blocks: list[str]) -> int:
    """Append the text blocks under `element`; return the number of tables met."""
    tables = 0
    for child in element:
        if child.tag in (f"{_TEXT}p", f"{_TEXT}h"):
            blocks.append(_odf_inline(child))
        elif child.tag == f"{_TABLE}table":
            tables += 1
            rows = [
                [_odf_inline(cell) for cell in row.iter(f"{_TABLE}table-cell")]
                for row in child.iter(f"{_TABLE}table-row")
            ]
            blocks.append(table_text(rows))
        else:
            tables += _odf_blocks(child, blocks)
    return tables


def _odf_inline(element: Any) -> str:
    parts = [element.text or ""]
    for child in element:
        if child.tag == f"{_TEXT}s":  # c consecutive spaces
            count = child.get(f"{_TEXT}c", "1")
            parts.append(" " * min(int(count) if count.isdigit() else 1, 100))
        elif child.tag == f"{_TEXT}tab":
            parts.append("\t")
        elif child.tag == f"{_TEXT}line-break":
            parts.append("\n")
        elif child.tag == f"{_TEXT}p":  # paragraphs inside a table cell or a note
            parts.append("\n" + _odf_inline(child))
        else:
            parts.append(_odf_inline(child))
        parts.append(child.tail or "")
    return "".join(parts)
