"""The Ask page and the source view in a real browser: gunicorn serving `web:create_app()`
with the packaged models (Qwen2.5-Coder 0.5B, and 1.5B when a question is routed), over
a small document set indexed by the core, and Debian's chromium driven by Playwright.

What a member of staff sees: the answer arriving sentence by sentence, each citation's
exact supporting sentence under it, the citation opening the document at that sentence,
the larger model named when it answered, "not found" with passages to look at, and an
error (not half an answer) when the answer cannot be recorded."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistant.accounts import Principal
from assistant.services import Services
from assistant.settings import Settings
from tests.browsing import chromium, normalise, screenshot, serving, signed_in_page
from tests.test_hardening_access import block_audit_inserts

pytestmark = pytest.mark.slow

DOCUMENTS = {
    "leave-policy.md": """# Leave policy

## Annual leave

Every employee receives 27 days of annual leave per calendar year. Unused leave can be
carried over until the end of March. Leave requests are made in the HR portal at least two
weeks in advance.

## Sick leave

Staff who are ill must call their line manager before 9:00 on the first day of absence.
A doctor's note is needed after seven calendar days.
""",
    "it-security.md": """# IT security rules

## Removable media

Personal USB sticks must not be connected to work laptops. Files are shared through the
secure file exchange instead.

## Passwords

