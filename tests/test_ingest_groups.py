"""A worker indexes queued documents in groups: one embedding call, one index write and one
commit per step for the group, within the group's size limits, each document still moving
through its own compare-and-set states. Real SQLite, Chroma and FTS5; the fast deterministic
embedder for the logic, and one test with the real packaged model."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from sqlalchemy import select, update

from assistant.answering.generation import ExtractiveFakeGenerator
from assistant.db import Document, DocumentStatus, IngestJob, utcnow
from assistant.embedding import HashingEmbedder
from assistant.ingestion import HOLDER_PREFIX
from assistant.services import Services, build_services
from assistant.settings import Settings

TOPICS = ["parking permits", "expense claims", "holiday leave", "laptop repairs", "fire drills"]


class CountingEmbedder(HashingEmbedder):
    """Counts embedding calls; the first `failures` calls raise (an unexpected error)."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.failures = failures

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(len(texts))
        if len(self.calls) <= self.failures:
            raise RuntimeError("the embedding runtime fell over")
        return super().embed(texts)


def grouped_services(settings: Settings, embedder: CountingEmbedder, **changes: int) -> Services:
    return build_services(
        settings.model_copy(update=changes), embedder=embedder, generator=ExtractiveFakeGenerator()
    )


def add_topics(services: Services) -> list[str]:
    return [
        services.documents.add(f"{topic}.md", f"# {topic}\n\nRules about {topic}.\n".encode()).id
        for topic in TOPICS
    ]


def statuses(services: Services) -> dict[str, tuple[str, int]]:
    return {d.id: (d.status, d.attempts) for d in services.documents.list()}


def test_one_task_indexes_the_queued_documents_together(settings: Settings) -> None:
    embedder = CountingEmbedder()
    services = grouped_services(settings, embedder)
    ids = add_topics(services)
    broken = services.documents.add("broken.pdf", b"%PDF-1.4 not a pdf at all").id
    lead = services.documents.ingest(ids[0])
    assert lead.status == DocumentStatus.INDEXED
    assert {status for status, _ in statuses(services).values()} == {"indexed", "failed"}
    failed = services.documents.get(broken)
    assert failed.status == DocumentStatus.FAILED and "PDF is damaged" in (failed.error or "")
    assert embedder.calls == [len(ids)]  # one call for the whole group's chunks
    # The other documents' own messages arrive later and change nothing. Taken along by
    # the group, they used no attempt of their own.
    assert services.documents.ingest(ids[3]).attempts == 0
    assert embedder.calls == [len(ids)]
    for document_id, topic in zip(ids, TOPICS, strict=True):
        [hit, *_] = services.retriever.search(f"rules about {topic}", 3)
        assert hit.document_id == document_id
    with services.sessions() as session:
        jobs = session.scalars(select(IngestJob)).all()
    assert sorted(j.document_id for j in jobs) == sorted([*ids, broken])
    assert {j.status for j in jobs if j.document_id != broken} == {"indexed"}
    assert services.index.verify().consistent


def test_a_group_stays_within_its_document_and_byte_limits(settings: Settings) -> None:
    services = grouped_services(settings, CountingEmbedder(), ingest_group_documents=3)
    ids = add_topics(services)
    services.documents.ingest(ids[0])
    assert [statuses(services)[i][0] for i in ids] == ["indexed"] * 3 + ["queued"] * 2

    sizes = grouped_services(settings, CountingEmbedder())
    first = sizes.documents.get(ids[3])
    limited = grouped_services(
        settings, CountingEmbedder(), ingest_group_bytes=first.size_bytes + 1
    )
    limited.documents.ingest(ids[3])  # its own bytes leave no room for another document
    assert [statuses(limited)[i][0] for i in ids[3:]] == ["indexed", "queued"]


def test_an_unexpected_error_puts_the_group_back_in_the_queue(settings: Settings) -> None:
    embedder = CountingEmbedder(failures=1)
    services = grouped_services(settings, embedder)
    ids = add_topics(services)
    try:
        services.documents.ingest(ids[0])
    except RuntimeError:
        pass
    else:
        raise AssertionError("the embedding error should reach the task, for a retry")
    assert set(statuses(services).values()) == {(DocumentStatus.QUEUED, 0)}
    with services.sessions() as session:
        assert session.scalars(select(Document.claimed_by)).all() == [None] * len(ids)
    assert services.documents.ingest(ids[0]).status == DocumentStatus.INDEXED  # the retry
    assert statuses(services) == {
        document_id: (DocumentStatus.INDEXED, 1 if document_id == ids[0] else 0)
        for document_id in ids
    }
    assert services.index.verify().consistent


def test_a_taken_over_or_reingested_document_goes_alone(settings: Settings) -> None:
    embedder = CountingEmbedder()
    services = grouped_services(settings, embedder)
    ids = add_topics(services)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with services.sessions.begin() as session:  # what a killed worker leaves behind
        session.execute(
            update(Document)
            .where(Document.id == ids[0])
            .values(
                status=DocumentStatus.PARSING,
                attempts=1,
                claimed_by=HOLDER_PREFIX + str(dead.pid),
                claimed_at=utcnow(),
            )
        )
    assert services.documents.ingest(ids[0]).attempts == 2
    assert [statuses(services)[i][0] for i in ids] == ["indexed"] + ["queued"] * 4
    services.documents.ingest(ids[1])
    services.documents.requeue(ids[0])
    assert services.documents.ingest(ids[0], force=True).status == DocumentStatus.INDEXED
    assert embedder.calls == [1, 4, 1]


def test_a_group_that_kills_its_worker_uses_no_attempt_of_the_others(settings: Settings) -> None:
    services = grouped_services(settings, CountingEmbedder())
    ids = add_topics(services)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with services.sessions.begin() as session:  # a worker died holding a group of five
        for number, document_id in enumerate(ids):
            session.execute(
                update(Document)
                .where(Document.id == document_id)
                .values(
                    status=DocumentStatus.PARSING,
                    attempts=1 if number == 0 else 0,
                    claimed_by=HOLDER_PREFIX + str(dead.pid),
                    claimed_at=utcnow(),
                )
            )
    for document_id in ids:  # their messages come back: each is taken over, alone
        services.documents.ingest(document_id)
    assert statuses(services) == {
        document_id: (DocumentStatus.INDEXED, 2 if document_id == ids[0] else 1)
        for document_id in ids
    }
