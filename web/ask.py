"""The Ask page and `POST /api/ask`, which streams the answer as Server-Sent Events:
`status` lines, `text` (each verified sentence, with the citations it introduces), then the
whole `answer` (or an `error`).

Every question is audited: asked, with the passages retrieved (`question.asked`, before any
text is sent), answered or declined (`question`), refused before it is answered
(`question.refused`: bad input, the per-user rate limit (429) or no capacity (503)), or
failed on the way (`question.failed`)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    render_template,
    request,
    stream_with_context,
)

from assistant.answering import Answer, Retrieved, Status, Text, validate_question
from assistant.answering.answers import retrieved_details
from assistant.answering.followup import Exchange
from assistant.conversations import NOT_FOUND
from assistant.documents import Scope
from assistant.errors import AssistantError, AuditError, InvalidInput, NotFound
from assistant.retrieval import Passage
from assistant.services import Services
from web.auth import audit, principal, scope
from web.limits import Lease, Refused, load_control
from web.metrics import Metrics, metrics
from web.refusals import refuse
from web.state import services

logger = logging.getLogger(__name__)
bp = Blueprint("ask", __name__)


@bp.get("/")
def page() -> str:
    # The models' display names ("answered by Qwen2.5-Coder-1.5B-Instruct"), by file name.
    answerer = services().answerer
    generators = [g for g in (answerer.generator, answerer.large) if g is not None]
    models = {g.name: getattr(g, "title", g.name) for g in generators}
    max_chars = current_app.config["ASSISTANT_MAX_QUESTION_CHARS"]
    return render_template("ask.html", max_chars=max_chars, models=models)


@dataclass(frozen=True)
class Thread:
    """The conversation a question belongs to (None: it starts one) and its earlier turns,
    as the reader may see them now; `regenerate` asks the larger model."""

    conversation_id: str | None
    history: list[Exchange]
    regenerate: bool = False


@bp.post("/api/ask")
def ask() -> Response | tuple[Response, int]:
    arrived = time.monotonic()
    question = _question()
    collections = scope()
    thread = _thread(question, collections)
    control = load_control()
    try:
        mark = control.rate.check(principal().actor)
    except Refused as exc:
        return _refused(question, exc)
    try:
        lease = control.slots.acquire()
    except Refused as exc:
        control.rate.give_back(principal().actor, mark)  # refused: not counted (issue 14)
        return _refused(question, exc)
    try:
        events = _events(services(), metrics(), question, collections, thread, lease, arrived)
        response = Response(
            stream_with_context(events),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    except BaseException:
        lease.release()
        raise
    # The slot is freed when the stream ends, and also if it is closed before it started.
    response.call_on_close(lease.release)
    return response


def _question() -> str:
    """The question from the JSON body. Checked before the stream starts, so bad input gets
    a plain 400 JSON error; it is audited as refused."""
    body = request.get_json(silent=True) if request.is_json else None
    raw = body.get("question") if isinstance(body, dict) else None
    try:
        if not request.is_json:
            raise InvalidInput('send the question as JSON: {"question": "..."}')
        if not isinstance(body, dict):
            raise InvalidInput('the request body is not a JSON object like {"question": "..."}')
        if not isinstance(raw, str):
            raise InvalidInput('"question" must be a string')
        if any("\ud800" <= ch <= "\udfff" for ch in raw):  # JSON may escape a lone surrogate
            raise InvalidInput("the question holds a character that is not text (a surrogate)")
        return validate_question(raw, current_app.config["ASSISTANT_MAX_QUESTION_CHARS"])
    except InvalidInput as exc:
        metrics().question("refused", "invalid")
        limit = current_app.config["ASSISTANT_MAX_QUESTION_CHARS"]
        shown = raw[:limit] if isinstance(raw, str) else None
        audit("question.refused", {"reason": "invalid", "error": str(exc), "question": shown})
        raise


def _thread(question: str, collections: Scope) -> Thread:
    """The optional `conversation_id` and `regenerate` of the body: another user's
    conversation is the same 404 as an unknown one, audited as refused."""
    body = request.get_json(silent=True)
    conversation_id = body.get("conversation_id")
    regenerate = body.get("regenerate", False)
    if not isinstance(regenerate, bool):
        _refuse_input(question, '"regenerate" must be true or false')
    if conversation_id is None:
        return Thread(None, [], regenerate)
    conversations = services().conversations
    try:
        if not isinstance(conversation_id, str):
            raise NotFound(NOT_FOUND)
        history = conversations.history(principal(), conversation_id, collections)
    except NotFound:
        metrics().question("refused", "invalid")
        audit(
            "question.refused",
            {"reason": "conversation", "error": NOT_FOUND, "question": question},
        )
        raise
    return Thread(conversation_id, history, regenerate)


def _refuse_input(question: str, error: str) -> None:
    metrics().question("refused", "invalid")
    audit("question.refused", {"reason": "invalid", "error": error, "question": question})
    raise InvalidInput(error)


def _refused(question: str, exc: Refused) -> tuple[Response, int]:
    metrics().question("refused", exc.reason)
    details = {"reason": exc.reason, "status": exc.status, "retry_after": exc.retry_after}
    # Repeats within a minute become one record (issue 14).
    refuse("question.refused", {**details, "question": question}, kind=exc.reason)
    response = jsonify(error=str(exc), reason=exc.reason, retry_after=exc.retry_after)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response, exc.status


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _events(
    services: Services,
    collected: Metrics,
    question: str,
    collections: Scope,
    thread: Thread,
    lease: Lease,
    arrived: float,
) -> Iterator[str]:
    """Fail closed: no answer text is sent before the record of the question and the
    passages it retrieved has committed (`question.asked`); the answer's own record
    (`question`) follows. With `answering.stream = "strict"` the text is held until that
    second record has committed too."""
    answerer = services.answerer
    strict = services.settings.answering.stream == "strict"
    outcome, reason, first_event = "failed", "error", None
    held: list[str] = []
    try:
        yield sse("status", {"text": "searching your documents"})
        mode = "always" if thread.regenerate else None
        for event in answerer.stream(question, collections, thread.history, mode=mode):
            if isinstance(event, Retrieved):
                details = asked_details(question, collections, event.passages)
                details["resolved_question"] = event.resolved_question
                details["conversation_id"] = thread.conversation_id
                audit("question.asked", details)
            elif isinstance(event, Status):
                yield sse("status", {"text": event.text})
            elif isinstance(event, Text):
                chunk = sse("text", {"text": event.text, "citations": _cited(event)})
                if strict:
                    held.append(chunk)
                else:
                    first_event = first_event or time.monotonic() - arrived
                    yield chunk
            elif isinstance(event, Answer):
                sent = _record(services, event, collections, thread)
                outcome = "declined" if event.declined else "answered"
                reason = event.decline_reason or "none" if event.declined else "none"
                yield from held
                first_event = first_event or time.monotonic() - arrived
                yield sse("answer", sent)
    except InvalidInput as exc:
        reason = "invalid"
        _audit_failure(question, str(exc))
        yield sse("error", {"error": str(exc)})
    except AuditError as exc:
        reason = "audit"
        logger.error("audit write failed; answer withheld: %s", exc)
        yield sse("error", {"error": "the answer was withheld: the audit log could not be written"})
    except AssistantError as exc:
        logger.error("answering failed: %s: %s", type(exc).__name__, exc)
        _audit_failure(question, type(exc).__name__)
        yield sse("error", {"error": "the assistant could not answer; see the server log"})
    except GeneratorExit:
        if outcome == "failed":  # the client went away before its answer was ready
            reason = "disconnected"
            _audit_failure(question, "the client disconnected")
        raise
    except Exception:
        logger.exception("answering failed")
        _audit_failure(question, "unexpected error")
        yield sse("error", {"error": "the assistant could not answer; see the server log"})
    finally:
        lease.release()
        collected.question(outcome, reason)
        collected.timings(lease.waited_seconds, first_event, time.monotonic() - arrived)


def _record(
    services: Services, answer: Answer, collections: Scope, thread: Thread
) -> dict[str, Any]:
    """The answer's audit record and its conversation turn, in one transaction; the first
    question of a conversation starts it there too. Returns the answer event's data."""
    sent = answer.to_dict()
    details = services.answerer.audit_details(answer, collections)
    conversation_id, turn_id = services.conversations.add_turn(
        principal(), thread.conversation_id, sent, details
    )
    return {**sent, "conversation_id": conversation_id, "turn_id": turn_id}


def _cited(event: Text) -> list[dict[str, Any]]:
    return [c.to_dict() for c in event.citations]


def asked_details(question: str, collections: Scope, passages: list[Passage]) -> dict[str, Any]:
    """The first record of a question: what was asked and what retrieval returned."""
    return {
        "question": question,
        "collections": None if collections is None else sorted(collections),
        "retrieved": retrieved_details(passages),
    }


def _audit_failure(question: str, error: str) -> None:
    """Record a question that got no answer; never raises (the stream is already open)."""
    try:
        audit("question.failed", {"question": question, "error": error})
    except AuditError as exc:
        logger.error("could not audit a failed question: %s", exc)
