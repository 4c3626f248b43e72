"""The Documents page (upload form, status table, delete) and the documents JSON API."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from werkzeug.datastructures import FileStorage

from assistant.db import Document
from assistant.documents import DEFAULT_COLLECTION
from assistant.errors import AuditError, InvalidInput
from web.auth import audit, principal, require_role, scope
from web.state import services, tasks

logger = logging.getLogger(__name__)
bp = Blueprint("documents", __name__)

UPLOAD_FIELD = "files"
NO_FILES = f'choose one or more files to upload (form field "{UPLOAD_FIELD}")'


@dataclass
class UploadResult:
    accepted: list[Document] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)


def chosen_collection() -> str:
    name = request.form.get("collection", DEFAULT_COLLECTION).strip() or DEFAULT_COLLECTION
    if name not in services().accounts.collection_names():
        raise InvalidInput(f"there is no collection {name!r}; an admin creates it first")
    return name


def store_uploads(uploads: list[FileStorage], collection: str) -> UploadResult:
    """Store and enqueue each file on its own: a rejected file never loses the others.
    Each stored file is audited before it is queued; an audit failure stops the batch."""
    result = UploadResult()
    documents, queue = services().documents, tasks()
    for upload in uploads:
        filename = upload.filename or "unnamed"
        try:
            document = documents.add(filename, upload.read(), collection)
        except InvalidInput as exc:
            result.rejected.append({"filename": filename, "error": str(exc)})
            continue
        except OSError:
            logger.exception("could not store upload %s", filename)
            error = f"{filename}: the server could not store the file; try again"
            result.rejected.append({"filename": filename, "error": error})
            continue
        try:
            audit("document.upload", document.described())
        except AuditError:
            documents.delete(document.id)  # fail closed: nothing unaudited is kept
            raise
        queue.send_ingest(document.id)
        result.accepted.append(document)
    return result


def chosen_files() -> list[FileStorage]:
    """The uploaded files, without the empty part a form sends when nothing was chosen."""
    return [f for f in request.files.getlist(UPLOAD_FIELD) if f.filename]


def delete_document(document_id: str) -> Document:
    documents = services().documents
    document = documents.get(document_id)  # admins see every collection
    audit("document.delete", document.described())
    documents.delete(document_id)
    return document


# -- pages ------------------------------------------------------------------------------
@bp.get("/documents")
def page() -> str:
    documents, readable = services().documents, scope()
    return render_template(
        "documents.html",
        documents=documents.list(readable),
        counts=documents.counts(readable),
        max_upload=current_app.config["ASSISTANT_MAX_UPLOAD_BYTES"],
        is_admin=principal().role == "admin",
        collections=services().accounts.collection_names(),
    )


@bp.get("/documents/<document_id>/download")
def download(document_id: str) -> Response:
    documents = services().documents
    document = documents.get(document_id, scope())
    audit("document.download", document.described())
    return send_file(
        documents.original_path(document.id),
        as_attachment=True,
        download_name=document.filename,
        mimetype="application/octet-stream",
    )


@bp.post("/documents")
@require_role("admin")
def upload_form() -> Response:
    uploads = chosen_files()
    if not uploads:
        flash(NO_FILES, "error")
    result = store_uploads(uploads, chosen_collection())
    for document in result.accepted:
        flash(f"{document.filename}: accepted and queued for indexing", "success")
    for rejected in result.rejected:
        flash(rejected["error"], "error")
    return redirect(url_for("documents.page"), code=303)


@bp.post("/documents/<document_id>/delete")
@require_role("admin")
def delete_form(document_id: str) -> Response:
    document = delete_document(document_id)
    flash(f"{document.filename}: deleted", "success")
    return redirect(url_for("documents.page"), code=303)


# -- JSON API ---------------------------------------------------------------------------
@bp.get("/api/documents")
def list_api() -> Response:
    documents, readable = services().documents, scope()
    return jsonify(
        documents=[d.to_dict() for d in documents.list(readable)],
        counts=documents.counts(readable),
    )


@bp.post("/api/documents")
@require_role("admin")
def upload_api() -> tuple[Response, int]:
    uploads = chosen_files()
    if not uploads:
        raise InvalidInput(NO_FILES)
    result = store_uploads(uploads, chosen_collection())
    if not result.rejected:
        status = 201
    elif result.accepted:
        status = 207  # some accepted, some rejected: each entry says which
    else:
        status = 400
    body = {"accepted": [d.to_dict() for d in result.accepted], "rejected": result.rejected}
    return jsonify(body), status


@bp.get("/api/documents/<document_id>")
def get_api(document_id: str) -> Response:
    return jsonify(services().documents.get(document_id, scope()).to_dict())


@bp.delete("/api/documents/<document_id>")
@require_role("admin")
def delete_api(document_id: str) -> tuple[str, int]:
    delete_document(document_id)
    return "", 204