Passwords are changed every 90 days and are never written down.
""",
}
SICK_LEAVE = {
    "Staff who are ill must call their line manager before 9:00 on the first day of absence.",
    "A doctor's note is needed after seven calendar days.",
}
ILL = "What should I do when I am ill?"
PASSWORDS = "How often are passwords changed?"
NOT_IN_THEM = "Can staff work from home on Fridays?"  # close to the leave policy, not in it
ANSWERED = 240_000  # ms: a cold start loads the models; the machine may be busy
STAFF_PASSWORD = "staff password 123"
LARGE = "Qwen2.5-Coder-1.5B-Instruct"

# Records what the page showed on the way, including what it removed again: every status
# line the server sent, and every streamed sentence the moment it was added.
RECORD = """() => {
  const seen = { statuses: [], pieces: [] };
  window.__seen = seen;
  // Each status replaces its line's text node: the added nodes are the statuses, in order.
  new MutationObserver((records) => {
    for (const record of records) for (const node of record.addedNodes) {
      if (node.nodeType === 3 && record.target.classList.contains("status-text"))
        seen.statuses.push(node.data);
      if (node.nodeType === 1 && node.classList.contains("streamed"))
        seen.pieces.push(node.textContent);
    }
  }).observe(document.getElementById("thread"), { childList: true, subtree: true });
}"""


@pytest.fixture
def library(services: Services) -> dict[str, str]:
    """The documents, indexed with the real embedder, readable by `sam` (staff)."""
    operator = Principal.operator()
    services.access.create_group("everyone", actor=operator)
    services.access.set_readers("default", ["everyone"], actor=operator)
    services.accounts.add_user("sam", STAFF_PASSWORD, "staff", ["everyone"], actor=operator)
    ids = {}
    for name, body in DOCUMENTS.items():
        added = services.documents.add(name, body.encode())
        assert services.documents.ingest(added.id).status == "indexed"
        ids[added.id] = name
    return ids


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium(back_forward_cache=True) as launched:
        yield launched


def ask(page: Any, server: str, question: str) -> None:
    """Ask from a fresh Ask page, with the keyboard, recording what is shown on the way."""
    page.goto(server)
    page.evaluate(RECORD)
    page.fill("#question", question)
    page.press("#question", "Enter")


def last_turn(page: Any) -> Any:
    """The newest turn of the conversation on the page (each `ask` starts a new one)."""
    return page.locator("#thread .turn").last


def finished(page: Any, state: str) -> Any:
    from playwright.sync_api import expect

    turn = last_turn(page)
    expect(turn).to_have_attribute("data-state", re.compile(r"answered|declined"), timeout=ANSWERED)
    assert turn.get_attribute("data-state") == state, turn.inner_text()
    return turn


def answer_text(turn: Any) -> str:
    """The answer as a reader sees it (the citation tooltips are hidden)."""
    text: str = turn.evaluate("e => e.querySelector('.answer').innerText")
    return text


def seen(page: Any) -> dict[str, list[str]]:
    shown: dict[str, list[str]] = page.evaluate("window.__seen")
    return shown


def cited_offsets(href: str) -> tuple[str, str, int, int]:
    """The document id, passage id and sentence offsets a citation link opens."""
    url = urllib.parse.urlsplit(href)
    document_id = re.fullmatch(r"/documents/(\w+)/source", url.path)
    query = urllib.parse.parse_qs(url.query)
    assert document_id and url.fragment == "sentence", href
    start, end = int(query["start"][0]), int(query["end"][0])
    return document_id.group(1), query["chunk"][0], start, end


def fits(page: Any, width: int) -> None:
    """Nothing wider than the window: no sideways scrolling of the page."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_a_streamed_answer_quotes_and_opens_its_supporting_sentences(
    settings: Settings, services: Services, library: dict[str, str], browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    with serving(settings, tmp_path) as server:
        page = signed_in_page(browser, server, "sam", STAFF_PASSWORD)
        ask(page, server, ILL)
        turn = finished(page, "answered")
        answer = turn.locator(".answer")
        # The sentences were shown as they came, and the final answer says the same.
        shown = seen(page)
        assert shown["pieces"], "no sentence was shown before the answer was complete"
        assert normalise("".join(shown["pieces"])) == normalise(answer_text(turn))
        assert shown["statuses"][0] == "Searching your documents…"
        expect(turn.locator(".status-text")).to_have_text(re.compile(r"^Answered in \d+\.\d s"))
        expect(turn.locator(".spinner")).to_be_hidden()
        expect(turn.locator(".declined")).to_be_hidden()
        expect(page.locator("#ask-error")).to_be_hidden()

        # Each [n] opens its own supporting sentence, quoted under the answer.
        links = answer.locator("a.citation")
        numbers = list(dict.fromkeys(links.all_inner_texts()))  # in order of first use
        assert numbers == [f"[{n}]" for n in range(1, len(numbers) + 1)]
        quotes = []
        for link in links.all():
            document_id, chunk_id, start, end = cited_offsets(link.get_attribute("href") or "")
            sentence = services.documents.text(document_id)[start:end]
            item = turn.locator(f"li.source[id$='-{link.inner_text().strip('[]')}']")
            expect(item.locator(".source-link")).to_have_text(library[document_id])
            expect(item.locator(".support mark")).to_have_text(normalise(sentence))
            passage = services.documents.chunk(chunk_id)
            assert passage.char_start <= start < end <= passage.char_end
            quotes.append(normalise(sentence))
        assert SICK_LEAVE & set(quotes), quotes
        screenshot(page, "ask-cited-answer")
        page.set_viewport_size({"width": 390, "height": 844})
        fits(page, 390)
        screenshot(page, "ask-cited-answer-narrow")
        page.set_viewport_size({"width": 1280, "height": 800})
        # The whole passage on request, with the sentence marked in it.
        first = turn.locator(".sources li.source").first
        expect(first.locator(".passage-text")).to_be_hidden()
        first.locator("summary").click()
        expect(first.locator(".passage-text")).to_be_visible()
        expect(first.locator(".passage-text mark")).to_have_text(quotes[0])
        answered = answer_text(turn)

        # -- The first citation, opened with the keyboard: that sentence, in view and focused.
        document_id, chunk_id, start, end = cited_offsets(links.first.get_attribute("href") or "")
        links.first.focus()
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/source\?chunk=.+&start=\d+&end=\d+"))
        sentence = page.locator("mark#sentence")
        expect(sentence).to_have_text(services.documents.text(document_id)[start:end])
        expect(sentence).to_be_in_viewport()
        assert page.evaluate("document.activeElement.id") == "sentence"
        passage = services.documents.chunk(chunk_id).text
        assert normalise(page.locator("mark#cited").inner_text()) == normalise(passage)
        expect(page.locator("h1")).to_have_text(library[document_id])
        expect(page.locator("#source-notice")).to_have_count(0)
        screenshot(page, "source-cited-passage")
        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        expect(sentence).to_be_in_viewport()
        fits(page, 390)
        page.set_viewport_size({"width": 1280, "height": 800})

        # -- Back: the answer is still there, as it was left.
        page.go_back(wait_until="commit")
        expect(last_turn(page)).to_have_attribute("data-state", "answered")
        assert answer_text(last_turn(page)) == answered

        # -- The answer's own record cannot be written (the question's can, so its verified
        # sentences are sent first): they are taken away again and the error says why.
        block_audit_inserts(services, action="question")
        ask(page, server, ILL)
        expect(page.locator("#ask-error")).to_contain_text("withheld", timeout=ANSWERED)
        assert seen(page)["pieces"], "the sentences should have been streamed before the error"
        expect(page.locator("#thread .turn")).to_have_count(0)
        assert page.locator("#thread .answer, #thread .sources").count() == 0
        page.close()


