"""Crash safety: a real Celery worker on the machine's real Redis is killed with SIGKILL at
random moments, ten times, while it ingests a batch of 200 documents, and restarted each
time. Afterwards every document is indexed exactly once, the chunk count is what the
chunker gives for the files, and every chunk is found by its own text."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from assistant.chunking import chunk_document
from assistant.db import DocumentStatus
from assistant.parsing import parse
from assistant.services import build_services
from assistant.settings import load_settings
from tests.conftest import wait_until
from web.tasks import TaskSender

pytestmark = pytest.mark.slow
DOCUMENTS = 200
KILLS = 10
WORDS = [
    *("harbour", "ledger", "quarry", "violet", "meadow", "copper", "lantern", "orchard"),
    *("falcon", "granite", "saddle", "thimble", "walrus", "juniper", "cobalt", "pylon"),
    *("tundra", "quill", "marrow", "beacon", "canyon", "ember", "fjord", "gossamer"),
    *("hazel", "ivory", "jasper", "kettle", "lagoon", "mosaic", "nectar", "opal"),
    *("pewter", "quartz", "russet", "sorrel", "tamarind", "umber", "vellum", "willow"),
]


def make_document(rng: random.Random, number: int) -> bytes:
    """A Markdown file of 1 to 3 chunks whose sentences no other file shares."""
    sentences = [
        f"Record {number}-{n} notes the {' '.join(rng.choices(WORDS, k=12))}."
        for n in range(rng.randint(4, 30))
    ]
    return f"# Register {number}\n\n{' '.join(sentences)}\n".encode()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A worker in its own process group, so SIGKILL reaches its pool children too."""
    command = [
        sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--loglevel", "INFO",
        "--concurrency", "1", "--without-gossip", "--without-mingle",
        "--hostname", f"chaos-{os.getpid()}-{time.monotonic_ns()}@%h",
    ]  # fmt: skip
    with log.open("ab") as output:
        return subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_killing_the_worker_ten_times_loses_and_duplicates_nothing(
    tmp_path: Path, redis_url: str
) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    settings = load_settings(data_dir=tmp_path / "var", broker_url=redis_url)
    services = build_services(settings)
    rng = random.Random(7)
    bodies = {f"register-{n:03}.md": make_document(rng, n) for n in range(DOCUMENTS)}
    documents = {name: services.documents.add(name, body).id for name, body in bodies.items()}

    queue = TaskSender(settings)
    for document_id in documents.values():
        queue.send_ingest(document_id)

    env = {
        **os.environ,
        "ASSISTANT_DATA_DIR": str(settings.resolved_data_dir),
        "ASSISTANT_BROKER_URL": redis_url,
        # Groups of 4, not 32: whole groups of 32 indexed the batch before ten kills could
        # land, and a kill now also hits groups, taken-over documents and single ones.
        "ASSISTANT_INGEST_GROUP_DOCUMENTS": "4",
    }
    log = tmp_path / "worker.log"

    def indexed() -> int:
        return services.documents.counts()[DocumentStatus.INDEXED]

    kills = 0
    worker = start_worker(env, log)
    try:
        while kills < KILLS:
            # Kill once the worker has made some progress, at a random moment after that.
            before = indexed()
            wait_until(lambda b=before: indexed() > b, 180, "the worker to index something")
            time.sleep(rng.uniform(0.0, 1.0))
            kill_group(worker)
            kills += 1
            worker = start_worker(env, log)
        wait_until(
            lambda: (
                services.documents.counts()[DocumentStatus.INDEXED] == DOCUMENTS
                or services.documents.counts()[DocumentStatus.FAILED] > 0
            ),
            600,
            "every document to be indexed",
        )
    finally:
        kill_group(worker)

    counts = services.documents.counts()
    assert counts[DocumentStatus.INDEXED] == DOCUMENTS, (counts, log.read_text()[-3000:])
    assert kills == KILLS
    expected_total = 0
    vector_ids, keyword_ids = services.store.ids(), services.keywords.ids()
    for name, document_id in documents.items():
        parsed = parse(bodies[name], ".md")
        expected = len(chunk_document(parsed, settings.chunking.size, settings.chunking.overlap))
        chunks = services.documents.chunks(document_id)
        assert len(chunks) == expected, name
        ids = {c.id for c in chunks}
        assert {i for i in vector_ids if i.startswith(document_id)} == ids, name
        assert {i for i in keyword_ids if i.startswith(document_id)} == ids, name
        expected_total += expected
    assert services.store.count() == services.keywords.count() == expected_total
    assert services.index.verify().consistent
    # Every chunk is retrievable: the index holds the vector of the chunk's header and
    # own text (int8 vectors move slightly with their batch companions, cosine > 0.99 in
    # docs/benchmarks.md), and a search with that vector finds the chunk. The registers'
    # word salads share one vocabulary, so their chunks are near-duplicates and a search
    # with a freshly embedded text may rank a neighbour first. The keyword index holds
    # exactly the same chunks (checked above).
    chunks = [c for i in documents.values() for c in services.documents.chunks(i)]
    vectors = services.embedder.embed([c.index_text for c in chunks])  # header + text
    stored = services.store.embeddings([c.id for c in chunks])
    for chunk, vector in zip(chunks, vectors, strict=True):
        assert sum(a * b for a, b in zip(stored[chunk.id], vector, strict=True)) > 0.98, chunk.id
        hits = services.store.query(stored[chunk.id], 3)
        assert chunk.id in [hit.chunk_id for hit in hits], chunk.id
