"""The source view: a document's extracted text with the cited passage highlighted.

Auditors see only the passages that audit records say were retrieved for a question: the
passage itself, never the rest of its document."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from assistant.errors import NotFound
from web.auth import audit, principal, scope
from web.state import services

bp = Blueprint("sources", __name__)


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
    if auditor and chunk is not None:
        before, marked, after = "", chunk.text, ""  # the retrieved passage, and no more
    else:
        text = documents.text(document_id, readable)
        before, marked, after = text, "", ""
        if chunk is not None:
            start = max(0, min(chunk.char_start, len(text)))
            end = max(start, min(chunk.char_end, len(text)))
            before, marked, after = text[:start], text[start:end], text[end:]
    details = {"document_id": document.id, "filename": document.filename}
    audit("document.view", {**details, "chunk_id": chunk.id if chunk else None})
    # The text is passed as plain strings: Jinja autoescaping keeps it from being HTML.
    return render_template(
        "source.html",
        document=document,
        chunk=chunk,
        before=before,
        marked=marked,
        after=after,
        passage_only=auditor,
    )
