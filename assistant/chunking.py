"""Split text into overlapping chunks that keep their character offsets and page."""

from __future__ import annotations

import re
from dataclasses import dataclass

from assistant.parsing import ParsedDocument

_BREAKS = (
    re.compile(r"\n\s*\n"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?])\s+"),
    re.compile(r"\s+"),
)


@dataclass(frozen=True)
class TextChunk:
    index: int
    text: str
    start: int  # offsets into ParsedDocument.text; text == parsed.text[start:end]
    end: int
    page: int | None


def chunk_document(parsed: ParsedDocument, size: int, overlap: int) -> list[TextChunk]:
    """Greedy chunks of at most `size` characters, cut at the strongest nearby boundary
    (paragraph, line, sentence, word), each starting `overlap` characters before the last end.
    A chunk never crosses a PDF page, so its page number is exact."""
    segments = [(span.start, span.end) for span in parsed.pages] or [(0, len(parsed.text))]
    chunks: list[TextChunk] = []
    for segment_start, segment_end in segments:
        text = parsed.text[:segment_end]
        start = _skip_space(text, segment_start)
        while start < len(text):
            end = _cut(text, start, size)
            piece_end = _trim_end(text, start, end)
            chunks.append(
                TextChunk(
                    len(chunks), text[start:piece_end], start, piece_end, parsed.page_at(start)
                )
            )
            if end >= len(text):
                break
            next_start = max(end - overlap, start + 1)
            next_start = _align_to_word(text, next_start, end)
            start = _skip_space(text, next_start)
    return chunks


def _cut(text: str, start: int, size: int) -> int:
    hard_end = start + size
    if hard_end >= len(text):
        return len(text)
    window = text[start:hard_end]
    # Prefer a boundary in the second half of the window, strongest kind first.
    for pattern in _BREAKS:
        matches = [m for m in pattern.finditer(window) if m.start() >= size // 2]
        if matches:
            return start + matches[-1].end()
    return hard_end


def _align_to_word(text: str, position: int, limit: int) -> int:
    """Move an overlap start forward to the beginning of a word."""
    if position == 0 or text[position - 1].isspace():
        return position
    match = re.compile(r"\s").search(text, position, limit)
    return match.end() if match else position


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _trim_end(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


# -- contextual headers ---------------------------------------------------------------------
_MARKDOWN_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_NUMBERED_HEADING = re.compile(
    r"^\s*(?:(?:article|section|part|chapter)\s+)?[0-9IVXL]+(?:\.[0-9]+)*\.?\s+\S", re.IGNORECASE
)
_SEPARATORS = re.compile(r"[-_\s]+")


def document_title(filename: str, text: str) -> str:
    """A document's title: its first Markdown heading near the top; else its file name
    without the extension, underscores and hyphens read as spaces; else, when the name has
    no words (an id, a number), the document's first line."""
    for line in text[:300].splitlines():
        match = _MARKDOWN_HEADING.match(line)
        if match:
            return match.group(1)[:120]
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    name = _SEPARATORS.sub(" ", stem).strip()
    if sum(c.isalpha() for c in name) >= 3:
        return name[:120]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return " ".join(first.split())[:120] or name


def _heading(line: str) -> str | None:
    """The line as a heading (Markdown, numbered "12. Governing law", or a short line in
    capitals), or None."""
    stripped = " ".join(line.split())
    match = _MARKDOWN_HEADING.match(line)
    if match:
        return match.group(1)
    if not stripped or len(stripped) > 80 or len(stripped.split()) > 10:
        return None
    letters = [c for c in stripped if c.isalpha()]
    if len(letters) < 3:
        return None
    capitals = sum(c.isupper() for c in letters) / len(letters)
    numbered = _NUMBERED_HEADING.match(stripped) and not stripped.endswith((",", ";"))
    if capitals > 0.8 or (numbered and len(stripped.split()) <= 6):
        return stripped
    return None


def chunk_contexts(filename: str, text: str, starts: list[int]) -> list[str]:
    """Each chunk's contextual header: the document title, then the nearest heading above the
    chunk's start (if any, and not the title itself)."""
    title = document_title(filename, text)
    headings: list[tuple[int, str]] = []
    offset = 0
    for line in text.splitlines(keepends=True):
        heading = _heading(line)
        if heading and heading.lower() != title.lower():
            headings.append((offset, heading[:80]))
        offset += len(line)
    contexts = []
    position, current = 0, ""
    for start in starts:
        while position < len(headings) and headings[position][0] <= start:
            current = headings[position][1]
            position += 1
        contexts.append(f"{title} — {current}" if current else title)
    return contexts
