"""The admins' review page, `/admin/review`: the answers staff marked as not helpful (with the
comment, who asked, and a link to the answer's audit record) and the questions answered "not
found". Staff are refused; reading it is audited before the page is sent, and a page whose
record cannot be written is not sent. Real SQLite and Chroma; the fast deterministic
embedder and generator (the page's logic is under test, not the models)."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from assistant.services import Services
from tests.conftest import RecordingQueue
from tests.test_access import client_for, make_library
from tests.test_conversations import QUESTION, ask
from tests.test_hardening_access import block_audit_inserts
from web import create_app

NOT_IN_THEM = "What colour is the moon rover?"
COMMENT = "<b>wrong</b> number & no source"


@pytest.fixture
def app(fake_services: Services) -> Flask:
    make_library(fake_services)
    fake_services.settings.answering.answer_threshold = 0.0  # the fake's confidence is low
    return create_app(services=fake_services, task_sender=RecordingQueue())


def test_staff_are_refused_and_admins_see_the_answers_to_review_audited(
    app: Flask, fake_services: Services
) -> None:
    alice = client_for(app, "alice")
    answered = ask(alice, QUESTION)
    declined = ask(alice, NOT_IN_THEM, conversation_id=answered["conversation_id"])
    assert declined["declined"] and not answered["declined"]
    rated = alice.post(
        f"/api/answers/{answered['turn_id']}/feedback", json={"rating": -1, "comment": COMMENT}
    )
    assert rated.status_code == 200

    # Staff (and auditors) are refused, and nothing of the lists is sent to them.
    for username in ("alice", "erin"):
        refused = client_for(app, username).get("/admin/review")
        assert refused.status_code == 403
        assert QUESTION not in refused.get_data(as_text=True)
    assert fake_services.audit_log.search(action="answers.reviewed") == []

    admin = client_for(app, "admin")
    page = admin.get("/admin/review")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    [answer_record] = [
        r
        for r in fake_services.audit_log.search(action="question")
        if r["details"]["turn_id"] == answered["turn_id"]
    ]
    disliked = _table(html, "review-disliked")
    assert QUESTION in disliked and "PINEAPPLE" in disliked  # the question and its answer
    assert "&lt;b&gt;wrong&lt;/b&gt; number &amp; no source" in disliked  # escaped, not markup
    assert "<b>wrong</b>" not in html
    assert "user:alice" in disliked
    assert f'href="/audit/{answer_record["seq"]}"' in disliked
    not_found = _table(html, "review-declined")
    assert NOT_IN_THEM in not_found and QUESTION not in not_found
    # The page is reached from the admin page's navigation.
    assert 'href="/admin/review"' in admin.get("/admin").get_data(as_text=True)

    # Reading it is audited: who read it and how many answers each list held.
    [reviewed] = fake_services.audit_log.search(action="answers.reviewed")
    assert reviewed["actor_id"] == "user:admin"
    assert reviewed["details"] == {"page": "/admin/review", "disliked": 1, "declined": 1}

    # No record, no page: with the audit log unwritable, nothing of the lists is sent.
    block_audit_inserts(fake_services, action="answers.reviewed")
    failed = admin.get("/admin/review")
    assert failed.status_code >= 500
    assert QUESTION not in failed.get_data(as_text=True)
    assert COMMENT not in failed.get_data(as_text=True)


def test_the_review_page_says_when_there_is_nothing_to_review(app: Flask) -> None:
    html = client_for(app, "admin").get("/admin/review").get_data(as_text=True)
    assert 'id="review-disliked-empty"' in html and 'id="review-declined-empty"' in html
    assert 'aria-current="page">Answers to review' in html


def _table(html: str, table_id: str) -> str:
    found = re.search(rf'<table[^>]*id="{table_id}".*?</table>', html, re.S)
    assert found, f"no table {table_id}"
    return found.group(0)
