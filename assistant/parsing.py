"""Turn an uploaded file into plain text, keeping where each PDF page starts."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import DocumentError, UnsupportedFileType
from assistant.settings import SUPPORTED_EXTENSIONS


@dataclass(frozen=True)
class PageSpan:
    number: int  # 1-based page number
    start: int  # character offset of the page's first character in ParsedDocument.text
    end: int


@dataclass(frozen=True)
class ParsedDocument:
    text: str
    pages: list[PageSpan] = field(default_factory=list)

    @property
    def page_count(self) -> int | None:
        return len(self.pages) or None

    def page_at(self, offset: int) -> int | None:
        for span in self.pages:
            if span.start <= offset < span.end:
                return span.number
        return self.pages[-1].number if self.pages else None


def check_extension(filename: str) -> str:
    extension = Path(filename).suffix.lower()
    if extension not in SUPPORTED_EXTENSIONS:
        allowed = ", ".join(SUPPORTED_EXTENSIONS)
        shown = extension or "no extension"
        raise UnsupportedFileType(f"{filename}: unsupported file type ({shown}); use {allowed}")
    return extension


def parse(data: bytes, extension: str, *, max_pdf_pages: int = 2000) -> ParsedDocument:
    """Parse file bytes by extension. Raises DocumentError with a reason an admin can act on."""
    if not data:
        raise DocumentError("the file is empty")
    if extension in (".txt", ".md"):
        parsed = ParsedDocument(_decode_text(data))
    elif extension in (".html", ".htm"):
        parsed = ParsedDocument(_html_to_text(_decode_text(data)))
    elif extension == ".pdf":
        parsed = _parse_pdf(data, max_pdf_pages)
    elif extension == ".docx":
        parsed = ParsedDocument(_parse_docx(data))
    else:
        raise UnsupportedFileType(f"unsupported file type {extension}")
    if not parsed.text.strip():
        hint = " (a scanned PDF without a text layer?)" if extension == ".pdf" else ""
        raise DocumentError(f"no text could be extracted{hint}")
    return parsed


def _decode_text(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"the file is not valid UTF-8 text (byte 0x{data[exc.start]:02x} at position "
            f"{exc.start}); save it as UTF-8 and upload it again"
        ) from None
    if "\x00" in text:
        raise DocumentError("the file holds binary data, not text")
    return _normalise(text)


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t\f\v]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _html_to_text(html: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else ""
    body = soup.get_text("\n")
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in body.splitlines()]
    text = _normalise("\n".join(lines))
    return f"{title}\n\n{text}" if title and not text.startswith(title) else text


def _parse_pdf(data: bytes, max_pages: int) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentError("the PDF is encrypted; upload an unprotected copy")
        page_total = len(reader.pages)
        if page_total > max_pages:
            raise DocumentError(f"the PDF has {page_total} pages; the limit is {max_pages}")
        parts: list[str] = []
        pages: list[PageSpan] = []
        offset = 0
        for number, page in enumerate(reader.pages, start=1):
            page_text = _normalise(page.extract_text() or "")
            if parts:
                offset += 2  # the "\n\n" joining pages
            pages.append(PageSpan(number, offset, offset + len(page_text)))
            parts.append(page_text)
            offset += len(page_text)
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise DocumentError(f"the PDF is damaged or not a PDF ({exc})") from None
    return ParsedDocument("\n\n".join(parts), pages)


def _parse_docx(data: bytes) -> str:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DocumentError(f"the DOCX file is damaged or not a DOCX ({exc})") from None
    blocks = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            blocks.append(" | ".join(cell.text.strip() for cell in row.cells))
    return _normalise("\n\n".join(b for b in blocks if b.strip()))
