"""Upload batches through the web adapter: .zip archives unpacked safely, duplicates,
versions, the batch page and its API, retries and re-ingests. Real SQLite, Chroma and FTS5;
the fast deterministic embedder and generator; the queue records ids and the test ingests
them as the worker would."""

from __future__ import annotations

import io
import stat
import zipfile
from typing import Any

from flask.testing import FlaskClient

from assistant.services import Services
from tests.conftest import RecordingQueue, sign_in
from tests.test_web import GUIDE, ingest_sent, upload
from web import create_app


def archive(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in entries.items():
            zipped.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zipped.writestr(info, target)
    return buffer.getvalue()


def batch(client: FlaskClient, batch_id: str) -> dict[str, Any]:
    response = client.get(f"/api/batches/{batch_id}")
    assert response.status_code == 200
    return response.get_json()


def test_a_zip_is_unpacked_safely_into_one_batch(
    client: FlaskClient, fake_services: Services, queue: RecordingQueue, tmp_path: Any
) -> None:
    zipped = archive(
        {
            "guide.md": GUIDE,
            "policies/hr/leave.txt": b"New staff get 25 days of annual leave.",
            "tool.exe": b"MZ\x90\x00",
            ".hidden.md": b"# Hidden\n",
        }
    )
    response = upload(client, ("bundle.zip", zipped), ("notes.txt", b"The canteen opens at 7."))
    assert response.status_code == 207
    body = response.get_json()
    accepted = sorted(d["filename"] for d in body["accepted"])
    assert accepted == ["guide.md", "leave.txt", "notes.txt"]
    errors = " | ".join(r["error"] for r in body["rejected"])
    assert "tool.exe: unsupported file type" in errors
    linked = upload(client, ("linked.zip", archive({"a.md": GUIDE}, {"link.md": "/etc/passwd"})))
    assert linked.status_code == 400
    assert "symbolic link" in linked.get_json()["rejected"][0]["error"]
    # Stored under internal ids: no name from the archive is ever a path.
    assert not list(tmp_path.rglob("leave.txt")) and not list(tmp_path.rglob("policies"))
    escape = archive({"../../../escape.md": b"# Escape\n\nOut of the data directory.\n"})
    refused = upload(client, ("escape.zip", escape))
    assert (
        refused.status_code == 400 and "unsafe path" in refused.get_json()["rejected"][0]["error"]
    )
    assert not list(tmp_path.parent.rglob("escape.md"))
    progress = batch(client, body["batch_id"])
    assert (progress["total"], progress["finished"], progress["eta_seconds"]) == (3, 0, None)
    ingest_sent(fake_services, queue)
    progress = batch(client, body["batch_id"])
    assert progress["counts"]["indexed"] == 3 and progress["done"] == 1.0
    report = progress["documents"][0]["report"]
    assert report["characters"] > 0 and report["warnings"] == []
    page = client.get(f"/batches/{body['batch_id']}").get_data(as_text=True)
    assert "3 of 3 done" in page and "leave.txt" in page


def test_a_zip_bomb_is_refused_before_decompressing(client: FlaskClient) -> None:
    bomb = archive({"zeros.txt": b"0" * (20 * 1024 * 1024)})
    response = upload(client, ("bomb.zip", bomb))
    assert response.status_code == 400
    [rejected] = response.get_json()["rejected"]
    assert rejected["filename"] == "bomb.zip"
    assert "compress" in rejected["error"] or "ratio" in rejected["error"]


def test_duplicates_and_versions(
    client: FlaskClient, fake_services: Services, queue: RecordingQueue
) -> None:
    [first] = upload(client, ("guide.md", GUIDE)).get_json()["accepted"]
    again = upload(client, ("copy-of-guide.md", GUIDE))
    assert again.status_code == 400
    assert "duplicate of guide.md" in again.get_json()["rejected"][0]["error"]
    newer = GUIDE.replace(b"140 euros", b"160 euros")
    [second] = upload(client, ("guide.md", newer)).get_json()["accepted"]
    assert (second["version"], second["id"] != first["id"]) == (2, True)
    ingest_sent(fake_services, queue)
    listed = client.get("/api/documents").get_json()["documents"]
    assert [d["id"] for d in listed] == [second["id"]]
    old = client.get(f"/api/documents/{first['id']}").get_json()
    assert old["current"] is False
    assert client.get(f"/documents/{first['id']}/download").data == GUIDE


def test_retry_and_reingest(
    client: FlaskClient, fake_services: Services, queue: RecordingQueue
) -> None:
    body = upload(client, ("broken.pdf", b"%PDF-1.4 garbage"), ("guide.md", GUIDE)).get_json()
    ingest_sent(fake_services, queue)
    progress = batch(client, body["batch_id"])
    assert progress["counts"] == {**progress["counts"], "failed": 1, "indexed": 1}
    sent = len(queue.sent)
    response = client.post(f"/batches/{body['batch_id']}/retry")
    assert response.status_code == 303
    assert len(queue.sent) == sent + 1  # only the failed file went back to the workers
    guide = next(d for d in body["accepted"] if d["filename"] == "guide.md")
    response = client.post(f"/api/documents/{guide['id']}/reingest")
    assert response.status_code == 202 and response.get_json()["status"] == "queued"
    busy = client.post(f"/api/documents/{guide['id']}/reingest")
    assert busy.status_code == 400 and "still being processed" in busy.get_json()["error"]
    actions = [r["action"] for r in fake_services.audit_log.search(action="document.reingest")]
    assert len(actions) == 2


def test_unknown_batch_is_404(client: FlaskClient) -> None:
    assert client.get("/api/batches/nope").status_code == 404
    assert client.get("/batches/nope").status_code == 404


def test_older_versions_are_for_admins_only(
    client: FlaskClient, fake_services: Services, queue: RecordingQueue
) -> None:
    [first] = upload(client, ("guide.md", GUIDE)).get_json()["accepted"]
    upload(client, ("guide.md", GUIDE.replace(b"140", b"160")))
    ingest_sent(fake_services, queue)
    listed = client.get("/api/documents?versions=1").get_json()["documents"]
    assert sorted(d["version"] for d in listed) == [1, 2]
    assert "superseded" in client.get("/documents?versions=1").get_data(as_text=True)
    fake_services.access.create_group("all")
    fake_services.access.set_readers("default", ["all"])
    fake_services.accounts.add_user("sam", "staff password 123", "staff", ["all"])
    staff = create_app(services=fake_services, task_sender=queue).test_client()
    sign_in(staff, "sam", "staff password 123")
    staff_list = staff.get("/api/documents?versions=1").get_json()["documents"]
    assert [d["version"] for d in staff_list] == [2]
    assert staff.get(f"/documents/{first['id']}/download").status_code == 404
    assert client.get(f"/documents/{first['id']}/download").status_code == 200
