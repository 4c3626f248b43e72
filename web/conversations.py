"""The conversations API: the signed-in user's own threads, and feedback on an answer.

`GET /api/conversations`, `GET|PATCH|DELETE /api/conversations/<id>`,
`POST /api/answers/<turn id>/feedback`. Another user's conversation or answer gets the same
404 as an unknown one (admins included), and reading one is audited before it is sent.
Admins list the thumbs-down answers and the "not found" ones: `GET /api/admin/review`."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from assistant.errors import InvalidInput
from web.auth import audit, principal, require_role, scope
from web.state import services

bp = Blueprint("conversations", __name__)
MAX_REVIEW = 500


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        raise InvalidInput("send a JSON object")
    return body


@bp.get("/api/conversations")
def list_conversations() -> Response:
    return jsonify(conversations=services().conversations.list(principal()))


@bp.get("/api/conversations/<conversation_id>")
def get_conversation(conversation_id: str) -> Response:
    conversation = services().conversations.get(principal(), conversation_id, scope())
    audit(
        "conversation.viewed",
        {"conversation_id": conversation["id"], "turns": len(conversation["turns"])},
    )
    return jsonify(conversation)


@bp.patch("/api/conversations/<conversation_id>")
def rename_conversation(conversation_id: str) -> Response:
    title = _body().get("title")
    return jsonify(services().conversations.rename(principal(), conversation_id, title))


@bp.delete("/api/conversations/<conversation_id>")
def delete_conversation(conversation_id: str) -> tuple[str, int]:
    services().conversations.delete(principal(), conversation_id)
    return "", 204


@bp.post("/api/answers/<int:turn_id>/feedback")
def feedback(turn_id: int) -> Response:
    body = _body()
    rated = services().conversations.rate(
        principal(), turn_id, body.get("rating"), body.get("comment")
    )
    return jsonify(rated)


@bp.get("/api/admin/review")
@require_role("admin")
def review() -> Response:
    kind = request.args.get("kind", "disliked")
    try:
        limit = min(int(request.args.get("limit", "100")), MAX_REVIEW)
    except ValueError as exc:
        raise InvalidInput('"limit" must be a whole number') from exc
    if limit < 1:
        raise InvalidInput('"limit" must be at least 1')
    answers = services().conversations.review(kind, limit)
    audit("answers.reviewed", {"kind": kind, "answers": len(answers)})
    return jsonify(kind=kind, answers=answers)
