"""The source view: a document's extracted text with the cited passage highlighted."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from assistant.documents import Scope
from assistant.errors import NotFound
from web.auth import audit, principal, scope
from web.state import services

bp = Blueprint("sources", __name__)


def source_scope(chunk_id: str) -> Scope:
    """Readers see their collections. Auditors see exactly the passages that audit records
    say were retrieved for a question, whatever the collection, and nothing else."""
    if principal().role != "auditor":
        return scope()
    if chunk_id and services().audit_log.search(action="question", text=f'"{chunk_id}"', limit=1):
        return None
    return []


@bp.get("/documents/<document_id>/source")
def source(document_id: str) -> str:
    chunk_id = request.args.get("chunk", "").strip()
    documents, readable = services().documents, source_scope(chunk_id)
    document = documents.get(document_id, readable)
    text = documents.text(document_id, readable)
    chunk = None
    before, marked, after = text, "", ""
    if chunk_id:
        chunk = documents.chunk(chunk_id, readable)
        if chunk.document_id != document_id:
            raise NotFound(f"passage {chunk_id} is not part of document {document.filename}")
        start = max(0, min(chunk.char_start, len(text)))
        end = max(start, min(chunk.char_end, len(text)))
        before, marked, after = text[:start], text[start:end], text[end:]
    audit("document.view", {"document_id": document.id, "chunk_id": chunk.id if chunk else None})
    # The text is passed as plain strings: Jinja autoescaping keeps it from being HTML.
    return render_template(
        "source.html",
        document=document,
        chunk=chunk,
        before=before,
        marked=marked,
        after=after,
    )
