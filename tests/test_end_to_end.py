"""Upload through the web API, ingest in a real worker process, ask, check the citation.

Once with the embedded broker (no server), once with the machine's real Redis."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from assistant.services import build_services
from assistant.settings import Settings, load_settings
from tests.conftest import ADMIN_PASSWORD, sign_in, wait_until
from web import create_app

pytestmark = pytest.mark.slow


def sse_events(body: str) -> list[tuple[str, Any]]:
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


def upload_ask_and_check(
    settings: Settings, start_worker: Callable[..., Any], files: dict[str, bytes]
) -> None:
    start_worker(settings)
    client = create_app(settings=settings, services=build_services(settings)).test_client()
    sign_in(client)
    response = client.post(
        "/api/documents",
        data={"files": [(io.BytesIO(data), name) for name, data in files.items()]},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.get_json()
    ids = {d["filename"]: d["id"] for d in response.get_json()["accepted"]}
    assert set(ids) == set(files)

    def all_indexed() -> bool:
        states = [client.get(f"/api/documents/{i}").get_json()["status"] for i in ids.values()]
        assert "failed" not in states, client.get("/api/documents").get_json()
        return set(states) == {"indexed"}

    wait_until(all_indexed, 240, "the worker to index the uploads")
    response = client.post("/api/ask", json={"question": "Who chairs the compliance review?"})
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    events = sse_events(response.get_data(as_text=True))
    names = [name for name, _ in events]
    assert names[0] == "status" and names[-1] == "answer" and "error" not in names, names
    answer = events[-1][1]
    assert not answer["declined"]
    # Verified sentences stream before the answer record; together they are the answer.
    assert "".join(data["text"] for name, data in events if name == "text") == answer["answer"]
    assert answer["citations"][0]["document_id"] == ids["compliance.md"]
    assert "Amara Okafor" in answer["citations"][0]["text"]


def test_embedded_broker_end_to_end(
    settings: Settings, start_worker: Callable[..., Any], files: dict[str, bytes]
) -> None:
    assert settings.broker_url is None  # the default: no server needed
    upload_ask_and_check(settings, start_worker, files)


def test_redis_broker_end_to_end(
    tmp_path: Path, redis_url: str, start_worker: Callable[..., Any], files: dict[str, bytes]
) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    settings = load_settings(
        data_dir=tmp_path / "redis-var", broker_url=redis_url, admin_password=ADMIN_PASSWORD
    )
    upload_ask_and_check(settings, start_worker, files)


def test_documents_left_queued_are_picked_up_when_a_worker_starts(
    settings: Settings, start_worker: Callable[..., Any], files: dict[str, bytes]
) -> None:
    # Uploaded while no worker ran and the message was lost: the database still says
    # "queued", and the next worker re-enqueues it at start-up.
    services = build_services(settings)
    document = services.documents.add("compliance.md", files["compliance.md"])
    start_worker(settings)
    wait_until(lambda: services.documents.get(document.id).status == "indexed", 240, "re-enqueue")