def test_a_routed_question_says_the_larger_model_is_checking_and_answered(
    settings: Settings, services: Services, library: dict[str, str], browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # Every answer of the small model counts as not confident enough: each one is routed.
    with serving(settings, tmp_path, {"ASSISTANT_ANSWERING__ROUTE_THRESHOLD": "1.0"}) as server:
        page = signed_in_page(browser, server, "sam", STAFF_PASSWORD)
        ask(page, server, PASSWORDS)
        turn = finished(page, "answered")
        assert f"Checking with the larger model ({LARGE})…" in seen(page)["statuses"]
        expect(turn.locator(".status-text")).to_have_text(
            re.compile(rf"^Answered in \d+\.\d s by the larger model, {re.escape(LARGE)}$")
        )
        expect(turn.locator(".sources .support mark").first).to_have_text(
            "Passwords are changed every 90 days and are never written down."
        )
        screenshot(page, "ask-routed-answer")
        page.close()


def test_not_found_offers_passages_to_look_at(
    settings: Settings, services: Services, library: dict[str, str], browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # No answer is confident enough: every question the retrieval floor lets through reaches
    # the model and is declined, with the passages found as places to look.
    extra = {"ASSISTANT_ANSWERING__ANSWER_THRESHOLD": "1.0", "ASSISTANT_ROUTING__MODE": "off"}
    with serving(settings, tmp_path, extra) as server:
        page = signed_in_page(browser, server, "sam", STAFF_PASSWORD)
        ask(page, server, NOT_IN_THEM)
        turn = finished(page, "declined")
        expect(turn.locator(".declined")).to_be_visible()
        expect(turn.locator(".declined h3")).to_have_text("Not found in your documents")
        expect(turn.locator(".answer")).to_be_hidden()
        expect(page.locator("a.citation")).to_have_count(0)
        expect(turn.locator(".status-text")).to_have_text(re.compile(r"^Searched in \d+\.\d s$"))
        expect(turn.locator(".sources-title")).to_have_text("You may want to look at")
        suggestion = turn.locator(".sources li.suggestion").first
        expect(suggestion.locator(".source-link")).to_have_text("leave-policy.md")
        expect(turn.locator(".sources .support")).to_have_count(0)  # no sentence is claimed
        expect(suggestion.locator(".source-snippet")).to_contain_text("Every employee receives")
        screenshot(page, "ask-not-found")
        page.set_viewport_size({"width": 390, "height": 844})
        fits(page, 390)
        page.set_viewport_size({"width": 1280, "height": 800})
        # A suggestion opens its passage, highlighted as a whole.
        href = suggestion.locator(".source-link").get_attribute("href") or ""
        assert "start=" not in href and "end=" not in href
        suggestion.locator(".source-link").click()
        expect(page.locator("mark#cited")).to_be_in_viewport()
        expect(page.locator("mark#sentence")).to_have_count(0)
        page.close()
