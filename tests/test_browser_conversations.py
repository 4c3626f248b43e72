"""The Ask page as a conversation, in a real browser: gunicorn serving `web:create_app()` with
the packaged small model (Qwen2.5-Coder 0.5B; routing off, so the larger model is never
loaded), over a small document set indexed by the core, and Debian's chromium driven by
Playwright.

What a member of staff does: asks, sees the sentences arrive before the answer completes,
asks a follow-up that only makes sense in the conversation, reads a citation's supporting
sentence on hover and on keyboard focus and opens it, copies, regenerates, rates an answer
"not helpful" with a comment (which an admin then sees on the review page), stops an answer
while it streams, renames and deletes the conversation, and does it on a 390 px screen too.
Three questions reach the model; everything else is the page and the API."""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from assistant.accounts import Principal
from assistant.conversations import WITHHELD
from assistant.services import Services
from assistant.settings import Settings
from tests.browsing import normalise, screenshot, serving, signed_in_page
from tests.conftest import ADMIN_PASSWORD

# The same staff documents, and the same page recorder, as the single-answer browser test;
# its `library` and `browser` fixtures too.
from tests.test_browser_answers import (  # noqa: F401
    RECORD,
    STAFF_PASSWORD,
    browser,
    library,
)

pytestmark = pytest.mark.slow

QUESTION = "What should I do when I am ill?"
# Only makes sense after QUESTION: call whom, and why? The sick leave rules say.
FOLLOW_UP = "And by what time must I call?"
STOPPED = "How many days of annual leave does every employee receive?"
COMMENT = "It should say who to call."
ANSWERED = 240_000  # ms: a cold start loads the model; the machine may be busy
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}

# The answer's text as a reader sees it, without the (hidden) citation tooltips.
ANSWER_TEXT = "e => e.querySelector('.answer').innerText"


def send(page: Any, question: str) -> None:
    """Type the question into the box and press Enter, as a user does."""
    page.evaluate(RECORD)
    page.locator("#question").fill(question)
    page.press("#question", "Enter")


def last_turn_finished(page: Any, count: int) -> Any:
    from playwright.sync_api import expect

    turns = page.locator("#thread .turn")
    expect(turns).to_have_count(count)
    turn = turns.nth(count - 1)
    expect(turn).to_have_attribute("data-state", re.compile("answered|declined"), timeout=ANSWERED)
    assert turn.get_attribute("data-state") == "answered", turn.inner_text()
    return turn


def conversation_id(page: Any) -> str:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)
    assert list(query) == ["c"], page.url
    return str(query["c"][0])


def api(page: Any, server: str, path: str) -> Any:
    """GET the JSON API with the page's own session."""
    response = page.request.get(server + path)
    assert response.ok, response.text()
    return response.json()


