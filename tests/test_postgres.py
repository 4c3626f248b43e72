"""A postgresql:// URL works as the relational store (the machine's local PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from assistant.embedding import HashingEmbedder
from assistant.generation import ExtractiveFakeGenerator
from assistant.services import build_services
from assistant.settings import load_settings
from tests.conftest import ensure_postgres
from tests.documents import MARKDOWN

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway database on the machine's PostgreSQL, dropped after the test."""
    ensure_postgres()
    name = f"assistant_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


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
