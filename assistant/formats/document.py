"""The parsed document every reader returns, and the text helpers the readers share."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PageSpan:
    number: int  # 1-based page number (the slide for PPTX, the sheet for XLSX)
    start: int  # character offset of the page's first character in ParsedDocument.text
    end: int


@dataclass(frozen=True)
class ParsedDocument:
    text: str
    pages: list[PageSpan] = field(default_factory=list)
    # The parse report: format, pages, characters, ocr_pages (page numbers), tables,
    # warnings. Plain JSON-ready data; parse() fills in the totals.
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def page_count(self) -> int | None:
        return len(self.pages) or None

    def page_at(self, offset: int) -> int | None:
        for span in self.pages:
            if span.start <= offset < span.end:
                return span.number
        return self.pages[-1].number if self.pages else None


def normalise(text: str) -> str:
    """Unix newlines, no trailing spaces, at most one blank line in a row. Linear time
    (a regex for trailing spaces is quadratic on a long run of spaces)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    text = "\n".join(line.rstrip(" \t\f\v") for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def paged(pages: Iterable[tuple[int, str]], **report: Any) -> ParsedDocument:
    """Join (page number, text) pairs with blank lines, remembering where each page is."""
    parts: list[str] = []
    spans: list[PageSpan] = []
    offset = 0
    for number, page_text in pages:
        text = normalise(page_text)
        if parts:
            offset += 2  # the "\n\n" joining pages
        spans.append(PageSpan(number, offset, offset + len(text)))
        parts.append(text)
        offset += len(text)
    return ParsedDocument("\n\n".join(parts), spans, dict(report))


def cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "isoformat"):  # dates and times
        return str(value.isoformat()).removesuffix("T00:00:00")
    return " ".join(str(value).split())


def table_text(rows: Iterable[Sequence[object]]) -> str:
    """One line per row, each value named by its header: "Region: North; Sales: 10".
    The first non-empty row is the header; a one-row table is joined with " | "."""
    header: list[str] | None = None
    lines: list[str] = []
    for row in rows:
        cells = [cell_text(value) for value in row]
        if not any(cells):
            continue
        if header is None:
            header = cells
            continue
        named = [
            f"{header[i] if i < len(header) and header[i] else f'Column {i + 1}'}: {cell}"
            for i, cell in enumerate(cells)
            if cell
        ]
        lines.append("; ".join(named))
    if header is not None and not lines:
        return " | ".join(cell for cell in header if cell)
    return "\n".join(lines)
