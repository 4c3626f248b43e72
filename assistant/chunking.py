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
