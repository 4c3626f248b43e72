"""The source view: a document's extracted text with the cited passage highlighted."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from assistant.errors import NotFound
from web.state import services

bp = Blueprint("sources", __name__)


@bp.get("/documents/<document_id>/source")
def source(document_id: str) -> str:
    documents = services().documents
    document = documents.get(document_id)
    text = documents.text(document_id)
    chunk_id = request.args.get("chunk", "").strip()
    chunk = None
    before, marked, after = text, "", ""
    if chunk_id:
        chunk = documents.chunk(chunk_id)
        if chunk.document_id != document_id:
            raise NotFound(f"passage {chunk_id} is not part of document {document.filename}")
        start = max(0, min(chunk.char_start, len(text)))
        end = max(start, min(chunk.char_end, len(text)))
        before, marked, after = text[:start], text[start:end], text[end:]
    # The text is passed as plain strings: Jinja autoescaping keeps it from being HTML.
    return render_template(
        "source.html",
        document=document,
        chunk=chunk,
        before=before,
        marked=marked,
        after=after,
    )
