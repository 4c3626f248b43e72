"""The source view: a document's extracted text with the cited passage highlighted lightly
and, when the link gives its offsets, the sentence that supports the answer highlighted
within it (`?chunk=<chunk id>&start=<sentence start>&end=<sentence end>`, offsets into the
document's extracted text, as the answer's citations give them).

Offsets that are missing a half, not whole numbers, or not inside the passage are not an
error: the whole passage is highlighted instead, and the page says why.

Auditors see only the passages that audit records say were retrieved for a question: the
passage itself, never the rest of its document."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from flask import Blueprint, render_template, request

from assistant.db import Chunk
from assistant.errors import NotFound
from web.auth import audit, principal, scope
from web.state import services

bp = Blueprint("sources", __name__)

_OFFSET = re.compile(
    r"[0-9]{1,9}"
)  # ASCII digits only: int() also takes " 7", "+7", other scripts' digits


@dataclass(frozen=True)
class Sentence:
    """The supporting sentence's offsets in the document text, or why the link's were refused."""

    start: int | None = None
    end: int | None = None
    refused: str | None = None


@dataclass(frozen=True)
class Marked:
    """The text shown, cut around the passage and the sentence inside it."""

    before: str = ""
    lead: str = ""  # the passage up to the sentence (all of it when no sentence is marked)
    sentence: str = ""
    trail: str = ""  # the passage after the sentence
    after: str = ""


def sentence_in(args: Mapping[str, str], chunk: Chunk | None) -> Sentence:
    """The `start` and `end` query parameters, checked against the passage they must lie in."""
    raw_start, raw_end = args.get("start"), args.get("end")
    if raw_start is None and raw_end is None:
        return Sentence()
    if chunk is None:
        return Sentence(refused="a sentence position needs the passage it belongs to")
    if raw_start is None or raw_end is None:
        return Sentence(refused="the link gives only one end of the sentence")
    if not (_OFFSET.fullmatch(raw_start) and _OFFSET.fullmatch(raw_end)):
        return Sentence(refused="the sentence position in the link is not a pair of whole numbers")
    start, end = int(raw_start), int(raw_end)
    if not chunk.char_start <= start < end <= chunk.char_end:
        return Sentence(refused="the sentence position in the link is not inside this passage")
    return Sentence(start, end)


def marked(text: str, offset: int, chunk: Chunk | None, sentence: Sentence) -> Marked:
    """Cut `text` (which starts at document offset `offset`) around the passage and the
    sentence; positions outside the text are clamped, so a cut never fails."""
    if chunk is None:
        return Marked(before=text)

    def at(position: int) -> int:
        return max(0, min(position - offset, len(text)))

    start, end = at(chunk.char_start), at(chunk.char_end)
    if sentence.start is None or sentence.end is None:
        return Marked(text[:start], text[start:end], "", "", text[end:])
    first, last = at(sentence.start), at(sentence.end)
    return Marked(text[:start], text[start:first], text[first:last], text[last:end], text[end:])


@bp.get("/documents/<document_id>/source")
def source(document_id: str) -> str:
    chunk_id = request.args.get("chunk", "").strip()
    documents = services().documents
    auditor = principal().role == "auditor"
    if auditor and not services().audit_log.was_retrieved(chunk_id):
        raise NotFound(f"no passage {chunk_id or '(none given)'} in the audit log")
    readable = None if auditor else scope()
    document = documents.get(document_id, readable)
    chunk = documents.chunk(chunk_id, readable) if chunk_id else None
    if chunk is not None and chunk.document_id != document_id:
        raise NotFound(f"passage {chunk_id} is not part of document {document.filename}")
    sentence = sentence_in(request.args, chunk)
    if auditor and chunk is not None:
        parts = marked(chunk.text, chunk.char_start, chunk, sentence)  # the passage, no more
    else:
        parts = marked(documents.text(document_id, readable), 0, chunk, sentence)
    details = {
        "document_id": document.id,
        "filename": document.filename,
        "chunk_id": chunk.id if chunk else None,
        "sentence_start": sentence.start,
        "sentence_end": sentence.end,
    }
    if sentence.refused:  # what the link asked for, bounded
        details["refused_offsets"] = {
            "start": request.args.get("start", "")[:32],
            "end": request.args.get("end", "")[:32],
            "reason": sentence.refused,
        }
    audit("document.view", details)
    # The text is passed as plain strings: Jinja autoescaping keeps it from being HTML.
    return render_template(
        "source.html",
        document=document,
        chunk=chunk,
        parts=parts,
        refused=sentence.refused,
        passage_only=auditor,
    )
