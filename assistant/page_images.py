"""A PDF page as a PNG of bounded size, with the cited sentence (and, lightly, its passage)
highlighted where it is printed.

The sentence comes from the document's extracted text (pypdf), the boxes from pdfium's own
text layer, and the two differ in white space, hyphenation, ligatures and punctuation. Both
are therefore folded to their letters and digits only (NFKC, case-folded) and matched whole;
failing that, the longest run of the sentence's words printed on the page is taken, if it is
long enough to mean something. The caller learns whether the text was found whole, in part
or not at all, so a page never claims a highlight it could not place.

pdfium is not thread-safe (pypdfium2's documentation), so one lock serialises every call."""

from __future__ import annotations

import ctypes
import io
import math
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assistant.errors import DocumentError, NotFound

if TYPE_CHECKING:
    from pypdfium2 import PdfPage, PdfTextPage

MAX_WIDTH = 1200  # pixels: the widest image rendered
MAX_PIXELS = 1200 * 1800  # a very tall (or huge) page is rendered smaller
MAX_SCALE = 4.0  # a tiny page is not blown up past 288 dpi
MAX_PAGE_CHARS = 100_000  # text beyond this on one page is not searched (a page holds ~3,000)
MIN_RUN_WORDS = 3  # a partial match shorter than this highlights nothing
MIN_RUN_CHARS = 12
SENTENCE_FILL = (255, 200, 0, 110)
SENTENCE_EDGE = (200, 140, 0, 255)
PASSAGE_FILL = (255, 225, 120, 60)

Box = tuple[float, float, float, float]  # PDF points (left, bottom, right, top) or pixels
# (left, top, right, bottom), as the field holding it says

_pdfium_lock = threading.Lock()


@dataclass(frozen=True)
class Located:
    """Where a text is on the page: `complete` when all of it was matched, `found` when at
    least a long enough run of its words was; `boxes`, one per line of the matched text."""

    found: bool = False
    complete: bool = False
    boxes: tuple[Box, ...] = ()


@dataclass(frozen=True)
class PageImage:
    png: bytes
    width: int
    height: int
    sentence: Located  # boxes in the image's pixels
    passage: Located


class _PageText:
    """The page's characters folded to letters and digits, each mapped to its pdfium index."""

    def __init__(self, textpage: PdfTextPage) -> None:
        import pypdfium2.raw as raw

        self.textpage = textpage
        count = min(textpage.count_chars(), MAX_PAGE_CHARS)
        self.chars = [chr(raw.FPDFText_GetUnicode(textpage, i)) for i in range(count)]
        folded: list[str] = []
        self.where: list[int] = []
        for index, printed in enumerate(self.chars):
            for char in _fold(printed):
                folded.append(char)
                self.where.append(index)
        self.folded = "".join(folded)

    def locate(self, text: str | None, near: int = 0) -> tuple[Located, int]:
        """`text`'s line rectangles in PDF points (an occurrence from folded position `near`
        on is preferred), and where it starts in the folded text (-1: not found)."""
        words = [word for word in (_fold(w) for w in (text or "").split()) if word]
        whole = "".join(words)
        if not whole:
            return Located(), -1
        at = self.folded.find(whole, near)
        at = at if at >= 0 else self.folded.find(whole)
        if at >= 0:
            pieces, complete = [(at, len(whole))], True
        else:  # lines printed in another order (columns, a rotated page), or words changed
            runs = _runs(self.folded, words)
            pieces = [(run[0], run[1]) for run in runs]
            complete = bool(runs) and sum(run[2] for run in runs) == len(words)
        boxes: list[Box] = []
        for at, length in pieces:
            boxes.extend(self._rects(self.where[at], self.where[at + length - 1]))
        return Located(bool(pieces), complete, tuple(boxes)), min(pieces, default=(-1, 0))[0]

    def _rects(self, first: int, last: int) -> list[Box]:
        while last + 1 < len(self.chars) and not (
            self.chars[last + 1].isspace() or _fold(self.chars[last + 1])
        ):
            last += 1  # the closing punctuation: "March." is highlighted with its full stop
        count = self.textpage.count_rects(first, last - first + 1)
        return [tuple(self.textpage.get_rect(i)) for i in range(count)]  # type: ignore[misc]


def _fold(text: str) -> str:
    """Letters and digits only, compatibility-normalised and case-folded ("ﬁ" is "fi")."""
    return "".join(c for c in unicodedata.normalize("NFKC", text).casefold() if c.isalnum())


def _runs(folded: str, words: list[str]) -> list[tuple[int, int, int]]:
    """(position in `folded`, length, words) of the longest run of consecutive `words`
    printed on the page, then of the longest runs before and after it, and so on: only runs
    of at least MIN_RUN_WORDS words and MIN_RUN_CHARS characters count."""
    best = (-1, 0, 0, 0)  # position, length, first word, last word + 1
    for start in range(len(words)):
        end = start + max(best[3] - best[2] + 1, MIN_RUN_WORDS)
        while end <= len(words):
            run = "".join(words[start:end])
            at = folded.find(run)
            if at < 0:
                break
            if len(run) >= MIN_RUN_CHARS:
                best = (at, len(run), start, end)
            end += 1
    at, length, first, last = best
    if at < 0:
        return []
    before, after = _runs(folded, words[:first]), _runs(folded, words[last:])
    return [*before, (at, length, last - first), *after]


