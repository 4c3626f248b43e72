"""The Ask page and `POST /api/ask`, which streams the answer as Server-Sent Events."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request, stream_with_context

from assistant.answering import validate_question
from assistant.documents import Scope
from assistant.errors import AssistantError, AuditError, InvalidInput
from assistant.services import Services
from web.auth import audit, scope
from web.state import services

logger = logging.getLogger(__name__)
bp = Blueprint("ask", __name__)


@bp.get("/")
def page() -> str:
    return render_template("ask.html", max_chars=current_app.config["ASSISTANT_MAX_QUESTION_CHARS"])


@bp.post("/api/ask")
def ask() -> Response:
    # Everything is checked before the stream starts, so bad input gets a plain 400 JSON error.
    if not request.is_json:
        raise InvalidInput('send the question as JSON: {"question": "..."}')
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput('the request body is not a JSON object like {"question": "..."}')
    question = body.get("question")
    if not isinstance(question, str):
        raise InvalidInput('"question" must be a string')
    question = validate_question(question, current_app.config["ASSISTANT_MAX_QUESTION_CHARS"])
    return Response(
        stream_with_context(_events(services(), question, scope())),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _events(services: Services, question: str, collections: Scope) -> Iterator[str]:
    """Fail closed: the answer is sent only once its audit record is written, so the
    generated text is held back until then (answers are a short copied span)."""
    answerer = services.answerer
    try:
        yield sse("status", {"text": "searching your documents"})
        answer = answerer.ask(question, collections)
        audit("question", answerer.audit_details(answer, collections))
        yield sse("answer", answer.to_dict())
    except InvalidInput as exc:
        yield sse("error", {"error": str(exc)})
    except AuditError as exc:
        logger.error("audit write failed; answer withheld: %s", exc)
        yield sse("error", {"error": "the answer was withheld: the audit log could not be written"})
    except AssistantError as exc:
        logger.error("answering failed: %s: %s", type(exc).__name__, exc)
        yield sse("error", {"error": "the assistant could not answer; see the server log"})
    except Exception:
        logger.exception("answering failed")
        yield sse("error", {"error": "the assistant could not answer; see the server log"})
