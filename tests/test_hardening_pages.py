"""Issue 14, documents, the audit pages and the database (items 7, 8, 10, 13, 14, 15): each
test failed before its fix. Real SQLite or PostgreSQL, Chroma and FTS5, the fast
deterministic embedder and generator, the Flask test client."""

from __future__ import annotations

import csv
import io
import os
import re
import sqlite3
import struct
import threading
import time
import zipfile
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from assistant.accounts import Principal
from assistant.services import Services
from tests.conftest import RecordingQueue, post_login, sign_in
from tests.test_access import PASSWORD, client_for, make_library
from web import create_app


@pytest.fixture
def library(fake_services: Services) -> dict[str, Any]:
    return make_library(fake_services)


@pytest.fixture
def app(fake_services: Services, library: dict[str, Any], queue: RecordingQueue) -> Flask:
    app = create_app(services=fake_services, task_sender=queue)
    app.config["TESTING"] = True
    return app


# -- item 7: a zip entry that lies about its size ---------------------------------------------
def lying_zip() -> bytes:
    """good.md, then liar.txt (200 KB deflated; its headers say 100 bytes), then last.md."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("good.md", "# Good\n\nThe first good file.\n")
        archive.writestr("liar.txt", os.urandom(200_000))
        archive.writestr("last.md", "# Last\n\nThe last good file.\n")
    data = bytearray(buffer.getvalue())
    # Set the uncompressed size to 100 in liar.txt's local header and central directory entry.
    local = data.index(b"liar.txt") - 30  # the local header comes first
    struct.pack_into("<I", data, local + 22, 100)
    central = data.rindex(b"PK\x01\x02", 0, data.rindex(b"liar.txt"))
    struct.pack_into("<I", data, central + 24, 100)
    return bytes(data)


def test_a_zip_entry_that_lies_about_its_size_is_reported_and_the_others_kept(
    app: Flask, fake_services: Services, queue: RecordingQueue
) -> None:
    admin = client_for(app, "admin")
    files = {"files": [(io.BytesIO(lying_zip()), "batch.zip")]}
    response = admin.post("/api/documents", data=files)
    assert response.status_code == 207, response.get_data(as_text=True)
    accepted = sorted(d["filename"] for d in response.json["accepted"])
    assert accepted == ["good.md", "last.md"]
    [rejected] = response.json["rejected"]
    assert rejected["filename"] == "batch.zip/liar.txt" and "damaged" in rejected["error"]
    assert len(queue.sent) == 2


# -- item 8: a locked database ----------------------------------------------------------------
def hold_write_lock(services: Services, release: threading.Event, held: threading.Event) -> None:
    """Another process's long write transaction, from its own connection."""
    engine = services.sessions.kw["bind"]
    if engine.dialect.name == "sqlite":
        connection = sqlite3.connect(engine.url.database, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(30)
        connection.execute("ROLLBACK")
        connection.close()
        return
    with engine.connect() as connection, connection.begin():
        tables = "audit_head, login_counters, groups"
        connection.execute(text(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"))
        held.set()
        release.wait(30)


def test_a_locked_database_gives_503_at_once_and_readyz_says_so(
    impatient: tuple[Flask, Services],
) -> None:
    app, services = impatient
    admin = app.test_client()
    sign_in(admin)
    assert app.test_client().get("/readyz").status_code == 200
    release, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(services, release, held))
    holder.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        signing_in = post_login(app.test_client(), username="admin", password="whatever it is")
        assert signing_in.status_code == 503
        assert "database is busy" in signing_in.text or "audit log" in signing_in.text
        assert signing_in.headers.get("Retry-After") or "audit log" in signing_in.text
        creating = admin.post("/admin/groups", data={"group": "locked-out"})
        assert creating.status_code == 503
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 503
        assert ready.json["database"] == "error: the database cannot be written (locked)"
        assert time.monotonic() - started < 10  # three requests, each failing after about 1 s
    finally:
        release.set()
        holder.join(30)
    assert app.test_client().get("/readyz").status_code == 200
    assert "locked-out" not in [g.name for g in services.access.list_groups()]


def ask(client: FlaskClient, question: str) -> str:
    """The whole answer stream (its audit record is written while it is read)."""
    return client.post("/api/ask", json={"question": question}).get_data(as_text=True)


# -- item 10: auditors see retrieved passages only ---------------------------------------------
def long_document() -> str:
    words = ["ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL", "INDIA"]
    body = " ".join(f"Filler sentence {n} about nothing in particular." for n in range(8))
    return "\n\n".join(f"## {w}\n\nThe {w} code word opens this part. {body}" for w in words)


def test_an_auditor_sees_the_retrieved_passage_and_nothing_else(
    app: Flask, fake_services: Services
) -> None:
    added = fake_services.documents.add("codes.md", long_document().encode(), "hr")
    document = fake_services.documents.ingest(added.id)
    chunks = fake_services.documents.chunks(document.id)
    assert len(chunks) >= 5
    ask(client_for(app, "alice"), "What opens the ALPHA part?")
    [record] = fake_services.audit_log.search(action="question", text="ALPHA part")
    retrieved = {p["chunk_id"] for p in record["details"]["retrieved"]}
    shown = next(c for c in chunks if c.id in retrieved)
    hidden = [c for c in chunks if c.id not in retrieved]
    assert hidden
    auditor = client_for(app, "erin")
    page = auditor.get(f"/documents/{document.id}/source?chunk={shown.id}")
    assert page.status_code == 200
    [mark] = re.findall(r'<mark id="cited">(.*?)</mark>', page.text, flags=re.S)
    assert mark == shown.text.replace("'", "&#39;").replace('"', "&#34;")
    source_text = re.search(r'<div class="source-text">(.*?)</div>', page.text, flags=re.S)
    assert source_text is not None and source_text.group(1) == f'<mark id="cited">{mark}</mark>'
    for chunk in hidden:  # never retrieved: not shown, alone or around the other
        assert auditor.get(f"/documents/{document.id}/source?chunk={chunk.id}").status_code == 404
    assert auditor.get(f"/documents/{document.id}/source").status_code == 404
    # Asking a question that is only a passage's id does not make it retrieved.
    ask(client_for(app, "erin"), hidden[0].id)
    assert auditor.get(f"/documents/{document.id}/source?chunk={hidden[0].id}").status_code == 404


# -- item 13: the audit page's filters, CSV columns, names and summaries ----------------------
def test_the_audit_export_follows_the_filters_on_screen(
    app: Flask, fake_services: Services, library: dict[str, Any]
) -> None:
    operator = Principal.operator()
    fake_services.accounts.add_user("sam", PASSWORD, "staff", ["hr"], actor=operator)
    sam, alice = client_for(app, "sam"), client_for(app, "alice")
    ask(sam, "How many PINEAPPLE days does sam get?")
    ask(alice, "How many PINEAPPLE days does alice get?")
    admin = client_for(app, "admin")
    admin.post("/admin/groups", data={"group": "board"})
    admin.post("/admin/collections", data={"collection": "board-only", "readers": ["board"]})
    sam.get(f"/documents/{library['hr'].id}/source")
    auditor = client_for(app, "erin")
    listing = auditor.get("/audit?actor=sam&action=question").text
    assert "does sam get" in listing and "does alice get" not in listing
    [export] = re.findall(r'id="export-csv" href="([^"]+)"', listing)
    exported = auditor.get(export.replace("&amp;", "&"))
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["question"] for r in rows] == ["How many PINEAPPLE days does sam get?"]
    assert rows[0]["actor_id"] == "user:sam" and rows[0]["answer"]  # its own column
    assert rows[0]["documents"] == "leave.md"
    # Summaries say what each record is about.
    page = auditor.get("/audit").text
    summaries: dict[str, str] = {}  # the newest of each action
    for action, summary in re.findall(r"<td>([\w.]+)</td>\s*<td class=\"summary\">([^<]*)", page):
        summaries.setdefault(action, summary)
    assert summaries["document.view"] == "leave.md"
    assert summaries["group.create"] == "board"
    assert summaries["collection.create"] == "board-only"
    # A question's record names the documents of its passages.
    seq = auditor.get("/audit?actor=sam&action=question").text
    [number] = re.findall(r'href="/audit/(\d+)"', seq)
    assert '<td class="filename">leave.md</td>' in auditor.get(f"/audit/{number}").text


# -- item 14: a file that failed its checks --------------------------------------------------
def test_a_file_that_failed_its_checks_goes_to_admins_only_as_an_attachment(
    app: Flask, fake_services: Services, queue: RecordingQueue
) -> None:
    fake_services.access.set_readers("default", ["hr"], actor=Principal.operator())
    elf = b"\x7fELF\x02\x01\x01" + b"\x00" * 200
    added = fake_services.documents.add("invoice-scan.pdf", elf, "default")
    assert fake_services.documents.ingest(added.id).status == "failed"
    staff = client_for(app, "alice")
    assert staff.get(f"/documents/{added.id}/download").status_code == 404
    listed = staff.get("/documents").text
    assert f"/documents/{added.id}/download" not in listed
    admin = client_for(app, "admin").get(f"/documents/{added.id}/download")
    assert admin.status_code == 200 and admin.data == elf
    assert admin.headers["Content-Disposition"].startswith("attachment;")
    assert admin.mimetype == "application/octet-stream"
    assert admin.headers["X-Content-Type-Options"] == "nosniff"


# -- item 15: the default collection ---------------------------------------------------------
def test_uploads_default_to_default_and_unread_collections_are_flagged(
    app: Flask, fake_services: Services
) -> None:
    fake_services.access.create_collection("board-only", actor=Principal.operator())
    admin = client_for(app, "admin")
    form = admin.get("/documents").text
    options = re.findall(r'<option value="([^"]+)"\s*(selected)?', form)
    assert [name for name, selected in options if selected] == ["default"]
    assert "board-only (no reader group: staff cannot see it)" in form
    warning = admin.get("/admin").text
    assert 'id="unread-collections"' in warning
    assert "No group may read board-only, default" in warning
    uploaded = admin.post(
        "/api/documents", data={"files": [(io.BytesIO(b"Minutes."), "minutes.txt")]}
    )
    assert uploaded.status_code == 201
    assert "no group may read the collection 'default'" in uploaded.json["warning"]