@contextmanager
def _opened(data: bytes, page_number: int) -> Iterator[tuple[PdfPage, _PageText]]:
    """Page `page_number` (1-based) and its text, under the pdfium lock; NotFound if the PDF
    has no such page."""
    import pypdfium2 as pdfium

    with _pdfium_lock:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            raise DocumentError(f"the PDF could not be opened to show its page: {exc}") from None
        try:
            total = len(document)
            if not 1 <= page_number <= total:
                raise NotFound(f"the PDF has {total} page(s); there is no page {page_number}")
            page = document[page_number - 1]
            textpage = page.get_textpage()
            try:
                yield page, _PageText(textpage)
            finally:
                textpage.close()
                page.close()
        except pdfium.PdfiumError as exc:
            raise DocumentError(f"page {page_number} of the PDF could not be read: {exc}") from None
        finally:
            document.close()


def locate(
    data: bytes, page_number: int, sentence: str | None, passage: str | None = None
) -> tuple[Located, Located]:
    """Where the sentence and its passage are on page `page_number` (1-based), without
    rendering it; boxes in PDF points."""
    with _opened(data, page_number) as (_, page_text):
        return _both(page_text, sentence, passage)


def _both(
    page_text: _PageText, sentence: str | None, passage: str | None
) -> tuple[Located, Located]:
    """The sentence is looked for inside its passage first: a page may print it twice."""
    passage_at, start = page_text.locate(passage)
    return page_text.locate(sentence, near=max(start, 0))[0], passage_at


def render(
    data: bytes,
    page_number: int,
    sentence: str | None = None,
    passage: str | None = None,
    *,
    passage_only: bool = False,
    max_width: int = MAX_WIDTH,
) -> PageImage:
    """Page `page_number` (1-based) as a PNG at most `max_width` pixels wide, the passage
    lightly and the sentence strongly highlighted. With `passage_only`, everything but the
    passage's own lines is painted over, and a passage not located at all is NotFound."""
    from PIL import Image, ImageDraw

    with _opened(data, page_number) as (page, page_text):
        width, height = (max(side, 1.0) for side in page.get_size())
        scale = min(max_width / width, math.sqrt(MAX_PIXELS / (width * height)), MAX_SCALE)
        pixels_wide, pixels_high = math.ceil(width * scale), math.ceil(height * scale)
        while pixels_wide > max_width or pixels_wide * pixels_high > MAX_PIXELS:
            scale *= 0.99  # pypdfium2 rounds the bitmap's sides up
            pixels_wide, pixels_high = math.ceil(width * scale), math.ceil(height * scale)
        image = page.render(scale=scale).to_pil().convert("RGBA")
        sentence_at, passage_at = _both(page_text, sentence, passage)
        passage_at = _in_pixels(page, image.size, passage_at)
        sentence_at = _in_pixels(page, image.size, sentence_at)

    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for box in passage_at.boxes:
        draw.rectangle(_padded(box, 2), fill=PASSAGE_FILL)
    for box in sentence_at.boxes:
        draw.rectangle(_padded(box, 2), fill=SENTENCE_FILL, outline=SENTENCE_EDGE, width=2)
    image = Image.alpha_composite(image, overlay)
    if passage_only:  # painted over last, so nothing outside the passage shows, not even a box
        if not passage_at.found:
            raise NotFound("the passage could not be located on the page image")
        keep = Image.new("L", image.size, 0)
        for box in passage_at.boxes:
            ImageDraw.Draw(keep).rectangle(_padded(box, 3), fill=255)
        image = Image.composite(image, Image.new("RGBA", image.size, "white"), keep)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return PageImage(buffer.getvalue(), *image.size, sentence_at, passage_at)


def _in_pixels(page: PdfPage, size: tuple[int, int], located: Located) -> Located:
    """The boxes moved from PDF points to the rendered image's pixels (pdfium's own mapping,
    so the page's rotation and crop box are taken into account)."""
    import pypdfium2.raw as raw

    def point(x: float, y: float) -> tuple[int, int]:
        device_x, device_y = ctypes.c_int(), ctypes.c_int()
        raw.FPDF_PageToDevice(
            page, 0, 0, size[0], size[1], 0, x, y, ctypes.byref(device_x), ctypes.byref(device_y)
        )
        return device_x.value, device_y.value

    boxes: list[Box] = []
    for left, bottom, right, top in located.boxes:
        (x1, y1), (x2, y2) = point(left, top), point(right, bottom)
        boxes.append((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
    return Located(located.found, located.complete, tuple(boxes))


def _padded(box: Box, by: float) -> Box:
    return box[0] - by, box[1] - by, box[2] + by, box[3] + by
