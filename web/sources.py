"""The source view: a document's extracted text with the cited passage highlighted lightly
and, when the link gives its offsets, the sentence that supports the answer highlighted
within it (`?chunk=<chunk id>&start=<sentence start>&end=<sentence end>`, offsets into the
document's extracted text, as the answer's citations give them).

Offsets that are missing a half, not whole numbers, or not inside the passage are not an
error: the whole passage is highlighted instead, and the page says why.

Auditors see only the passages that audit records say were retrieved for a question: the
passage itself, never the rest of its document.

A passage of a PDF also shows its page as printed (`/documents/<id>/page/<n>.png`, same
query), the sentence's boxes highlighted on it, under the same access rule: for an auditor,
everything on the page but the passage's own lines is blanked."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from flask import Blueprint, Response, render_template, request, url_for

from assistant import page_images
from assistant.db import Chunk, Document, DocumentStatus
from assistant.documents import Scope
from assistant.errors import AssistantError, InvalidInput, NotFound
from web.auth import audit, principal, scope
from web.state import services

logger = logging.getLogger(__name__)

bp = Blueprint("sources", __name__)

_OFFSET = re.compile(
    r"[0-9]{1,9}"
)  # ASCII digits only: int() also takes " 7", "+7", other scripts' digits
_PAGE = re.compile(r"[1-9][0-9]{0,5}")


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


@dataclass(frozen=True)
class Cited:
    """What a source link may show, once access is checked: the document, the passage (if
    the link names one) and whether only that passage may be shown (an auditor)."""

    document: Document
    chunk: Chunk | None
    passage_only: bool
    readable: Scope  # the collections the caller may read (None: an auditor's passage)


def cited(document_id: str) -> Cited:
    """The source view's access rule, shared by the page image. A reader gets documents of
    the collections they may read; an auditor only a passage that an audit record says was
    retrieved; anything else is the same NotFound as an unknown id."""
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
    return Cited(document, chunk, auditor, readable)


@bp.get("/documents/<document_id>/source")
def source(document_id: str) -> str:
    shown = cited(document_id)
    document, chunk, auditor = shown.document, shown.chunk, shown.passage_only
    sentence = sentence_in(request.args, chunk)
    if auditor and chunk is not None:
        parts = marked(chunk.text, chunk.char_start, chunk, sentence)  # the passage, no more
    else:
        parts = marked(services().documents.text(document_id, shown.readable), 0, chunk, sentence)
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
        figure=page_figure(shown, sentence),
    )


# -- the page as printed --------------------------------------------------------------------
def renderable(shown: Cited) -> str | None:
    """Why the document has no page images for this caller, or None. Only a PDF that passed
    its checks in the parsing sandbox is rendered (in this process); staff see the current
    version only, as for downloads."""
    document = shown.document
    if document.extension != ".pdf":
        return f"{document.filename} is not a PDF, so it has no page images"
    if document.status != DocumentStatus.INDEXED:
        return f"{document.filename} has not passed its checks, so its pages are not shown"
    if not document.current and principal().role not in ("admin", "auditor"):
        return f"page images are shown for the current version of {document.filename} only"
    return None


def original(document: Document) -> bytes:
    try:
        return services().documents.original_path(document.id).read_bytes()
    except FileNotFoundError:
        raise NotFound(f"the stored file of {document.filename} is missing") from None


def sentence_text(chunk: Chunk, sentence: Sentence) -> str | None:
    if sentence.start is None or sentence.end is None:
        return None
    return chunk.text[sentence.start - chunk.char_start : sentence.end - chunk.char_start]


@dataclass(frozen=True)
class Figure:
    url: str
    alt: str
    note: str


def page_figure(shown: Cited, sentence: Sentence) -> Figure | None:
    """The page image under the text, with what it highlights, when there is one to show."""
    document, chunk = shown.document, shown.chunk
    if chunk is None or chunk.page is None or renderable(shown):
        return None
    wanted = sentence_text(chunk, sentence)
    try:
        found, passage = page_images.locate(original(document), chunk.page, wanted, chunk.text)
    except AssistantError as exc:  # the text view stands on its own
        logger.warning("no page image for %s page %s: %s", document.id, chunk.page, exc)
        return None
    if shown.passage_only and not passage.found:
        return None  # the image would show nothing (and says so with a 404)
    page = f"Page {chunk.page} of {document.filename}"
    if wanted and found.found:
        cited_part = "the cited sentence" if found.complete else "part of the cited sentence"
        note = f"On the page as printed, {cited_part} is highlighted."
        alt = f"{page} with {cited_part} highlighted"
    elif passage.found:
        note = "On the page as printed, the cited passage is highlighted."
        if wanted:
            note = "The sentence was not located on the page image; its passage is highlighted."
        alt = f"{page} with the cited passage highlighted"
    else:  # a scanned page, say, whose text came from OCR
        missing = "Neither the sentence nor its passage was" if wanted else "The passage was not"
        note = f"{missing} located on the page image; the page is shown as printed."
        alt = f"{page}; the cited text was not located on it"
    if shown.passage_only:
        note += " Only the retrieved passage is shown; the rest of the page is blanked."
        alt += ", everything but the retrieved passage blanked"
    query = {"start": sentence.start, "end": sentence.end} if wanted else {}
    url = url_for(
        "sources.page_image",
        document_id=document.id,
        page=str(chunk.page),
        chunk=chunk.id,
        **query,
    )
    return Figure(url, alt, note)


@bp.get("/documents/<document_id>/page/<page>.png")
def page_image(document_id: str, page: str) -> Response:
    """Page `page` of a PDF as a PNG, the sentence `?chunk=&start=&end=` highlighted on it.
    Access first (the same 404 as an unknown document), then the input, then the audit
    record, and only then the bytes."""
    shown = cited(document_id)
    document, chunk = shown.document, shown.chunk
    reason = renderable(shown)
    if reason:
        raise NotFound(reason)
    if not _PAGE.fullmatch(page):
        raise InvalidInput(f"the page number {page[:16]!r} is not a whole number from 1 up")
    number = int(page)
    if document.page_count is None or number > document.page_count:
        raise NotFound(f"{document.filename} has {document.page_count or 0} page(s), not {number}")
    if chunk is not None and chunk.page != number:
        raise InvalidInput(f"passage {chunk.id} is on page {chunk.page}, not on page {number}")
    sentence = sentence_in(request.args, chunk)
    if sentence.refused:
        raise InvalidInput(sentence.refused)
    wanted = sentence_text(chunk, sentence) if chunk else None
    image = page_images.render(
        original(document),
        number,
        wanted,
        chunk.text if chunk else None,
        passage_only=shown.passage_only,
    )
    audit(
        "document.page_view",
        {
            "document_id": document.id,
            "filename": document.filename,
            "page": number,
            "chunk_id": chunk.id if chunk else None,
            "sentence_start": sentence.start,
            "sentence_end": sentence.end,
            "sentence_located": located(image.sentence) if wanted else None,
            "passage_only": shown.passage_only,
        },
    )
    response = Response(image.png, mimetype="image/png")
    response.headers["Cache-Control"] = "private, no-store"
    return response


def located(where: page_images.Located) -> str:
    return "whole" if where.complete else "part" if where.found else "no"
