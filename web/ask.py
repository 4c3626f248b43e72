"""The Ask page and `POST /api/ask`, which streams the answer as Server-Sent Events."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request

from assistant.answering import Answer, Answerer, validate_question
from assistant.errors import AssistantError, InvalidInput
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
        _events(services().answerer, question),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _events(answerer: Answerer, question: str) -> Iterator[str]:
    try:
        for item in answerer.stream(question):
            if isinstance(item, Answer):
                yield sse("answer", item.to_dict())
            else:
                yield sse("token", {"text": item})
    except InvalidInput as exc:
        yield sse("error", {"error": str(exc)})
    except AssistantError as exc:
        logger.error("answering failed: %s: %s", type(exc).__name__, exc)
        yield sse("error", {"error": "the assistant could not answer; see the server log"})
    except Exception:
        logger.exception("answering failed")
        yield sse("error", {"error": "the assistant could not answer; see the server log"})
