"""Bounds on what a request may make the server read and parse: a body limit on every route
(uploads by admins get the larger batch limit), checked against Content-Length before the
body is read, and JSON that is too deeply nested refused as bad input instead of crashing
the parser."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider

from assistant.settings import LimitSettings

# A multi-file upload may carry this many files of the per-file limit in one request.
UPLOAD_BATCH_FACTOR = 20
# Room for the multipart headers of a batch on top of the files themselves.
MULTIPART_OVERHEAD = 64 * 1024
UPLOAD_ENDPOINTS = {"documents.upload_form", "documents.upload_api"}


class BoundedJSONProvider(DefaultJSONProvider):
    """JSON nested past the parser's recursion limit is a ValueError, like any bad JSON
    (a 400 or an audited refusal), not a RecursionError (a 500)."""

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError as exc:
            raise ValueError("the JSON is nested too deeply") from exc


def upload_limit(limits: LimitSettings) -> int:
    return limits.max_upload_bytes * UPLOAD_BATCH_FACTOR + MULTIPART_OVERHEAD


def init_bounds(app: Flask, limits: LimitSettings) -> None:
    app.json = BoundedJSONProvider(app)
    app.config.update(
        MAX_CONTENT_LENGTH=limits.max_request_bytes,
        ASSISTANT_MAX_UPLOAD_BATCH_BYTES=upload_limit(limits),
    )


def allow_upload(is_admin: bool) -> None:
    """Before the body is read: an admin's upload may carry a whole batch."""
    if is_admin and request.endpoint in UPLOAD_ENDPOINTS:
        request.max_content_length = current_app.config["ASSISTANT_MAX_UPLOAD_BATCH_BYTES"]
