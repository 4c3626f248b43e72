"""The document lifecycle in the core: duplicates, versions, deletion, the compare-and-set
state machine with its attempt counter, retries, the index-settings guard and the index
check. Real SQLite, Chroma and FTS5; the fast deterministic embedder (the lifecycle is under
test here; tests/test_ingestion.py runs the real model)."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest
from sqlalchemy import update

from assistant.answering.generation import ExtractiveFakeGenerator
from assistant.db import Document, DocumentStatus, utcnow
from assistant.embedding import HashingEmbedder
from assistant.errors import DuplicateDocument, InvalidInput
from assistant.index_check import index_settings
from assistant.ingestion import HOLDER_PREFIX
from assistant.services import Services, build_services
from assistant.settings import Settings

POLICY_V1 = b"# Expenses\n\nHotel costs are refunded up to 120 euros per night.\n"
POLICY_V2 = b"# Expenses\n\nHotel costs are refunded up to 150 euros per night.\n"


def searchable_texts(services: Services, query: str) -> list[str]:
    return [p.text for p in services.retriever.search(query, 10)]


def set_state(services: Services, document_id: str, status: str, attempts: int) -> None:
    """What a worker killed mid-way leaves behind."""
    with services.sessions.begin() as session:
        session.execute(
            update(Document)
            .where(Document.id == document_id)
            .values(status=status, attempts=attempts)
        )


def test_same_bytes_in_a_collection_are_a_duplicate(fake_services: Services) -> None:
    documents = fake_services.documents
    first = documents.ingest(documents.add("policy.md", POLICY_V1).id)
    with pytest.raises(DuplicateDocument, match=r"copy\.md: duplicate of policy\.md"):
        documents.add("copy.md", POLICY_V1)
    fake_services.access.create_collection("finance")
    other = documents.add("policy.md", POLICY_V1, "finance")  # another audience: allowed
    assert other.id != first.id and other.version == 1
    assert len(documents.list()) == 2


def test_a_new_version_supersedes_the_old_one_once_indexed(fake_services: Services) -> None:
    documents = fake_services.documents
    v1 = documents.ingest(documents.add("policy.md", POLICY_V1).id)
    v2 = documents.add("policy.md", POLICY_V2)
    assert (v2.version, v2.supersedes) == (2, v1.id)
    # Until the new version is indexed, the old one keeps answering.
    assert any("120 euros" in t for t in searchable_texts(fake_services, "hotel refund"))
    documents.ingest(v2.id)
    texts = searchable_texts(fake_services, "hotel refund per night")
    assert any("150 euros" in t for t in texts)
    assert not any("120 euros" in t for t in texts)
    assert v1.id not in {
        hit.chunk_id.split(":")[0]
        for hit in fake_services.store.query(
            fake_services.embedder.embed(["Hotel costs are refunded up to 120 euros"])[0], 10
        )
    }
    # The old version stays for admins and for the audit records that cite it.
    old = documents.get(v1.id)
    assert old.current is False and old.status == DocumentStatus.INDEXED
    assert documents.original_path(v1.id).read_bytes() == POLICY_V1
    assert documents.chunks(v1.id)
    assert [d.id for d in documents.list()] == [v2.id]
    assert {d.id for d in documents.list(versions=True)} == {v1.id, v2.id}
    assert fake_services.index.verify().consistent


def test_a_deleted_document_cannot_be_returned_by_any_query(fake_services: Services) -> None:
    documents = fake_services.documents
    keep = documents.ingest(documents.add("keep.md", b"# Parking\n\nPermits are free.\n").id)
    gone = documents.ingest(documents.add("policy.md", POLICY_V1).id)
    texts = [c.text for c in documents.chunks(gone.id)]
    documents.delete(gone.id)
    for text in [*texts, "hotel", "120 euros per night", "Expenses"]:
        assert all(p.document_id != gone.id for p in fake_services.retriever.search(text, 50))
    assert not any(i.startswith(gone.id) for i in fake_services.store.ids())
    assert not any(i.startswith(gone.id) for i in fake_services.keywords.ids())
    assert documents.get(keep.id).status == DocumentStatus.INDEXED


def test_a_document_left_mid_way_by_a_dead_worker_is_tried_again(fake_services: Services) -> None:
    documents = fake_services.documents
    document = documents.add("policy.md", POLICY_V1)
    set_state(fake_services, document.id, DocumentStatus.EMBEDDING, attempts=1)
    done = documents.ingest(document.id)
    assert (done.status, done.attempts) == (DocumentStatus.INDEXED, 2)


def test_a_poison_document_fails_after_the_attempt_limit(
    fake_services: Services, settings: Settings
) -> None:
    documents = fake_services.documents
    document = documents.add("policy.md", POLICY_V1)
    limit = settings.limits.max_attempts
    set_state(fake_services, document.id, DocumentStatus.PARSING, attempts=limit)
    failed = documents.ingest(document.id)
    assert failed.status == DocumentStatus.FAILED
    assert f"stopped while processing this file {limit} times" in (failed.error or "")
    # An admin's retry starts the count again; so does a re-ingest of an indexed file.
    assert documents.requeue(document.id).status == DocumentStatus.QUEUED
    with pytest.raises(InvalidInput, match="still being processed"):
        documents.requeue(document.id)
    assert documents.ingest(document.id).status == DocumentStatus.INDEXED
    assert documents.requeue(document.id).attempts == 0


def test_racing_workers_index_a_document_exactly_once(fake_services: Services) -> None:
    documents = fake_services.documents
    body = b"# Rules\n\n" + b"".join(b"Rule %d applies to everyone.\n\n" % n for n in range(200))
    document = documents.add("rules.md", body)
    threads = [threading.Thread(target=documents.ingest, args=(document.id,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = documents.get(document.id)
    assert done.status == DocumentStatus.INDEXED
    chunk_ids = [c.id for c in documents.chunks(document.id)]
    assert len(chunk_ids) == done.chunk_count == len(set(chunk_ids))
    assert sum(1 for i in fake_services.store.ids() if i.startswith(document.id)) == len(chunk_ids)
    assert fake_services.index.verify().consistent


def test_the_index_refuses_other_chunking_until_rebuilt(
    fake_services: Services, settings: Settings
) -> None:
    fake_services.documents.ingest(fake_services.documents.add("a.md", POLICY_V1).id)
    changed = settings.model_copy(
        update={"chunking": settings.chunking.model_copy(update={"size": 400, "overlap": 50})}
    )
    other = build_services(changed, embedder=HashingEmbedder(), generator=ExtractiveFakeGenerator())
    refused = other.documents.ingest(other.documents.add("b.md", POLICY_V2).id)
    assert refused.status == DocumentStatus.FAILED
    assert "reindex --all" in (refused.error or "")
    other.index.clear(index_settings(other.embedder.name, other.settings.chunking))
    for document_id in other.documents.requeue_all():
        assert other.documents.ingest(document_id).status == DocumentStatus.INDEXED
    assert other.index.verify().consistent


def test_index_check_finds_and_repairs_drift(fake_services: Services) -> None:
    documents = fake_services.documents
    document = documents.ingest(documents.add("policy.md", POLICY_V1).id)
    [chunk] = documents.chunks(document.id)
    fake_services.store.delete_ids([chunk.id])
    fake_services.keywords.upsert([("ghost:1:0", "ghost", "default", "ghost text")])
    report = fake_services.index.verify(repair=True)
    assert (report.missing_vectors, report.extra_keywords, report.repaired) == (1, 1, True)
    assert fake_services.index.verify().consistent
    assert any("120 euros" in t for t in searchable_texts(fake_services, "hotel refund"))


def test_a_live_worker_keeps_its_document_and_a_dead_one_loses_it(fake_services: Services) -> None:
    documents = fake_services.documents
    document = documents.add("policy.md", POLICY_V1)
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()
    for holder, expected in [(os.getpid(), DocumentStatus.PARSING), (dead_pid.pid, "indexed")]:
        with fake_services.sessions.begin() as session:
            session.execute(
                update(Document)
                .where(Document.id == document.id)
                .values(
                    status=DocumentStatus.PARSING,
                    attempts=1,
                    claimed_by=HOLDER_PREFIX + str(holder),
                    claimed_at=utcnow(),
                )
            )
        assert documents.ingest(document.id).status == expected
