"""Turn an uploaded file into plain text, keeping where each page starts, with a parse report.

The readers live in assistant.formats; this module checks the file first and turns any
reader failure into a DocumentError an admin can act on. Untrusted files should be parsed
through assistant.sandbox, which runs parse() in a child process with limits.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from assistant.errors import DocumentError, ParseLimitExceeded, UnsupportedFileType
from assistant.formats.document import PageSpan, ParsedDocument
from assistant.formats.inspection import byte_size, check_content
from assistant.formats.office import parse_docx, parse_odt, parse_pptx, parse_xlsx
from assistant.formats.pdf import parse_pdf
from assistant.formats.plain import parse_csv, parse_eml, parse_html, parse_text
from assistant.settings import LimitSettings

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "PageSpan",
    "ParsedDocument",
    "check_extension",
    "parse",
]

Reader = Callable[[bytes, LimitSettings], ParsedDocument]
_READERS: dict[str, Reader] = {
    ".txt": lambda data, _: parse_text(data),
    ".md": lambda data, _: parse_text(data),
    ".html": lambda data, _: parse_html(data),
    ".htm": lambda data, _: parse_html(data),
    ".csv": lambda data, _: parse_csv(data),
    ".eml": lambda data, _: parse_eml(data),
    ".pdf": parse_pdf,
    ".docx": parse_docx,
    ".pptx": parse_pptx,
    ".xlsx": parse_xlsx,
    ".odt": parse_odt,
}
SUPPORTED_EXTENSIONS = tuple(_READERS)


def check_extension(filename: str) -> str:
    extension = Path(filename).suffix.lower()
    if extension not in SUPPORTED_EXTENSIONS:
        allowed = ", ".join(SUPPORTED_EXTENSIONS)
        shown = extension or "no extension"
        raise UnsupportedFileType(f"{filename}: unsupported file type ({shown}); use {allowed}")
    return extension


def parse(
    data: bytes,
    extension: str,
    *,
    limits: LimitSettings | None = None,
    max_pdf_pages: int | None = None,
) -> ParsedDocument:
    """Parse file bytes by extension. Raises DocumentError with a reason an admin can act on.
    The result's `report` holds format, pages, characters, ocr_pages, tables and warnings."""
    limits = limits or LimitSettings()
    if max_pdf_pages is not None:
        limits = limits.model_copy(update={"max_pdf_pages": max_pdf_pages})
    reader = _READERS.get(extension)
    if reader is None:
        raise UnsupportedFileType(f"unsupported file type {extension}")
    if not data:
        raise DocumentError("the file is empty")
    if len(data) > limits.max_upload_bytes:
        raise ParseLimitExceeded(
            f"the file is {byte_size(len(data))}; the limit is {byte_size(limits.max_upload_bytes)}"
        )
    name = "the PDF" if extension == ".pdf" else f"the {extension[1:].upper()} file"
    try:
        check_content(data, extension, limits)
        parsed = reader(data, limits)
    except DocumentError:
        raise
    except MemoryError:
        memory = byte_size(limits.parse_memory_bytes)
        raise ParseLimitExceeded(f"parsing needed more than {memory} of memory") from None
    except RecursionError:
        raise DocumentError(f"{name} is damaged or nested too deeply") from None
    except Exception as exc:  # any reader failure on untrusted bytes is a damaged file
        what = "not a PDF" if extension == ".pdf" else f"not a real {extension[1:].upper()} file"
        raise DocumentError(f"{name} is damaged or {what} ({describe(exc)})") from None
    if not parsed.text.strip():
        hint = ""
        if extension == ".pdf" and parsed.report.get("ocr_pages"):
            hint = " (its pages have no text layer, and OCR found no words)"
        elif extension == ".pdf":
            hint = " (its pages have no text layer and no scanned images)"
        raise DocumentError(f"no text could be extracted{hint}")
    report = {"format": extension[1:], "ocr_pages": [], "tables": 0, "warnings": []}
    report |= parsed.report
    report |= {"pages": parsed.page_count, "characters": len(parsed.text)}
    return replace(parsed, report=report)


def describe(exc: BaseException) -> str:
    """A short, single-line reason from a library exception (no errno codes, no paths)."""
    message = re.sub(r"\[Errno -?\d+\]\s*", "", str(exc))
    message = " ".join(message.split())[:200]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
