"""Backpressure (a bounded answer queue: 503 with Retry-After; a per-user rate limit: 429),
the audit of refused questions, /metrics and /readyz. Real SQLite and Chroma; the fast
deterministic embedder, and a fake generator that can be held on an Event so that requests
pile up in threads against the Flask test client (a logic test of the queue around the
model, which the real model does not need)."""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from assistant.accounts import Principal
from assistant.answering.generation import ExtractiveFakeGenerator, Prompt
from assistant.embedding import HashingEmbedder
from assistant.refusals import RefusalLog
from assistant.services import Services, build_services
from assistant.settings import GeneratorSettings, LoadSettings, Settings
from tests.conftest import RecordingQueue, sign_in, wait_until
from web import create_app
from web.limits import EXTENSION, AnswerSlots, LoadControl, RateLimiter, Refused
from web.refusals import EXTENSION as REFUSALS

GUIDE = (
    b"# Travel policy\n\nHotel costs are refunded up to 140 euros per night. "
    b"Receipts are kept for seven years.\n"
)
QUESTION = "How much are hotel costs refunded per night?"
STAFF_PASSWORD = "a staff password 12"


class GatedGenerator(ExtractiveFakeGenerator):
    """The deterministic fake, held at the start of each answer until the gate opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()

    def stream(self, prompt: Prompt) -> Iterator[str]:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        yield from super().stream(prompt)


def make_app(settings: Settings, load: LoadSettings, generator: Any = None) -> Flask:
    services = build_services(
        settings.model_copy(update={"load": load}),
        embedder=HashingEmbedder(),
        generator=generator or ExtractiveFakeGenerator(),
    )
    document = services.documents.add("guide.md", GUIDE)
    services.documents.ingest(document.id)
    app = create_app(services=services, task_sender=RecordingQueue())
    app.config["TESTING"] = True
    return app


def app_services(app: Flask) -> Services:
    return app.extensions["assistant"].services  # type: ignore[no-any-return]


def control(app: Flask) -> LoadControl:
    return app.extensions[EXTENSION]  # type: ignore[no-any-return]


def signed_in(app: Flask, username: str = "admin", **environ: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base.update(environ)
    if username == "admin":
        sign_in(client)
    else:
        sign_in(client, username, STAFF_PASSWORD)
    return client


def refusal_log(app: Flask) -> RefusalLog:
    log: RefusalLog = app.extensions[REFUSALS]
    return log


def refusals(app: Flask) -> list[dict[str, Any]]:
    return app_services(app).audit_log.search(action="question.refused")


# -- the bounded queue -----------------------------------------------------------------------
def test_past_capacity_a_question_gets_503_at_once_and_is_audited(settings: Settings) -> None:
    generator = GatedGenerator()
    load = LoadSettings(max_concurrent_answers=1, max_waiting_answers=1, wait_seconds=20)
    app = make_app(settings, load, generator)
    slots = control(app).slots
    clients = [signed_in(app) for _ in range(3)]
    results: dict[int, tuple[int, str]] = {}

    def ask(number: int) -> None:
        response = clients[number].post("/api/ask", json={"question": QUESTION})
        results[number] = (response.status_code, response.get_data(as_text=True))

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(2)]
    threads[0].start()
    assert generator.entered.wait(10)  # the first question holds the only slot
    threads[1].start()
    wait_until(lambda: slots.waiting == 1, 10, "the second question to wait for the slot")

    started = time.monotonic()
    refused = clients[2].post("/api/ask", json={"question": f"{QUESTION} (third)"})
    assert time.monotonic() - started < 1.0
    assert refused.status_code == 503
    assert refused.json["reason"] == "capacity"
    assert int(refused.headers["Retry-After"]) == load.retry_after_seconds
    assert "busy" in refused.json["error"]
    # The queue is visible in /metrics meanwhile.
    metrics = clients[2].get("/metrics").get_data(as_text=True)
    assert "assistant_answers_in_progress 1\n" in metrics
    assert "assistant_answers_waiting 1\n" in metrics

    generator.gate.set()
    for thread in threads:
        thread.join(30)
    assert [results[n][0] for n in range(2)] == [200, 200]
    assert all("event: answer" in results[n][1] for n in range(2))
    assert (slots.running, slots.waiting) == (0, 0)

    [record] = refusals(app)
    assert record["actor_id"] == "user:admin"
    assert record["details"]["reason"] == "capacity"
    assert record["details"]["question"] == f"{QUESTION} (third)"
    assert record["details"]["status"] == 503
    assert len(app_services(app).audit_log.search(action="question")) == 2
    assert app_services(app).audit_log.verify().ok
    # Capacity is back: the next question is answered.
    assert "event: answer" in clients[2].post("/api/ask", json={"question": QUESTION}).text


def test_a_question_that_waits_too_long_gets_503(settings: Settings) -> None:
    generator = GatedGenerator()
    load = LoadSettings(max_concurrent_answers=1, max_waiting_answers=1, wait_seconds=0.3)
    app = make_app(settings, load, generator)
    first, second = signed_in(app), signed_in(app)
    holder = threading.Thread(
        target=lambda: first.post("/api/ask", json={"question": QUESTION}).get_data()
    )
    holder.start()
    try:
        assert generator.entered.wait(10)
        started = time.monotonic()
        response = second.post("/api/ask", json={"question": "And receipts?"})
        waited = time.monotonic() - started
    finally:
        generator.gate.set()
        holder.join(30)
    assert response.status_code == 503 and "Retry-After" in response.headers
    assert 0.3 <= waited < 1.3
    assert response.json["reason"] == "wait_timeout"
    [record] = refusals(app)
    assert record["details"]["reason"] == "wait_timeout"
    assert record["details"]["question"] == "And receipts?"


def test_the_slot_is_freed_when_the_stream_is_closed_unread(settings: Settings) -> None:
    load = LoadSettings(max_concurrent_answers=1, max_waiting_answers=0)
    app = make_app(settings, load)
    client = signed_in(app)
    unread = client.post("/api/ask", json={"question": QUESTION})
    assert control(app).slots.running == 1
    assert client.post("/api/ask", json={"question": QUESTION}).status_code == 503
    unread.close()  # what a WSGI server does when the client goes away
    assert control(app).slots.running == 0
    assert client.post("/api/ask", json={"question": QUESTION}).status_code == 200


def test_answer_slots_and_waiting_room() -> None:
    slots = AnswerSlots(concurrent=2, waiting=0, wait_seconds=1, retry_after=7)
    first, second = slots.acquire(), slots.acquire()
    assert slots.running == 2
    with pytest.raises(Refused) as refused:
        slots.acquire()
    assert (refused.value.status, refused.value.retry_after) == (503, 7)
    first.release()
    first.release()  # a second release does not free a slot it no longer holds
    assert slots.running == 1
    third = slots.acquire()
    with pytest.raises(Refused):
        slots.acquire()
    second.release()
    third.release()
    assert slots.running == 0


# -- the per-user rate limit -------------------------------------------------------------------
def test_rate_limit_is_a_sliding_window_per_user() -> None:
    now = [1000.0]
    limiter = RateLimiter(per_minute=2, clock=lambda: now[0])
    limiter.check("user:a")
    now[0] += 20
    limiter.check("user:a")
    now[0] += 10
    with pytest.raises(Refused) as refused:
        limiter.check("user:a")
    assert (refused.value.status, refused.value.reason) == (429, "rate_limit")
    assert refused.value.retry_after == 30  # the first question leaves the window then
    limiter.check("user:b")  # others are not affected
    now[0] += 30
    limiter.check("user:a")
    with pytest.raises(Refused):
        limiter.check("user:a")


def test_a_user_over_the_rate_limit_gets_429_and_it_is_audited(settings: Settings) -> None:
    app = make_app(settings, LoadSettings(per_user_per_minute=2))
    app_services(app).accounts.add_user(
        "sam", STAFF_PASSWORD, "staff", [], actor=Principal.operator()
    )
    admin = signed_in(app)
    for _ in range(2):
        assert "event: answer" in admin.post("/api/ask", json={"question": QUESTION}).text
    started = time.monotonic()
    response = admin.post("/api/ask", json={"question": "One too many?"})
    assert time.monotonic() - started < 1.0
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.json["reason"] == "rate_limit"
    assert "2 questions in the last minute" in response.json["error"]
    # An API token is the same user; another user still gets answers.
    token = app_services(app).accounts.issue_token("admin", "scripts")
    by_token = app.test_client().post(
        "/api/ask", json={"question": QUESTION}, headers={"Authorization": f"Bearer {token}"}
    )
    assert by_token.status_code == 429
    other = signed_in(app, "sam").post("/api/ask", json={"question": QUESTION})
    assert other.status_code == 200 and "event: answer" in other.text
    # The first refusal is recorded at once; repeats in its minute become one record.
    [first] = refusals(app)
    assert first["details"]["question"] == "One too many?"
    refusal_log(app).flush(everything=True)
    summary, first = refusals(app)
    assert summary["details"]["repeats"] == 1
    assert [s["question"] for s in summary["details"]["samples"]] == [QUESTION]
    reasons = [first["details"]["reason"], *(s["reason"] for s in summary["details"]["samples"])]
    assert reasons == ["rate_limit", "rate_limit"]
    assert {r["actor_id"] for r in (first, summary)} == {"user:admin"}


def test_bad_questions_are_audited_as_refused(settings: Settings) -> None:
    app = make_app(settings, LoadSettings())
    client = signed_in(app)
    assert client.post("/api/ask", json={"question": "  "}).status_code == 400
    assert client.post("/api/ask", data="hello", content_type="text/plain").status_code == 400
    details = [r["details"] for r in refusals(app)]
    assert [d["reason"] for d in details] == ["invalid", "invalid"]
    assert {d["question"] for d in details} == {"  ", None}
    assert "the question is empty" in {d["error"] for d in details}


# -- /metrics ----------------------------------------------------------------------------------
def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in the exposition text."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{wanted}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split(" ")[1])
    raise AssertionError(f"{series} not in the metrics")


def test_metrics_count_questions_latency_queue_and_documents(settings: Settings) -> None:
    app = make_app(settings, LoadSettings(per_user_per_minute=3))
    services = app_services(app)
    broken = services.documents.add("broken.pdf", b"%PDF-1.4 garbage")
    services.documents.ingest(broken.id)
    client = signed_in(app)
    for question in (QUESTION, "Who won the 1998 football world cup?", QUESTION, "Fourth?"):
        client.post("/api/ask", json={"question": question}).get_data()
    client.post("/api/ask", json={"question": ""})

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.get_data(as_text=True)
    for line in text.splitlines():  # every line is a comment or `name{labels} value`
        assert re.fullmatch(r"# (HELP|TYPE) \w+ .+|\w+(\{[^}]*\})? [-+\w.]+", line), line
    assert sample(text, "assistant_questions_total", outcome="answered", reason="none") == 2
    assert sample(text, "assistant_questions_total", outcome="declined", reason="no-passage") == 1
    assert sample(text, "assistant_questions_total", outcome="refused", reason="rate_limit") == 1
    assert sample(text, "assistant_questions_total", outcome="refused", reason="invalid") == 1
    assert sample(text, "assistant_questions_total", outcome="refused", reason="capacity") == 0
    for histogram in ("assistant_answer_first_event_seconds", "assistant_answer_seconds"):
        assert sample(text, f"{histogram}_count") == 3
        assert sample(text, f"{histogram}_bucket", le="+Inf") == 3
        assert sample(text, f"{histogram}_bucket", le="60") == 3  # cumulative
        assert 0 < sample(text, f"{histogram}_sum") < 60
    assert sample(text, "assistant_answers_in_progress") == 0
    assert sample(text, "assistant_answers_waiting") == 0
    assert sample(text, "assistant_answers_max_concurrent") == 1
    assert sample(text, "assistant_documents", status="indexed") == 1
    assert sample(text, "assistant_documents", status="failed") == 1
    assert sample(text, "assistant_documents", status="queued") == 0
    assert sample(text, "assistant_ingestion_failures") == 1
    assert sample(text, "assistant_ingestion_finished_last_hour", status="indexed") == 1
    assert sample(text, "assistant_ingestion_finished_last_hour", status="failed") == 1
    assert sample(text, "assistant_database_up") == 1


def test_metrics_are_for_admins_and_local_scrapers_only(settings: Settings) -> None:
    app = make_app(settings, LoadSettings())
    services = app_services(app)
    services.accounts.add_user("sam", STAFF_PASSWORD, "staff", [], actor=Principal.operator())
    remote = {"REMOTE_ADDR": "10.20.30.40"}
    # A scraper on this machine, straight to the app's port (the test client is 127.0.0.1).
    assert app.test_client().get("/metrics").status_code == 200
    assert app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    # Relayed by the reverse proxy, or from another machine: no.
    relayed = app.test_client().get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert relayed.status_code == 401
    assert app.test_client().get("/metrics", environ_base=remote).status_code == 401
    assert signed_in(app, "sam", **remote).get("/metrics").status_code == 403
    # Admins, by session or API token, from anywhere.
    assert signed_in(app, "admin", **remote).get("/metrics").status_code == 200
    token = services.accounts.issue_token("admin", "prometheus")
    headers = {"Authorization": f"Bearer {token}"}
    by_token = app.test_client().get("/metrics", headers=headers, environ_base=remote)
    assert by_token.status_code == 200 and "assistant_questions_total" in by_token.text
    staff_token = services.accounts.issue_token("sam", "scripts")
    headers = {"Authorization": f"Bearer {staff_token}"}
    assert (
        app.test_client().get("/metrics", headers=headers, environ_base=remote).status_code == 403
    )


# -- /readyz -----------------------------------------------------------------------------------
READY = {"database": "ok", "audit": "ok", "broker": "ok", "vector_store": "ok", "model": "ok"}


def readyz(app: Flask) -> tuple[int, dict[str, str]]:
    response = app.test_client().get("/readyz")  # no sign-in needed
    return response.status_code, response.json


def test_readyz_is_ok_when_every_part_answers(fake_services: Services) -> None:
    app = create_app(services=fake_services, task_sender=RecordingQueue())
    assert readyz(app) == (200, READY)
    healthz = app.test_client().get("/healthz")
    assert (healthz.status_code, healthz.json) == (200, {"status": "ok"})


def test_readyz_fails_when_the_broker_folder_is_gone(
    fake_services: Services, settings: Settings
) -> None:
    app = create_app(services=fake_services, task_sender=RecordingQueue())
    queue = settings.broker_dir / "queue"
    shutil.rmtree(queue)
    queue.write_text("not a folder")  # as if the volume were mounted wrongly
    status, report = readyz(app)
    assert status == 503
    assert report == {**READY, "broker": "error: the broker's folders are missing or not writable"}
    assert str(settings.resolved_data_dir) not in str(report)  # nothing about the layout


@pytest.mark.sqlite("removes the SQLite database file")
def test_readyz_fails_when_the_database_file_is_removed(
    fake_services: Services, settings: Settings
) -> None:
    app = create_app(services=fake_services, task_sender=RecordingQueue())
    assert readyz(app)[0] == 200
    for path in settings.resolved_data_dir.glob("assistant.db*"):
        path.unlink()
    status, report = readyz(app)
    assert status == 503
    assert report["database"] == "error: the database file is missing"
    assert report["broker"] == report["vector_store"] == report["model"] == "ok"


def test_readyz_checks_the_model_file_without_loading_it(
    tmp_path: Path, settings: Settings
) -> None:
    missing = tmp_path / "bigger-model.gguf"

    def app_with(model_path: Path) -> Flask:
        changed = settings.model_copy(
            update={"generator": GeneratorSettings(model_path=model_path)}
        )
        services = build_services(changed, embedder=HashingEmbedder())  # the real LlamaGenerator
        return create_app(services=services, task_sender=RecordingQueue())

    status, report = readyz(app_with(missing))
    assert status == 503 and report == {**READY, "model": "error: the model file is missing"}
    missing.write_bytes(b"GGUF")  # present: ready (it is only loaded on the first question)
    assert readyz(app_with(missing)) == (200, READY)


def test_readyz_pings_a_redis_broker(settings: Settings, redis_url: str) -> None:
    def app_with(broker_url: str) -> Flask:
        services = build_services(
            settings.model_copy(update={"broker_url": broker_url}),
            embedder=HashingEmbedder(),
            generator=ExtractiveFakeGenerator(),
        )
        return create_app(services=services, task_sender=RecordingQueue())

    assert readyz(app_with(redis_url)) == (200, READY)
    started = time.monotonic()
    status, report = readyz(app_with("redis://127.0.0.1:9/0"))  # nothing listens there
    assert time.monotonic() - started < 3
    assert status == 503 and report == {**READY, "broker": "error: the broker does not answer"}
