"""Conversations through the web adapter: created by the first question, listed, renamed and
deleted by their owner only (another user's id is the same 404 as an unknown one, admins
included), follow-ups resolved from the conversation and audited, answers withheld once their
document is no longer readable, feedback, the admins' review lists and the retention purge.
Real SQLite, Chroma and FTS5; the fast deterministic embedder and generator."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from assistant.accounts import Principal
from assistant.audit_records import summary
from assistant.conversations import WITHHELD, Conversation
from assistant.db import utcnow
from assistant.services import Services
from assistant.settings import Settings
from tests.conftest import RecordingQueue, wait_until
from tests.test_access import PASSWORD, client_for, make_library
from tests.test_cli import run_cli
from tests.test_hardening_access import block_audit_inserts
from tests.test_security import sse_events
from web import create_app

QUESTION = "How many days of annual leave do staff get?"


@pytest.fixture
def app(fake_services: Services) -> Flask:
    make_library(fake_services)
    fake_services.settings.answering.answer_threshold = 0.0  # the fake's confidence is low
    app = create_app(services=fake_services, task_sender=RecordingQueue())
    app.config["TESTING"] = True
    return app


def ask(client: FlaskClient, question: str, **body: Any) -> dict[str, Any]:
    response = client.post("/api/ask", json={"question": question, **body})
    assert response.status_code == 200, response.get_data(as_text=True)
    events = sse_events(response.get_data(as_text=True))
    kind, data = events[-1]
    assert kind == "answer", events
    return data  # type: ignore[no-any-return]


def test_the_first_question_starts_a_conversation_that_only_its_owner_sees(
    app: Flask, fake_services: Services
) -> None:
    alice = client_for(app, "alice")
    first = ask(alice, QUESTION)
    assert "PINEAPPLE" in first["answer"] and first["turn_id"]
    conversation_id = first["conversation_id"]
    listed = alice.get("/api/conversations").get_json()["conversations"]
    assert [c["id"] for c in listed] == [conversation_id]
    assert listed[0]["title"] == QUESTION
    second = ask(alice, "And after probation?", conversation_id=conversation_id)
    assert second["conversation_id"] == conversation_id
    detail = alice.get(f"/api/conversations/{conversation_id}").get_json()
    assert [t["question"] for t in detail["turns"]] == [QUESTION, "And after probation?"]
    assert detail["turns"][0]["answer"]["citations"][0]["sentence"]
    # Reading it is audited; the answer records name the conversation.
    [viewed] = fake_services.audit_log.search(action="conversation.viewed")
    assert viewed["details"]["conversation_id"] == conversation_id
    answered = fake_services.audit_log.search(action="question")
    assert {r["details"]["conversation_id"] for r in answered} == {conversation_id}
    # Another user, an admin too, gets the same 404 as for an unknown id, and nothing leaks.
    for username in ("carol", "admin"):
        other = client_for(app, username)
        assert other.get("/api/conversations").get_json()["conversations"] == []
        for path in (f"/api/conversations/{conversation_id}", "/api/conversations/" + "0" * 32):
            response = other.get(path)
            assert response.status_code == 404
            assert response.get_json()["error"] == "no such conversation"
            assert other.patch(path, json={"title": "mine"}).status_code == 404
            assert other.delete(path).status_code == 404
        refused = other.post(
            "/api/ask", json={"question": "x?", "conversation_id": conversation_id}
        )
        assert refused.status_code == 404 and "PINEAPPLE" not in refused.get_data(as_text=True)
        turn = first["turn_id"]
        assert other.post(f"/api/answers/{turn}/feedback", json={"rating": -1}).status_code == 404
    refusals = fake_services.audit_log.search(action="question.refused")
    assert {r["details"]["reason"] for r in refusals} == {"conversation"}


def test_a_follow_up_is_resolved_from_the_conversation_and_audited(
    app: Flask, fake_services: Services
) -> None:
    alice = client_for(app, "alice")
    first = ask(alice, QUESTION)
    follow_up = ask(alice, "And what about them?", conversation_id=first["conversation_id"])
    assert follow_up["resolved_question"] == f"And what about them? ({QUESTION})"
    asked = fake_services.audit_log.search(action="question.asked")
    assert asked[0]["details"]["resolved_question"] == f"And what about them? ({QUESTION})"
    # A question that stands on its own is searched as it is, in a conversation too.
    alone = ask(alice, QUESTION, conversation_id=first["conversation_id"])
    assert alone["resolved_question"] == QUESTION


def test_an_answer_is_withheld_once_its_document_is_no_longer_readable(
    app: Flask, fake_services: Services
) -> None:
    alice = client_for(app, "alice")
    first = ask(alice, QUESTION)
    path = f"/api/conversations/{first['conversation_id']}"
    fake_services.access.remove_member("hr", "alice", actor=Principal.operator())
    detail = alice.get(path).get_json()
    [turn] = detail["turns"]
    assert turn["withheld"] and turn["answer"]["answer"] == WITHHELD
    assert "PINEAPPLE" not in json.dumps(detail)
    # Nor does an old turn inform a follow-up: the new answer is declined, without the word.
    later = ask(alice, "And how many is that?", conversation_id=first["conversation_id"])
    assert later["declined"] and "PINEAPPLE" not in json.dumps(later)
    assert "PINEAPPLE" not in later["resolved_question"]


def test_rename_delete_and_bad_input(app: Flask, fake_services: Services) -> None:
    alice = client_for(app, "alice")
    conversation_id = ask(alice, QUESTION)["conversation_id"]
    path = f"/api/conversations/{conversation_id}"
    assert (
        alice.patch(path, json={"title": "  Leave   rules "}).get_json()["title"] == "Leave rules"
    )
    for body, message in (
        ({"title": ""}, "non-empty"),
        ({"title": 7}, "non-empty"),
        ({"title": "x" * 121}, "too long"),
    ):
        response = alice.patch(path, json=body)
        assert response.status_code == 400 and message in response.get_json()["error"]
    assert alice.patch(path, data="title=x").status_code == 400
    bad = alice.post("/api/ask", json={"question": QUESTION, "conversation_id": 12})
    assert bad.status_code == 404
    bad = alice.post("/api/ask", json={"question": QUESTION, "regenerate": "yes"})
    assert bad.status_code == 400 and "true or false" in bad.get_json()["error"]
    assert alice.delete(path).status_code == 204
    assert alice.get(path).status_code == 404
    assert alice.get("/api/conversations").get_json()["conversations"] == []
    actions = [r["action"] for r in fake_services.audit_log.search(action="conversation.deleted")]
    assert actions == ["conversation.deleted"]
    # The answers stay in the audit log: deleting a conversation is not erasing the record.
    assert fake_services.audit_log.search(action="question")


def test_feedback_is_stored_audited_and_listed_for_admins(
    app: Flask, fake_services: Services
) -> None:
    alice = client_for(app, "alice")
    answered = ask(alice, QUESTION)
    declined = ask(
        alice, "What colour is the moon rover?", conversation_id=answered["conversation_id"]
    )
    assert declined["declined"]
    feedback = f"/api/answers/{answered['turn_id']}/feedback"
    for body, message in (
        ({"rating": 2}, "1 (thumbs up) or -1"),
        ({"rating": True}, "1 (thumbs up) or -1"),
        ({"rating": -1, "comment": 5}, "must be a string"),
        ({"rating": -1, "comment": "x" * 2001}, "too long"),
    ):
        response = alice.post(feedback, json=body)
        assert response.status_code == 400 and message in response.get_json()["error"]
    assert alice.post("/api/answers/999999/feedback", json={"rating": 1}).status_code == 404
    response = alice.post(feedback, json={"rating": -1, "comment": "wrong number"})
    assert response.get_json() == {
        "turn_id": answered["turn_id"],
        "rating": -1,
        "comment": "wrong number",
    }
    [record] = fake_services.audit_log.search(action="answer.feedback")
    [answer_record] = [
        r
        for r in fake_services.audit_log.search(action="question")
        if r["details"]["turn_id"] == answered["turn_id"]
    ]
    assert record["details"]["answer_record"] == answer_record["seq"]
    assert summary(record) == "not helpful: wrong number"  # the audit list's and export's line
    detail = alice.get(f"/api/conversations/{answered['conversation_id']}").get_json()
    assert detail["turns"][0]["feedback"] == {"rating": -1, "comment": "wrong number"}
    # Staff cannot see the review lists; admins see the thumbs-down and the "not found".
    assert alice.get("/api/admin/review?kind=disliked").status_code == 403
    admin = client_for(app, "admin")
    disliked = admin.get("/api/admin/review?kind=disliked").get_json()["answers"]
    assert [(a["question"], a["comment"], a["asked_by"]) for a in disliked] == [
        (QUESTION, "wrong number", "user:alice")
    ]
    not_found = admin.get("/api/admin/review?kind=declined").get_json()["answers"]
    assert [a["question"] for a in not_found] == ["What colour is the moon rover?"]
    for query in ("kind=other", "limit=x", "limit=0"):
        assert admin.get(f"/api/admin/review?{query}").status_code == 400


def test_retention_purges_old_conversations_and_audits_it(
    app: Flask, fake_services: Services
) -> None:
    alice = client_for(app, "alice")
    old = ask(alice, QUESTION)["conversation_id"]
    recent = ask(alice, "What soup is served?")["conversation_id"]
    _age(fake_services, old, 91)
    conversations = fake_services.conversations
    assert conversations.purge(None, 0) == 0  # 0 keeps them all
    assert conversations.purge(None, 90) == 1
    listed = [c["id"] for c in alice.get("/api/conversations").get_json()["conversations"]]
    assert listed == [recent]
    [purged] = fake_services.audit_log.search(action="conversation.purged")
    assert purged["details"]["conversation_ids"] == [old]
    assert summary(purged) == "1 conversations past 90 days"
    assert conversations.purge(None, 90) == 0


def test_signed_out_callers_get_401(app: Flask) -> None:
    client = app.test_client()
    for method, path in (
        ("get", "/api/conversations"),
        ("get", "/api/conversations/" + "a" * 32),
        ("delete", "/api/conversations/" + "a" * 32),
        ("post", "/api/answers/1/feedback"),
    ):
        response = getattr(client, method)(path, headers={"Accept": "application/json"})
        assert response.status_code in (401, 403), (method, path)
    assert PASSWORD  # the users of make_library sign in with it


def _age(services: Services, conversation_id: str, days: int) -> None:
    with services.sessions.begin() as session:
        session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id)
            .values(updated_at=utcnow() - timedelta(days=days))
        )


@pytest.mark.slow
def test_the_worker_purges_expired_conversations_on_its_own(
    fake_services: Services,
    settings: Settings,
    start_worker: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    operator = Principal.operator()
    old = fake_services.conversations.start(operator, "An old question?")
    kept = fake_services.conversations.start(operator, "A recent question?")
    _age(fake_services, old, 100)
    monkeypatch.setenv("ASSISTANT_CONVERSATIONS__RETENTION_DAYS", "90")
    start_worker(settings)
    wait_until(
        lambda: bool(fake_services.audit_log.search(action="conversation.purged")),
        60,
        "the worker's retention job",
    )
    assert [c["id"] for c in fake_services.conversations.list(operator)] == [kept]


def test_the_purge_command_reports_and_refuses_bad_input(
    fake_services: Services, settings: Settings
) -> None:
    old = fake_services.conversations.start(Principal.operator(), "An old question?")
    _age(fake_services, old, 40)
    data_dir = settings.resolved_data_dir
    bad = run_cli(data_dir, "conversations", "purge", "--days", "-1")
    assert bad.returncode == 2 and "-1 is not in the range x>=0" in bad.stderr
    off = run_cli(data_dir, "conversations", "purge", "--days", "0")
    assert off.returncode == 0 and "nothing deleted" in off.stdout
    done = run_cli(data_dir, "conversations", "purge", "--days", "30")
    assert done.returncode == 0 and "deleted 1 conversations" in done.stdout, done.stderr
    [purged] = fake_services.audit_log.search(action="conversation.purged")
    assert purged["actor_id"].startswith("cli:")


def test_an_answer_that_cannot_be_audited_leaves_no_conversation_or_turn(
    app: Flask, fake_services: Services
) -> None:
    alice = client_for(app, "alice")
    block_audit_inserts(fake_services, action="question")
    response = alice.post("/api/ask", json={"question": QUESTION})
    kinds = [kind for kind, _ in sse_events(response.get_data(as_text=True))]
    assert kinds[-1] == "error" and "answer" not in kinds
    assert alice.get("/api/conversations").get_json()["conversations"] == []
    assert fake_services.audit_log.search(action="conversation.created") == []
