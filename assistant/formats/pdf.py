"""PDF: the text layer of each page (pypdf), and OCR with Tesseract for pages without one
(rendered by pypdfium2, read by the tesseract-ocr Debian package through pytesseract)."""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

from assistant.errors import DocumentError, ParseLimitExceeded, UnsafeDocument
from assistant.formats.document import ParsedDocument, normalise, paged
from assistant.settings import LimitSettings

OCR_DPI = 300  # Tesseract reads best at about 300 dpi
OCR_MAX_PIXELS = 25_000_000  # a page with a huge media box is rendered smaller
OCR_PAGE_SECONDS = 120


def parse_pdf(data: bytes, limits: LimitSettings) -> ParsedDocument:
    if b"%%EOF" not in data[-1024:]:
        raise DocumentError(
            "the PDF is damaged or truncated (no %%EOF marker at its end); upload the complete file"
        )
    with _pypdf_warnings() as damage:
        texts = _text_layer(data, limits)
    if any("Circular xref" in message for message in damage):
        raise UnsafeDocument(
            "the PDF's cross-reference chain loops back on itself (a circular xref), "
            "a sign of a crafted or badly damaged file"
        )
    warnings = [f"PDF repaired while reading: {m[:120]}" for m in dict.fromkeys(damage)][:5]
    without_text = [index for index, text in enumerate(texts) if not text]
    ocr_pages: list[int] = []
    if without_text:
        chosen = without_text[: limits.max_ocr_pages]
        if len(without_text) > len(chosen):
            skipped = len(without_text) - len(chosen)
            warnings.append(
                f"OCR skipped {skipped} scanned page(s): the limit is {limits.max_ocr_pages} "
                "per document"
            )
        for index, text in _ocr(data, chosen, warnings).items():
            texts[index] = text
            ocr_pages.append(index + 1)
    return paged(enumerate(texts, start=1), ocr_pages=ocr_pages, warnings=warnings)


def _text_layer(data: bytes, limits: LimitSettings) -> list[str]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")  # an owner password alone still lets anyone read
        except Exception:
            opened = 0
        if not opened:
            raise DocumentError(
                "the PDF is encrypted (password-protected); upload an unprotected copy"
            )
    page_total = len(reader.pages)
    if page_total > limits.max_pdf_pages:
        raise ParseLimitExceeded(
            f"the PDF has {page_total} pages; the limit is {limits.max_pdf_pages}"
        )
    return [normalise(page.extract_text() or "") for page in reader.pages]


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


@contextmanager
def _pypdf_warnings() -> Iterator[list[str]]:
    """pypdf's warnings about damage it repaired, kept for the report instead of logged."""
    log = logging.getLogger("pypdf")
    collector, propagate = _Collector(), log.propagate
    log.addHandler(collector)
    log.propagate = False
    try:
        yield collector.messages
    finally:
        log.removeHandler(collector)
        log.propagate = propagate


def _ocr(data: bytes, indexes: list[int], warnings: list[str]) -> dict[int, str]:
    """Text of the given pages (0-based) that hold an image, read by Tesseract."""
    import pypdfium2 as pdfium
    import pytesseract

    results: dict[int, str] = {}
    document = pdfium.PdfDocument(data)
    try:
        for index in indexes:
            page = document[index]
            try:
                images = page.get_objects(filter=[pdfium.raw.FPDF_PAGEOBJ_IMAGE], max_depth=4)
                if next(iter(images), None) is None:
                    continue  # a blank page: nothing to read
                width, height = page.get_size()
                scale = min(OCR_DPI / 72, math.sqrt(OCR_MAX_PIXELS / max(width * height, 1.0)))
                image = page.render(scale=scale, grayscale=True).to_pil()
            finally:
                page.close()
            try:
                text = pytesseract.image_to_string(image, lang="eng", timeout=OCR_PAGE_SECONDS)
            except pytesseract.TesseractNotFoundError:
                raise DocumentError(
                    "the PDF needs OCR but Tesseract is not installed "
                    "(apt-get install tesseract-ocr tesseract-ocr-eng)"
                ) from None
            except (pytesseract.TesseractError, RuntimeError) as exc:
                warnings.append(f"OCR failed on page {index + 1}: {str(exc)[:200]}")
                continue
            results[index] = normalise(text)
    finally:
        document.close()
    return results
