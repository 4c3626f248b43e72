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
    url_for,
)
from werkzeug.datastructures import FileStorage

from assistant.db import Document
from assistant.errors import InvalidInput
from web.state import services, tasks

logger = logging.getLogger(__name__)
bp = Blueprint("documents", __name__)

UPLOAD_FIELD = "files"
NO_FILES = f'choose one or more files to upload (form field "{UPLOAD_FIELD}")'


@dataclass
class UploadResult:
    accepted: list[Document] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)


def store_uploads(uploads: list[FileStorage]) -> UploadResult:
    """Store and enqueue each file on its own: a rejected file never loses the others."""
    result = UploadResult()
    documents, queue = services().documents, tasks()
    for upload in uploads:
        filename = upload.filename or "unnamed"
        try:
            document = documents.add(filename, upload.read())
        except InvalidInput as exc:
            result.rejected.append({"filename": filename, "error": str(exc)})
            continue
        except OSError:
            logger.exception("could not store upload %s", filename)
            error = f"{filename}: the server could not store the file; try again"
            result.rejected.append({"filename": filename, "error": error})
            continue
        queue.send_ingest(document.id)
        result.accepted.append(document)
    return result


def chosen_files() -> list[FileStorage]:
    """The uploaded files, without the empty part a form sends when nothing was chosen."""
    return [f for f in request.files.getlist(UPLOAD_FIELD) if f.filename]


# -- pages ------------------------------------------------------------------------------
@bp.get("/documents")
def page() -> str:
    documents = services().documents
    return render_template(
        "documents.html",
        documents=documents.list(),
        counts=documents.counts(),
        max_upload=current_app.config["ASSISTANT_MAX_UPLOAD_BYTES"],
    )


@bp.post("/documents")
def upload_form() -> Response:
    uploads = chosen_files()
    if not uploads:
        flash(NO_FILES, "error")
    result = store_uploads(uploads)
    for document in result.accepted:
        flash(f"{document.filename}: accepted and queued for indexing", "success")
    for rejected in result.rejected:
        flash(rejected["error"], "error")
    return redirect(url_for("documents.page"), code=303)


@bp.post("/documents/<document_id>/delete")
def delete_form(document_id: str) -> Response:
    documents = services().documents
    filename = documents.get(document_id).filename
    documents.delete(document_id)
    flash(f"{filename}: deleted", "success")
    return redirect(url_for("documents.page"), code=303)


# -- JSON API ---------------------------------------------------------------------------
@bp.get("/api/documents")
def list_api() -> Response:
    documents = services().documents
    return jsonify(documents=[d.to_dict() for d in documents.list()], counts=documents.counts())


@bp.post("/api/documents")
def upload_api() -> tuple[Response, int]:
    uploads = chosen_files()
    if not uploads:
        raise InvalidInput(NO_FILES)
    result = store_uploads(uploads)
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
    return jsonify(services().documents.get(document_id).to_dict())


@bp.delete("/api/documents/<document_id>")
def delete_api(document_id: str) -> tuple[str, int]:
    services().documents.delete(document_id)
    return "", 204
