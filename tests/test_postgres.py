"""A postgresql:// URL works as the relational store (the machine's local PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from assistant.answering.generation import ExtractiveFakeGenerator
from assistant.embedding import HashingEmbedder
from assistant.services import build_services
from assistant.settings import load_settings
from tests.documents import MARKDOWN


def test_documents_and_chunks_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    settings = load_settings(data_dir=tmp_path / "var", database_url=postgres_url)
    services = build_services(
        settings, embedder=HashingEmbedder(), generator=ExtractiveFakeGenerator()
    )
    document = services.documents.add("compliance.md", MARKDOWN.encode())
    indexed = services.documents.ingest(document.id)
    assert indexed.status == "indexed"
    again = services.documents.ingest(document.id, force=True)
    assert again.chunk_count == indexed.chunk_count
    answer = services.answerer.ask("Who chairs the compliance review?")
    assert answer.citations[0].passage.document_id == document.id
