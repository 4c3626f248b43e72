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

from assistant.access import DEFAULT_COLLECTION
from assistant.batches import RejectedUpload, Upload, expand, keep_rejected, new_batch_id
from assistant.db import Document, DocumentStatus
from assistant.errors import InvalidInput, NotFound
from web.auth import audit, principal, require_role, safe_next, scope
from web.state import services, tasks

logger = logging.getLogger(__name__)
bp = Blueprint("documents", __name__)

UPLOAD_FIELD = "files"
NO_FILES = f'choose one or more files to upload (form field "{UPLOAD_FIELD}")'


@dataclass
class UploadResult:
    batch_id: str
    collection: str
    accepted: list[Document] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    warning: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "batch_id": self.batch_id,
            "accepted": [d.to_dict() for d in self.accepted],
            "rejected": self.rejected,
            "warning": self.warning,
        }

    def reject(self, filename: str, error: str) -> None:
        """Refused before storage: audited, and kept with the batch for its page."""
        self.rejected.append({"filename": filename, "error": error})
        details = {"filename": filename, "error": error, "collection": self.collection}
        audit("document.rejected", {**details, "batch_id": self.batch_id})


def chosen_collection() -> str:
    name = request.form.get("collection", DEFAULT_COLLECTION).strip() or DEFAULT_COLLECTION
    if name not in services().access.collection_names():
        raise InvalidInput(f"there is no collection {name!r}; an admin creates it first")
    return name


def store_uploads(uploads: list[FileStorage], collection: str) -> UploadResult:
    """Store and enqueue each file (or each file inside a .zip) on its own, as one batch:
    a rejected file never loses the others. Every file of every archive is read and checked
    first, then stored, so a damaged entry cannot leave the batch half stored. Each stored
    file is audited before it is queued, each rejected one too; an audit failure stops the
    batch."""
    result = UploadResult(new_batch_id(), collection, warning=unread_warning(collection))
    limits = services().settings.limits
    items: list[Upload] = [
        item
        for upload in uploads
        for item in expand(upload.filename or "unnamed", upload.read(), limits)
    ]
    try:
        for item in items:
            if item.data is None:
                result.reject(item.filename, item.error or "")
            else:
                store_one(item.filename, item.data, result)
    finally:
        rows = [RejectedUpload(batch_id=result.batch_id, collection=collection, **r)
                for r in result.rejected]  # fmt: skip
        keep_rejected(services().sessions, rows)
    return result


def store_one(filename: str, data: bytes, result: UploadResult) -> None:
    try:
        document = services().upload(
            principal(), filename, data, result.collection, result.batch_id
        )
    except InvalidInput as exc:
        result.reject(filename, str(exc))
        return
    except OSError:
        logger.exception("could not store upload %s", filename)
        result.reject(filename, f"{filename}: the server could not store the file; try again")
        return
    tasks().send_ingest(document.id)
    result.accepted.append(document)


def unread_warning(collection: str) -> str | None:
    """A collection that no group may read: staff will not see what goes into it."""
    if services().access.readers_of(collection):
        return None
    return (
        f"no group may read the collection {collection!r}, so staff will not see these files "
        "(admins do); choose its reader groups on the Admin page"
    )


def requeue(document_id: str) -> Document:
    """Retry a failed file or re-ingest an indexed one (admins)."""
    document = services().documents.requeue(document_id)
    audit("document.reingest", document.described())
    tasks().send_ingest(document.id)
    return document


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
    is_admin = principal().role == "admin"
    versions = is_admin and request.args.get("versions") == "1"
    return render_template(
        "documents.html",
        documents=documents.list(readable, versions=versions),
        versions=versions,
        counts=documents.counts(readable),
        max_upload=current_app.config["ASSISTANT_MAX_UPLOAD_BYTES"],
        is_admin=is_admin,
        collections=services().access.list_collections() if is_admin else [],
        default_collection=DEFAULT_COLLECTION,
    )


@bp.get("/documents/<document_id>/download")
def download(document_id: str) -> Response:
    """Staff download current, indexed files only: one that failed its checks (or is not yet
    checked) may be anything, so only admins get it, and always as an attachment."""
    documents = services().documents
    document = documents.get(document_id, scope())
    checked = document.current and document.status == DocumentStatus.INDEXED
    if not checked and principal().role != "admin":
        raise NotFound(f"no document {document_id}")  # older or unchecked: admins only
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
        return redirect(url_for("documents.page"), code=303)
    result = store_uploads(uploads, chosen_collection())
    # One banner per upload; the batch page lists every file, rejected ones included.
    accepted, rejected = len(result.accepted), len(result.rejected)
    summary = f"{accepted} file(s) accepted and queued for indexing"
    if rejected:
        summary += f", {rejected} rejected (the reasons are listed below)"
    flash(summary, "error" if rejected and not accepted else "success")
    if result.warning:
        flash(result.warning, "warning")
    return redirect(url_for("batches.page", batch_id=result.batch_id), code=303)


@bp.post("/documents/<document_id>/reingest")
@require_role("admin")
def reingest_form(document_id: str) -> Response:
    document = requeue(document_id)
    flash(f"{document.filename}: queued again", "success")
    return redirect(safe_next(request.form.get("next"), "documents.page"), code=303)


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
    versions = principal().role == "admin" and request.args.get("versions") == "1"
    return jsonify(
        documents=[d.to_dict() for d in documents.list(readable, versions=versions)],
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
    return jsonify(result.to_dict()), status


@bp.post("/api/documents/<document_id>/reingest")
@require_role("admin")
def reingest_api(document_id: str) -> tuple[Response, int]:
    return jsonify(requeue(document_id).to_dict()), 202


@bp.get("/api/documents/<document_id>")
def get_api(document_id: str) -> Response:
    return jsonify(services().documents.get(document_id, scope()).to_dict())


@bp.delete("/api/documents/<document_id>")
@require_role("admin")
def delete_api(document_id: str) -> tuple[str, int]:
    delete_document(document_id)
    return "", 204
