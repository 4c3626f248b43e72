"""`GET /healthz`: the process answers and so does the database. It needs no sign-in, so
it reveals nothing else."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from web.state import services

logger = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    try:
        services().documents.counts()
    except Exception:
        logger.exception("health check: the database does not answer")
        return jsonify(status="error", error="the database does not answer"), 503
    return jsonify(status="ok"), 200
