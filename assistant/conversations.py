"""Conversations: each user's threads of questions and answers, readable by their owner only
(admins included: auditors see questions and answers through the audit log alone).

A turn is stored in the same transaction as the answer's audit record, so every stored answer
has its record and the turn names it (`audit_seq`). When a turn is read back, its citations
are checked against what the reader may read now: an answer that cited a document the reader
can no longer read is withheld, whole, and is not used as context for a follow-up either.

Feedback (thumbs up or down, an optional comment) belongs to a turn and is audited, so it is
exported with the audit log; admins list the thumbs-down answers and the "not found" ones."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from assistant.actors import AuditedService, Principal, record_fields
from assistant.answering.followup import Exchange
from assistant.db import Base, Document, utcnow
from assistant.documents import Scope
from assistant.errors import InvalidInput, NotFound

MAX_TITLE_CHARS = 120
MAX_COMMENT_CHARS = 2000
LIST_LIMIT = 200  # conversations in the sidebar
WITHHELD = "This answer cited a document you can no longer read, so it is not shown."
NOT_FOUND = "no such conversation"  # also for another user's: its existence is not revealed


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The owner: a user (deleted with them), or the local operator (user_id None).
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, default=None
    )
    owner: Mapped[str] = mapped_column(String(96), index=True)  # the actor, "user:alice"
    title: Mapped[str] = mapped_column(String(MAX_TITLE_CHARS))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Turn(Base):
    __tablename__ = "conversation_turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    question: Mapped[str] = mapped_column(Text)  # as typed
    resolved_question: Mapped[str] = mapped_column(Text)  # what retrieval searched for
    answer: Mapped[str] = mapped_column(Text)  # the answer as sent (JSON of Answer.to_dict)
    declined: Mapped[bool] = mapped_column(default=False, index=True)
    audit_seq: Mapped[int | None] = mapped_column(Integer, default=None)  # its `question` record
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    __tablename__ = "answer_feedback"

    turn_id: Mapped[int] = mapped_column(
        ForeignKey("conversation_turns.id", ondelete="CASCADE"), primary_key=True
    )
    rating: Mapped[int] = mapped_column(Integer)  # 1: thumbs up, -1: thumbs down
    comment: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def _owned_by(actor: Principal) -> Any:
    return (Conversation.owner == actor.actor) & (
        Conversation.user_id.is_(None)
        if actor.user_id is None
        else Conversation.user_id == actor.user_id
    )


def title_from(question: str) -> str:
    words = " ".join(question.split())
    return words if len(words) <= 60 else words[:59].rstrip() + "…"


class ConversationService(AuditedService):
    """Every change is one transaction with its audit record (`AuditedService`)."""

    # -- reading ----------------------------------------------------------------------------
    def list(self, actor: Principal) -> list[dict[str, Any]]:
        query = (
            select(Conversation)
            .where(_owned_by(actor))
            .order_by(Conversation.updated_at.desc(), Conversation.created_at.desc())
            .limit(LIST_LIMIT)
        )
        with self.sessions() as session:
            return [_summary(c) for c in session.scalars(query)]

    def get(self, actor: Principal, conversation_id: str, scope: Scope) -> dict[str, Any]:
        """The conversation with its turns, each answer as the reader may see it now."""
        with self.sessions() as session:
            conversation = _owned(session, actor, conversation_id)
            turns = _turns(session, conversation.id)
            readable = _readable(session, turns, scope)
            ratings = _ratings(session, [t.id for t in turns])
        return {
            **_summary(conversation),
            "turns": [_turn(t, readable, ratings.get(t.id)) for t in turns],
        }

    def history(self, actor: Principal, conversation_id: str, scope: Scope) -> list[Exchange]:
        """The earlier turns a follow-up is resolved from, as the reader may see them now."""
        with self.sessions() as session:
            conversation = _owned(session, actor, conversation_id)
            turns = _turns(session, conversation.id)
            readable = _readable(session, turns, scope)
        exchanges = []
        for turn in turns:
            shown = _shown(turn, readable)
            if shown is None:  # withheld: nothing of it may inform the next answer
                continue
            said = "" if turn.declined else _plain(shown.get("answer", ""))
            exchanges.append(Exchange(turn.resolved_question, said))
        return exchanges

    # -- changing ---------------------------------------------------------------------------
    def start(self, actor: Principal, question: str) -> str:
        conversation_id = uuid.uuid4().hex
        with self._changing() as change:
            change.session.add(
                Conversation(
                    id=conversation_id,
                    user_id=actor.user_id,
                    owner=actor.actor,
                    title=title_from(question),
                )
            )
            change.record(actor, "conversation.created", conversation_id=conversation_id)
        return conversation_id

    def add_turn(
        self,
        actor: Principal,
        conversation_id: str | None,
        answer: dict[str, Any],
        details: dict[str, Any],
    ) -> tuple[str, int]:
        """Store the answer as the conversation's next turn (None: it starts one) in one
        transaction with its audit record (`question`, with `details`): all of it commits,
        or none (AuditError). Returns the conversation's id and the turn's."""
        with self._changing() as change:
            if conversation_id is None:
                conversation = Conversation(
                    id=uuid.uuid4().hex,
                    user_id=actor.user_id,
                    owner=actor.actor,
                    title=title_from(answer["question"]),
                )
                change.session.add(conversation)
            else:
                conversation = _owned(change.session, actor, conversation_id)
            turn = Turn(
                conversation_id=conversation.id,
                question=answer["question"],
                resolved_question=answer.get("resolved_question") or answer["question"],
                answer=json.dumps(answer, ensure_ascii=False),
                declined=bool(answer.get("declined")),
            )
            change.session.add(turn)
            conversation.updated_at = utcnow()
            change.session.flush()
            if change.transaction is not None:  # the records last: they lock the audit head
                if conversation_id is None:
                    change.record(actor, "conversation.created", conversation_id=conversation.id)
                record = {**details, "conversation_id": conversation.id, "turn_id": turn.id}
                fields = record_fields(actor, "question", record)
                turn.audit_seq = change.transaction.record(**fields)
            return conversation.id, turn.id

    def rename(self, actor: Principal, conversation_id: str, title: object) -> dict[str, Any]:
        if not isinstance(title, str) or not title.strip():
            raise InvalidInput('"title" must be a non-empty string')
        title = " ".join(title.split())
        if len(title) > MAX_TITLE_CHARS:
            raise InvalidInput(f"the title is too long: the limit is {MAX_TITLE_CHARS} characters")
        with self._changing() as change:
            conversation = _owned(change.session, actor, conversation_id)
            conversation.title = title
            change.record(actor, "conversation.renamed", conversation_id=conversation.id)
            return _summary(conversation)

    def delete(self, actor: Principal, conversation_id: str) -> None:
        with self._changing() as change:
            conversation = _owned(change.session, actor, conversation_id)
            turns = len(_turns(change.session, conversation.id))
            _delete(change.session, [conversation.id])
            change.record(
                actor, "conversation.deleted", conversation_id=conversation.id, turns=turns
            )

    def rate(
        self, actor: Principal, turn_id: int, rating: object, comment: object = None
    ) -> dict[str, Any]:
        if rating not in (1, -1) or isinstance(rating, bool):
            raise InvalidInput('"rating" must be 1 (thumbs up) or -1 (thumbs down)')
        if comment is not None and not isinstance(comment, str):
            raise InvalidInput('"comment" must be a string')
        comment = (comment or "").strip() or None
        if comment is not None and len(comment) > MAX_COMMENT_CHARS:
            raise InvalidInput(f"the comment is too long: the limit is {MAX_COMMENT_CHARS}")
        with self._changing() as change:
            turn = change.session.get(Turn, turn_id)
            if turn is None:
                raise NotFound("no such answer")
            _owned(change.session, actor, turn.conversation_id, "no such answer")
            feedback = change.session.get(Feedback, turn_id) or Feedback(turn_id=turn_id)
            feedback.rating, feedback.comment, feedback.created_at = rating, comment, utcnow()
            change.session.add(feedback)
            change.record(
                actor,
                "answer.feedback",
                turn_id=turn_id,
                answer_record=turn.audit_seq,
                rating=rating,
                comment=comment,
            )
            return {"turn_id": turn_id, "rating": rating, "comment": comment}

    def purge(self, actor: Principal | None, retention_days: int) -> int:
        """Delete conversations untouched for `retention_days` (0: keep them all)."""
        if retention_days <= 0:
            return 0
        cutoff = utcnow() - timedelta(days=retention_days)
        with self._changing() as change:
            ids = list(
                change.session.scalars(
                    select(Conversation.id).where(Conversation.updated_at < cutoff)
                )
            )
            if not ids:
                return 0
            _delete(change.session, ids)
            change.record(
                actor,
                "conversation.purged",
                retention_days=retention_days,
                conversations=len(ids),
                conversation_ids=ids,
            )
        return len(ids)

    # -- for admins: answers to look at ------------------------------------------------------
    def review(self, kind: str, limit: int = 100) -> list[dict[str, Any]]:
        """Thumbs-down answers ("disliked") or questions answered "not found" ("declined"),
        newest first: the question, the answer, the comment and the audit record."""
        query = select(Turn, Feedback, Conversation.owner).join(
            Conversation, Conversation.id == Turn.conversation_id
        )
        if kind == "disliked":
            query = query.join(Feedback, Feedback.turn_id == Turn.id).where(Feedback.rating < 0)
        elif kind == "declined":
            query = query.outerjoin(Feedback, Feedback.turn_id == Turn.id).where(Turn.declined)
        else:
            raise InvalidInput('the list is "disliked" or "declined"')
        query = query.order_by(Turn.created_at.desc(), Turn.id.desc()).limit(limit)
        with self.sessions() as session:
            return [
                {
                    "turn_id": turn.id,
                    "asked_by": owner,
                    "question": turn.question,
                    "answer": json.loads(turn.answer).get("answer", ""),
                    "rating": feedback.rating if feedback else None,
                    "comment": feedback.comment if feedback else None,
                    "audit_seq": turn.audit_seq,
                    "asked_at": turn.created_at.isoformat() + "Z",
                }
                for turn, feedback, owner in session.execute(query)
            ]


def _owned(
    session: Session, actor: Principal, conversation_id: object, missing: str = NOT_FOUND
) -> Conversation:
    if not isinstance(conversation_id, str) or len(conversation_id) > 32:
        raise NotFound(missing)
    conversation = session.scalars(
        select(Conversation).where(Conversation.id == conversation_id, _owned_by(actor))
    ).first()
    if conversation is None:
        raise NotFound(missing)
    return conversation


def _turns(session: Session, conversation_id: str) -> list[Turn]:
    query = select(Turn).where(Turn.conversation_id == conversation_id).order_by(Turn.id)
    return list(session.scalars(query))


def _delete(session: Session, ids: Sequence[str]) -> None:
    turns = select(Turn.id).where(Turn.conversation_id.in_(ids))
    session.execute(delete(Feedback).where(Feedback.turn_id.in_(turns)))
    session.execute(delete(Turn).where(Turn.conversation_id.in_(ids)))
    session.execute(delete(Conversation).where(Conversation.id.in_(ids)))


def _cited_documents(answer: dict[str, Any]) -> Iterator[str]:
    for key in ("citations", "suggestions"):
        for item in answer.get(key) or []:
            yield str(item.get("document_id"))


def _readable(session: Session, turns: Sequence[Turn], scope: Scope) -> set[str]:
    """The documents cited by these turns that the reader may read now."""
    ids = {d for t in turns for d in _cited_documents(json.loads(t.answer))}
    if not ids:
        return set()
    query = select(Document.id).where(Document.id.in_(ids))
    if scope is not None:
        query = query.where(Document.collection.in_(list(scope)))
    return set(session.scalars(query))


def _shown(turn: Turn, readable: set[str]) -> dict[str, Any] | None:
    """The stored answer, or None when it cited a document the reader cannot read now.
    Suggestions (the closest passages of a decline) the reader cannot read are dropped."""
    answer = json.loads(turn.answer)
    if any(c.get("document_id") not in readable for c in answer.get("citations") or []):
        return None
    answer["suggestions"] = [
        s for s in answer.get("suggestions") or [] if s.get("document_id") in readable
    ]
    return answer


def _ratings(session: Session, turn_ids: Sequence[int]) -> dict[int, Feedback]:
    if not turn_ids:
        return {}
    query = select(Feedback).where(Feedback.turn_id.in_(list(turn_ids)))
    return {f.turn_id: f for f in session.scalars(query)}


def _turn(turn: Turn, readable: set[str], feedback: Feedback | None) -> dict[str, Any]:
    shown = _shown(turn, readable)
    return {
        "id": turn.id,
        "question": turn.question,
        "resolved_question": turn.resolved_question,
        "asked_at": turn.created_at.isoformat() + "Z",
        "withheld": shown is None,
        "answer": shown if shown is not None else {"answer": WITHHELD, "citations": []},
        "feedback": None
        if feedback is None
        else {"rating": feedback.rating, "comment": feedback.comment},
    }


def _summary(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "created_at": conversation.created_at.isoformat() + "Z",
        "updated_at": conversation.updated_at.isoformat() + "Z",
    }


def _plain(answer: str) -> str:
    """An answer without its citation markers, as context for the model."""
    return re.sub(r"\s*\[\d+\]", "", answer).strip()