def fits(page: Any, width: int) -> None:
    """Nothing wider than the window: no sideways scrolling of the page."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_a_conversation_in_the_browser(
    settings: Settings,
    services: Services,
    library: dict[str, str],  # noqa: F811 (the fixture imported above)
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    extra = {"ASSISTANT_ROUTING__MODE": "off", "ASSISTANT_ANSWERING__ANSWER_THRESHOLD": "0.0"}
    with serving(settings, tmp_path, extra) as server:
        page = signed_in_page(browser, server, "sam", STAFF_PASSWORD)
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
        page.goto(server)
        # -- The question box has the focus; Enter asks. Sentences arrive before the answer.
        assert page.evaluate("document.activeElement.id") == "question"
        expect(page.locator("#conversations-status")).to_contain_text("No conversations yet")
        send(page, QUESTION)
        expect(page.locator("#stop-button")).to_be_visible()
        first = last_turn_finished(page, 1)
        seen = page.evaluate("window.__seen")
        assert seen["statuses"][0] == "Searching your documents…", seen["statuses"]
        assert seen["pieces"], "no sentence was shown before the answer was complete"
        assert normalise("".join(seen["pieces"])) == normalise(first.evaluate(ANSWER_TEXT))
        expect(page.locator("#stop-button")).to_be_hidden()
        expect(first.locator(".status-text")).to_have_text(re.compile(r"^Answered in \d+\.\d s"))
        expect(first.locator(".answer a.citation").first).to_be_visible()
        # The first answer started a conversation: in the URL, the sidebar and the heading.
        opened = conversation_id(page)
        items = page.locator("#conversations li")
        expect(items).to_have_count(1)
        expect(items.first.locator(".conversation-link")).to_have_attribute("aria-current", "page")
        expect(items.first.locator(".conversation-link")).to_have_text(QUESTION)
        expect(page.locator("#thread-title")).to_have_text(QUESTION)
        screenshot(page, "conversation-1-ask")

        # -- A follow-up, in the same conversation, citing the leave policy.
        send(page, FOLLOW_UP)
        second = last_turn_finished(page, 2)
        assert page.evaluate("window.__seen")["pieces"], "the follow-up was not streamed"
        assert conversation_id(page) == opened
        expect(items).to_have_count(1)
        cited = second.locator(".sources .source-link").all_inner_texts()
        assert cited and set(cited) == {"leave-policy.md"}, cited
        stored = api(page, server, f"/api/conversations/{opened}")
        assert [t["question"] for t in stored["turns"]] == [QUESTION, FOLLOW_UP]
        assert QUESTION in stored["turns"][1]["resolved_question"]
        screenshot(page, "conversation-2-follow-up")

        # -- A citation's supporting sentence on hover ...
        marker = first.locator(".answer a.citation").first
        citation = stored["turns"][0]["answer"]["citations"][int(marker.inner_text()[1:-1]) - 1]
        tip = page.locator("#" + (marker.get_attribute("aria-describedby") or "missing"))
        expect(tip).to_have_attribute("role", "tooltip")
        expect(tip).to_be_hidden()
        marker.hover()
        expect(tip).to_be_visible()
        expect(tip.locator(".tip-sentence")).to_have_text(normalise(citation["sentence"]))
        expect(tip.locator(".tip-where")).to_have_text("leave-policy.md")
        screenshot(page, "conversation-3-citation-hover")
        page.mouse.move(5, 5)
        expect(tip).to_be_hidden()
        # ... and on keyboard focus, reached with Tab: sidebar first, then the thread.
        page.focus("#new-conversation")
        for _ in range(4):  # the conversation, Rename, Delete, then the first citation
            page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.getAttribute('aria-describedby')")
        assert focused == marker.get_attribute("aria-describedby")
        expect(tip).to_be_visible()
        screenshot(page, "conversation-4-citation-focus")
        page.keyboard.press("Escape")
        expect(tip).to_be_hidden()

        # -- Copy: the answer without its [n] markers, with a visible confirmation.
        first.locator(".action-copy").click()
        expect(first.locator(".action-status")).to_have_text("Copied the answer to the clipboard.")
        copied = page.evaluate("navigator.clipboard.readText()")
        assert copied == re.sub(r"\s*\[\d+\]", "", stored["turns"][0]["answer"]["answer"]).strip()
        assert "[" not in copied

        # -- Not helpful, with a comment.
        second.locator(".action-down").click()
        expect(second.locator(".feedback-form textarea")).to_be_focused()
        page.keyboard.type(COMMENT)
        second.locator(".feedback-form button[type=submit]").click()
        expect(second.locator(".action-down")).to_have_attribute("aria-pressed", "true")
        expect(second.locator(".feedback-comment")).to_have_text(f"Your comment: {COMMENT}")
        expect(second.locator(".feedback-form")).to_be_hidden()

        # -- Regenerate asks the same question again, in this conversation, with the larger
        # model. The server is made to refuse it (no capacity): the error is shown, and no
        # half-made turn stays behind.
        asked: list[dict[str, Any]] = []

        def busy(route: Any) -> None:
            asked.append(json.loads(route.request.post_data or "{}"))
            route.fulfill(
                status=503,
                content_type="application/json",
                body=json.dumps({"error": "the assistant is busy; try again in 5 s"}),
            )

        page.route("**/api/ask", busy)
        second.locator(".action-regenerate").click()
        expect(page.locator("#ask-error")).to_have_text("the assistant is busy; try again in 5 s")
        assert asked == [{"question": FOLLOW_UP, "conversation_id": opened, "regenerate": True}]
        expect(page.locator("#thread .turn")).to_have_count(2)
        page.unroute("**/api/ask")

        # -- The citation opened with the keyboard: the source view at that sentence.
        marker.focus()
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/source\?chunk=.+&start=\d+&end=\d+"))
        document_id = citation["document_id"]
        sentence = services.documents.text(document_id)[
            citation["sentence_start"] : citation["sentence_end"]
        ]
        expect(page.locator("mark#sentence")).to_have_text(sentence)
        expect(page.locator("mark#sentence")).to_be_in_viewport()
        expect(page.locator("h1")).to_have_text("leave-policy.md")
        screenshot(page, "conversation-5-source")
        # Back, and a reload, reopen the conversation, with the feedback given.
        page.go_back(wait_until="commit")
        expect(page.locator("#thread .turn")).to_have_count(2)
        page.reload()
        turns = page.locator("#thread .turn")
        expect(turns).to_have_count(2)
        expect(turns.nth(1).locator(".action-down")).to_have_attribute("aria-pressed", "true")
        expect(turns.nth(1).locator(".feedback-comment")).to_have_text(f"Your comment: {COMMENT}")
        expect(turns.nth(0).locator(".action-up")).to_have_attribute("aria-pressed", "false")
        assert page.evaluate("document.activeElement.id") == "question"
        screenshot(page, "conversation-6-feedback")

        # -- Stop: the request is aborted while the answer is being prepared.
        send(page, STOPPED)
        stop = page.locator("#stop-button")
        expect(stop).to_be_visible()
        expect(turns.nth(2).locator(".status-text")).to_have_text("Searching your documents…")
        stop.click()
        expect(turns.nth(2)).to_have_attribute("data-state", "stopped")
        expect(turns.nth(2).locator(".turn-note")).to_contain_text("Stopped")
        expect(turns.nth(2).locator(".spinner")).to_be_hidden()
        expect(stop).to_be_hidden()
        expect(page.locator("#ask-button")).to_be_enabled()
        expect(page.locator("#ask-error")).to_be_hidden()
        assert page.evaluate("document.activeElement.id") == "question"
        screenshot(page, "conversation-7-stopped")

        # -- The admin's review page lists the answer rated "not helpful", with its record;
        # staff may not open it.
        denied = page.request.get(f"{server}/admin/review")
        assert denied.status == 403
        admin = signed_in_page(browser, server, "admin", ADMIN_PASSWORD)
        admin.goto(f"{server}/admin")
        admin.click("nav.subnav >> text=Answers to review")
        row = admin.locator("#review-disliked tbody tr", has_text=FOLLOW_UP)
        expect(row).to_have_count(1)
        expect(row.locator(".review-comment")).to_have_text(COMMENT)
        expect(row).to_contain_text("user:sam")
        screenshot(admin, "conversation-8-admin-review")
        row.locator("a").click()
        expect(admin.locator("#audit-question")).to_have_text(FOLLOW_UP)
        admin.close()

        # -- Rename, by keyboard alone.
        item = items.first
        item.locator("button.rename").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#conversations .rename-input")).to_be_focused()
        page.keyboard.press("Control+A")
        page.keyboard.type("Leave questions")
        page.keyboard.press("Enter")
        expect(item.locator(".conversation-link")).to_have_text("Leave questions")
        expect(page.locator("#thread-title")).to_have_text("Leave questions")
        expect(item.locator("button.rename")).to_be_focused()
        assert api(page, server, f"/api/conversations/{opened}")["title"] == "Leave questions"
        screenshot(page, "conversation-9-renamed")

        # -- 390 px wide: no sideways scrolling; the sidebar is behind a toggle button.
        page.set_viewport_size(PHONE)
        fits(page, 390)
        expect(page.locator("#sidebar")).to_be_hidden()
        toggle = page.locator("#sidebar-toggle")
        expect(toggle).to_have_attribute("aria-expanded", "false")
        screenshot(page, "conversation-10-narrow")
        toggle.click()
        expect(page.locator("#sidebar")).to_be_visible()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        fits(page, 390)
        screenshot(page, "conversation-11-narrow-sidebar")
        toggle.click()
        page.locator("#thread .turn .answer a.citation").first.hover()
        fits(page, 390)
        page.set_viewport_size(DESKTOP)

        # -- Once sam may no longer read the leave policy, its answers are withheld, whole.
        services.access.remove_member("everyone", "sam", actor=Principal.operator())
        page.reload()
        for n in (0, 1):
            expect(turns.nth(n)).to_have_attribute("data-state", "withheld")
            expect(turns.nth(n).locator(".answer")).to_have_text(WITHHELD)
        expect(page.locator("#thread a.citation, #thread .sources li")).to_have_count(0)
        assert "leave-policy.md" not in page.inner_text("#thread")

        # -- Delete, after confirming: the conversation is gone, and a new one is ready.
        item.locator("button.delete").click()
        expect(item.locator(".cancel-delete")).to_be_focused()
        screenshot(page, "conversation-12-delete-confirm")
        item.locator(".confirm-delete").click()
        expect(page.locator("#conversations li")).to_have_count(0)
        expect(page.locator("#thread .turn")).to_have_count(0)
        expect(page.locator("#thread-title")).to_have_text("Ask your documents")
        assert page.url.rstrip("/") == server
        assert api(page, server, "/api/conversations")["conversations"] == []
        gone = page.request.get(f"{server}/api/conversations/{opened}")
        assert gone.status == 404
        page.close()
