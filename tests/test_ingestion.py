"""Ingestion with the real embedding model into a real Chroma and SQLite in a temp dir."""

from __future__ import annotations

import pytest

from assistant.db import DocumentStatus
from assistant.errors import FileTooLarge, InvalidInput, NotFound, UnsupportedFileType
from assistant.services import Services, build_services
from assistant.settings import Settings, load_settings

pytestmark = pytest.mark.slow


def test_ingest_indexes_every_format(services: Services, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        document = services.documents.ingest(services.documents.add(name, data).id)
        assert document.status == DocumentStatus.INDEXED, (name, document.error)
        assert document.chunk_count >= 1
    assert services.store.count() == sum(d.chunk_count for d in services.documents.list())


def test_ingesting_twice_changes_nothing(services: Services, files: dict[str, bytes]) -> None:
    document = services.documents.add("lighthouse.pdf", files["lighthouse.pdf"])
    first = services.documents.ingest(document.id)
    chunk_ids = [c.id for c in services.documents.chunks(document.id)]
    vectors = services.store.count()
    # A redelivered task, and a forced re-ingest: same chunks, same ids, same vectors.
    services.documents.ingest(document.id)
    again = services.documents.ingest(document.id, force=True)
    assert again.status == DocumentStatus.INDEXED
    assert again.chunk_count == first.chunk_count
    assert [c.id for c in services.documents.chunks(document.id)] == chunk_ids
    assert chunk_ids == [f"{document.id}:1:{n}" for n in range(first.chunk_count)]
    assert services.store.count() == vectors


def test_deleted_document_is_no_longer_retrievable(
    services: Services, files: dict[str, bytes]
) -> None:
    document = services.documents.add("compliance.md", files["compliance.md"])
    services.documents.ingest(document.id)
    assert services.retriever.search("Who chairs the compliance review?", 3)
    services.documents.delete(document.id)
    assert services.retriever.search("Who chairs the compliance review?", 3) == []
    assert services.store.count() == 0
    assert not services.documents.original_path(document.id).exists()
    with pytest.raises(NotFound):
        services.documents.get(document.id)


def test_a_bad_file_fails_with_a_reason_and_the_others_index(
    services: Services, files: dict[str, bytes]
) -> None:
    bad = services.documents.add("broken.pdf", b"%PDF-1.4 not a pdf at all")
    good = services.documents.add("parking.html", files["parking.html"])
    latin = services.documents.add("notes.txt", "Résumé".encode("latin-1"))
    results = {d.id: d for d in services.documents.ingest_all([bad.id, good.id, latin.id])}
    assert results[bad.id].status == DocumentStatus.FAILED
    assert "PDF is damaged" in (results[bad.id].error or "")
    assert results[latin.id].status == DocumentStatus.FAILED
    assert "UTF-8" in (results[latin.id].error or "")
    assert results[good.id].status == DocumentStatus.INDEXED


def test_upload_is_rejected_before_storage(settings: Settings, fake_services: Services) -> None:
    documents = fake_services.documents
    with pytest.raises(UnsupportedFileType):
        documents.add("payload.exe", b"MZ")
    with pytest.raises(InvalidInput, match="empty"):
        documents.add("empty.txt", b"")
    small = build_services(
        load_settings(data_dir=settings.data_dir, limits={"max_upload_bytes": 10})
    )
    with pytest.raises(FileTooLarge, match="limit is 10"):
        small.documents.add("big.txt", b"x" * 11)
    assert documents.list() == []
    assert list(settings.originals_dir.iterdir()) == []


def test_uploads_are_stored_under_internal_ids(fake_services: Services) -> None:
    document = fake_services.documents.add("../../etc/passwd.txt", b"root:x:0:0")
    assert document.filename == "passwd.txt"
    path = fake_services.documents.original_path(document.id)
    assert path.parent == fake_services.settings.originals_dir
    assert path.name == document.id


def test_unknown_document_id(fake_services: Services) -> None:
    with pytest.raises(NotFound):
        fake_services.documents.ingest("no-such-id")
    with pytest.raises(NotFound):
        fake_services.documents.get("no-such-id")


def test_a_group_of_queued_documents_gets_each_chunk_its_own_vector(
    services: Services, files: dict[str, bytes]
) -> None:
    ids = [services.documents.add(name, data).id for name, data in files.items()]
    services.documents.ingest(ids[0])  # takes the other queued documents with it
    documents = services.documents.list()
    assert {d.status for d in documents} == {DocumentStatus.INDEXED}
    chunks = [c for document_id in ids for c in services.documents.chunks(document_id)]
    assert len(chunks) == sum(d.chunk_count for d in documents) == services.store.count()
    stored = services.store.embeddings([c.id for c in chunks])
    for chunk in chunks:
        [alone] = services.embedder.embed([chunk.index_text])  # header + text, as indexed
        # int8 vectors depend slightly on their batch companions (docs/benchmarks.md).
        assert sum(a * b for a, b in zip(stored[chunk.id], alone, strict=True)) > 0.98
