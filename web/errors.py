"""Translate core errors and HTTP errors into JSON (under /api/) or a rendered error page.
Denied accesses (403, 404) are audited on the way (web.refusals); a database that is locked
or does not answer is a 503 with a reason, at once."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, jsonify, render_template, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from assistant.errors import (
    AssistantError,
    AuditError,
    ConfigurationError,
    DocumentError,
    FileTooLarge,
    InvalidInput,
    NotFound,
    Unavailable,
)
from web.bounds import UPLOAD_ENDPOINTS
from web.formatting import human_size
from web.refusals import deny

logger = logging.getLogger(__name__)

TITLES = {
    400: "Bad request",
    401: "Sign in",
    403: "Not allowed",
    404: "Not found",
    413: "Too large",
    422: "Unprocessable",
    429: "Too many attempts",
    503: "Unavailable",
}


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def error_response(message: str, status: int) -> tuple[Response | str, int]:
    if wants_json():
        return jsonify(error=message), status
    title = TITLES.get(status, "Error")
    return render_template("error.html", title=title, message=message, status=status), status


def status_for(exc: AssistantError) -> int:
    if isinstance(exc, FileTooLarge):
        return 413
    if isinstance(exc, InvalidInput):
        return 400
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, DocumentError):
        return 422
    if isinstance(exc, AuditError | Unavailable):
        return 503
    return 500


def _assistant_error(exc: AssistantError) -> tuple[Response | str, int]:
    status = status_for(exc)
    if status == 404:
        deny(404, str(exc))
    if isinstance(exc, AuditError):
        # Fail closed: nothing is done or shown that the audit log cannot record.
        logger.error("audit write failed on %s %s: %s", request.method, request.path, exc)
        return error_response("the audit log cannot be written, so this was refused", 503)
    if isinstance(exc, Unavailable):
        logger.error("%s on %s %s: %s", type(exc).__name__, request.method, request.path, exc)
        return error_response("a service the assistant needs does not answer; try again soon", 503)
    if status >= 500:
        logger.error("%s on %s %s: %s", type(exc).__name__, request.method, request.path, exc)
        if isinstance(exc, ConfigurationError):
            return error_response("the assistant is not configured correctly; see the log", 500)
        return error_response("the assistant failed; see the server log", 500)
    return error_response(str(exc), status)


def too_large_message() -> str:
    if request.endpoint not in UPLOAD_ENDPOINTS:
        total = current_app.config["MAX_CONTENT_LENGTH"]
        return f"the request is larger than {human_size(total)}, the limit for this page"
    total = current_app.config["ASSISTANT_MAX_UPLOAD_BATCH_BYTES"]
    per_file = current_app.config["ASSISTANT_MAX_UPLOAD_BYTES"]
    return (
        f"the upload is larger than {human_size(total)} in total; send fewer or smaller files "
        f"(each file may be at most {human_size(per_file)})"
    )


def _too_large(_: RequestEntityTooLarge) -> tuple[Response | str, int]:
    return error_response(too_large_message(), 413)


def _http_error(exc: HTTPException) -> tuple[Response | str, int] | HTTPException:
    if exc.code is None or exc.code < 400:
        return exc  # redirects and the like pass through
    if exc.code in (403, 404):
        deny(exc.code, exc.description or exc.name)
    return error_response(exc.description or exc.name, exc.code)


def _database_unavailable(exc: OperationalError) -> tuple[Response | str, int]:
    """Locked past ASSISTANT_DATABASE_BUSY_SECONDS, or down: say so now, not after 30 s."""
    logger.error("database error on %s %s: %s", request.method, request.path, exc.orig)
    response, status = error_response(
        "the database is busy or does not answer, so this was not done; try again soon", 503
    )
    response = current_app.make_response((response, status))
    response.headers["Retry-After"] = "5"
    return response, status


def _unexpected(exc: Exception) -> tuple[Response | str, int]:
    logger.exception("unexpected error on %s %s", request.method, request.path, exc_info=exc)
    return error_response("the assistant failed; see the server log", 500)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(AssistantError, _assistant_error)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(OperationalError, _database_unavailable)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
