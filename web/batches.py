"""The batch page: live progress of one upload batch, per-file status and reasons, an
estimate of the time left, and a retry of the files that failed."""

from __future__ import annotations

from flask import Blueprint, Response, flash, jsonify, redirect, render_template, url_for

from assistant.batches import BatchProgress, progress, rejected_in
from assistant.db import DocumentStatus
from web.auth import principal, require_role, scope
from web.documents import requeue
from web.state import services

bp = Blueprint("batches", __name__)


def _progress(batch_id: str) -> BatchProgress:
    """The files the reader may see; for admins also those refused before storage."""
    current = services()
    is_admin = principal().role == "admin"
    rejected = rejected_in(current.sessions, batch_id) if is_admin else []
    return progress(batch_id, current.documents.batch(batch_id, scope()), rejected)


@bp.get("/batches/<batch_id>")
def page(batch_id: str) -> str:
    batch = _progress(batch_id)
    return render_template(
        "batch.html", batch=batch, is_admin=principal().role == "admin", summary=batch.to_dict()
    )


@bp.get("/api/batches/<batch_id>")
def batch_api(batch_id: str) -> Response:
    return jsonify(_progress(batch_id).to_dict())


@bp.post("/batches/<batch_id>/retry")
@require_role("admin")
def retry_failed(batch_id: str) -> Response:
    failed = [d for d in _progress(batch_id).documents if d.status == DocumentStatus.FAILED]
    for document in failed:
        requeue(document.id)
    flash(f"{len(failed)} failed file(s) queued again", "success")
    return redirect(url_for("batches.page", batch_id=batch_id), code=303)
