"""Issue 14, sign-in, sessions and refusals through the web adapter (items 1, 2, 3, 4, 6, 9,
11, 12 and 18): each test failed before its fix. Real SQLite or PostgreSQL, Chroma and FTS5,
the fast deterministic embedder and generator, the Flask test client."""

from __future__ import annotations

import io
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from assistant.accounts import Principal
from assistant.cli import main
from assistant.refusals import RefusalLog
from assistant.services import Services
from assistant.settings import LoadSettings
from tests.conftest import ADMIN_PASSWORD, RecordingQueue, post_login
from tests.test_access import PASSWORD, answer_events, client_for, make_library
from web import create_app
from web.limits import load_control
from web.refusals import EXTENSION as REFUSALS

BIG = 300 * 1024 * 1024  # the body size of the reproduction


class Unreadable(io.RawIOBase):
    """A request body that fails the test if the server reads any of it."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def readinto(self, buffer: Any) -> int:
        raise AssertionError("the server read a body it should have refused unread")


@pytest.fixture
def library(fake_services: Services) -> dict[str, Any]:
    return make_library(fake_services)


@pytest.fixture
def app(fake_services: Services, library: dict[str, Any]) -> Flask:
    app = create_app(services=fake_services, task_sender=RecordingQueue())
    app.config["TESTING"] = True
    return app


def records(services: Services, action: str) -> list[dict[str, Any]]:
    return services.audit_log.search(action=action)


def flush_refusals(app: Flask) -> None:
    log: RefusalLog = app.extensions[REFUSALS]
    log.flush(everything=True)


# -- item 1: a session only once the sign-in is audited ---------------------------------------
def block_audit_inserts(services: Services, action: str | None = None) -> None:
    """Audit records can no longer be written: none, or none of one action."""
    when = f"WHEN (NEW.action = '{action}') " if action else ""
    with services.sessions.begin() as session:
        if session.get_bind().dialect.name == "sqlite":
            session.execute(
                text(
                    f"CREATE TRIGGER no_audit BEFORE INSERT ON audit_records {when}"
                    "BEGIN SELECT RAISE(ABORT, 'audit inserts blocked'); END"
                )
            )
            return
        session.execute(
            text(
                "CREATE FUNCTION no_audit() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'audit inserts blocked'; END $$ LANGUAGE plpgsql"
            )
        )
        session.execute(
            text(
                "CREATE TRIGGER no_audit BEFORE INSERT ON audit_records "
                f"FOR EACH ROW {when}EXECUTE FUNCTION no_audit()"
            )
        )


def unblock_audit_inserts(services: Services) -> None:
    """Undo `block_audit_inserts`."""
    with services.sessions.begin() as session:
        if session.get_bind().dialect.name == "sqlite":
            session.execute(text("DROP TRIGGER no_audit"))
            return
        session.execute(text("DROP TRIGGER no_audit ON audit_records"))
        session.execute(text("DROP FUNCTION no_audit()"))


def test_sign_in_issues_no_session_when_its_audit_record_fails(
    app: Flask, fake_services: Services
) -> None:
    client = app.test_client()
    block_audit_inserts(fake_services)
    response = post_login(client, username="alice", password=PASSWORD)
    assert response.status_code == 503
    assert "audit log cannot be written" in response.get_data(as_text=True)
    assert client.get("/api/documents").status_code == 401  # whatever cookie it holds
    with client.session_transaction() as session:
        assert "sid" not in session
    with fake_services.sessions() as session:
        assert session.execute(text("SELECT count(*) FROM user_sessions")).scalar() == 0


# -- item 2: bodies are bounded before they are read -----------------------------------------
@pytest.mark.parametrize(
    ("who", "path", "content_type"),
    [
        (None, "/login", "application/x-www-form-urlencoded"),
        (None, "/api/ask", "application/json"),
        ("alice", "/api/ask", "application/json"),
        ("alice", "/api/documents", "multipart/form-data; boundary=x"),
        ("admin", "/admin/groups", "application/x-www-form-urlencoded"),
    ],
)
def test_oversized_bodies_get_413_unread(
    app: Flask, who: str | None, path: str, content_type: str
) -> None:
    client = client_for(app, who) if who else app.test_client()
    response = client.post(
        path, input_stream=Unreadable(), content_length=BIG, content_type=content_type
    )
    assert response.status_code in (413, 403) if path == "/api/documents" else 413
    if response.status_code == 413:
        assert "larger than 1 MB" in response.get_data(as_text=True)


def test_admins_still_upload_a_batch_larger_than_the_form_limit(
    app: Flask, fake_services: Services
) -> None:
    client = client_for(app, "admin")
    files = [(io.BytesIO(f"{n} ".encode() * 300_000), f"part-{n}.txt") for n in range(2)]
    response = client.post("/api/documents", data={"files": files})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert len(response.json["accepted"]) == 2  # 2.4 MB in all, past the 1 MB of other routes


# -- items 3 and 6: throttling by address, lockouts audited -----------------------------------
def test_a_lockout_from_one_address_spares_the_user_at_another(
    app: Flask, fake_services: Services
) -> None:
    attacker = app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = "203.0.113.66"
    statuses = [
        post_login(attacker, username="admin", password="wrong password!").status_code
        for _ in range(7)
    ]
    assert statuses == [401] * 5 + [429] * 2
    assert post_login(attacker, username="admin", password=ADMIN_PASSWORD).status_code == 429
    real_admin = app.test_client()  # another address
    assert post_login(real_admin, username="admin", password=ADMIN_PASSWORD).status_code == 303
    [locked] = records(fake_services, "login.locked")
    assert locked["details"]["counter"] == "account:admin@203.0.113.66"
    assert locked["client"] == "203.0.113.66"
    flush_refusals(app)
    throttled = records(fake_services, "login.throttled")
    assert sum(r["details"].get("repeats", 1) for r in throttled) == 3  # 1 + 2 repeats


# -- item 4: sessions can be revoked ----------------------------------------------------------
def stolen_copy(app: Flask, client: FlaskClient) -> FlaskClient:
    """Another browser holding a copy of the client's session cookie."""
    cookie = client.get_cookie("assistant_session")
    assert cookie is not None
    thief = app.test_client()
    thief.set_cookie("assistant_session", cookie.value)
    return thief


def test_a_captured_cookie_dies_with_sign_out_password_change_and_disable(
    app: Flask, fake_services: Services
) -> None:
    accounts, operator = fake_services.accounts, Principal.operator()
    for change in ("logout", "password", "disable"):
        client = client_for(app, "alice")
        thief = stolen_copy(app, client)
        assert thief.get("/api/documents").status_code == 200
        if change == "logout":
            client.post("/logout")
        elif change == "password":
            accounts.set_password("alice", f"a new {change} for alice", actor=operator)
        else:
            accounts.disable_user("alice", actor=operator)
            accounts.enable_user("alice", actor=operator)
        assert thief.get("/api/documents").status_code == 401, change
        if change == "password":
            accounts.set_password("alice", PASSWORD, actor=operator)


def test_requests_do_not_extend_the_session_cookie(app: Flask) -> None:
    client = client_for(app, "alice")
    response = client.get("/api/documents")
    assert response.status_code == 200 and "Set-Cookie" not in response.headers


# -- item 6: denials, CSRF failures and repeated refusals are audited --------------------------
def test_denied_accesses_and_csrf_failures_are_audited(
    app: Flask, fake_services: Services, library: dict[str, Any]
) -> None:
    legal = library["legal"].id
    alice = client_for(app, "alice")
    assert alice.get(f"/api/documents/{legal}").status_code == 404
    assert alice.get("/admin").status_code == 403
    assert alice.get(f"/documents/{legal}/download").status_code == 404
    assert app.test_client().get("/api/documents").status_code == 401
    forged = alice.post("/api/ask", json={"question": "x?"}, headers={"X-CSRF-Token": "forged"})
    assert forged.status_code == 400
    denied = records(fake_services, "access.denied")
    seen = {(r["actor_id"], r["details"]["status"], r["details"]["path"]) for r in denied}
    assert seen == {
        ("user:alice", 404, f"/api/documents/{legal}"),
        ("user:alice", 403, "/admin"),
        ("user:alice", 404, f"/documents/{legal}/download"),
        ("user:anonymous", 401, "/api/documents"),
    }
    [csrf] = records(fake_services, "csrf.failed")
    assert csrf["actor_id"] == "user:alice" and csrf["details"]["path"] == "/api/ask"
    assert "WALRUS" not in str(denied)  # who and what, never the content


def test_a_flood_of_refusals_costs_two_records(
    fake_services: Services, library: dict[str, Any]
) -> None:
    """300 questions over the rate limit in a minute: two records, not 300."""
    load = LoadSettings(per_user_per_minute=1)
    app = create_app(fake_services.settings.model_copy(update={"load": load}), fake_services)
    alice = client_for(app, "alice")
    assert alice.post("/api/ask", json={"question": "PINEAPPLE?"}).status_code == 200
    for n in range(300):
        assert alice.post("/api/ask", json={"question": f"again {n}?"}).status_code == 429
    denied_once = alice.get(f"/api/documents/{library['legal'].id}")
    assert denied_once.status_code == 404
    flush_refusals(app)
    [summary, first] = records(fake_services, "question.refused")
    assert first["details"]["question"] == "again 0?"
    assert summary["details"]["repeats"] == 299 and len(summary["details"]["samples"]) == 5
    assert len(records(fake_services, "access.denied")) == 1


def test_rejected_uploads_are_audited(app: Flask, fake_services: Services) -> None:
    admin = client_for(app, "admin")
    first = admin.post("/api/documents", data={"files": [(io.BytesIO(b"Tea at four."), "a.txt")]})
    assert first.status_code == 201
    files = [
        (io.BytesIO(b""), "empty.txt"),
        (io.BytesIO(b"MZ\x90"), "tool.exe"),
        (io.BytesIO(b"Tea at four."), "copy.txt"),
    ]
    response = admin.post("/api/documents", data={"files": files})
    assert response.status_code == 400
    rejected = {
        r["details"]["filename"]: r["details"] for r in records(fake_services, "document.rejected")
    }
    assert set(rejected) == {"empty.txt", "tool.exe", "copy.txt"}
    assert "duplicate of a.txt" in rejected["copy.txt"]["error"]
    assert rejected["tool.exe"]["batch_id"] == response.json["batch_id"]


# -- item 9: small crashes -------------------------------------------------------------------
def test_deeply_nested_json_is_a_refused_question_not_a_crash(
    app: Flask, fake_services: Services
) -> None:
    body = "[" * 100_000 + "]" * 100_000
    alice = client_for(app, "alice")
    response = alice.post("/api/ask", data=body, content_type="application/json")
    assert response.status_code == 400 and "not a JSON object" in response.json["error"]
    [refused] = records(fake_services, "question.refused")
    assert refused["details"]["reason"] == "invalid"


def test_an_audit_number_out_of_range_is_404(app: Flask) -> None:
    response = client_for(app, "erin").get("/audit/99999999999999999999")
    assert response.status_code == 404


def test_a_lone_surrogate_in_a_question_is_refused_and_recorded(
    app: Flask, fake_services: Services
) -> None:
    alice = client_for(app, "alice")
    body = '{"question": "Where is \\ud800 the canteen?"}'
    response = alice.post("/api/ask", data=body, content_type="application/json")
    assert response.status_code == 400 and "not text" in response.json["error"]
    [refused] = records(fake_services, "question.refused")
    assert refused["details"]["question"] == "Where is \ufffd the canteen?"
    assert fake_services.audit_log.verify().ok


# -- item 11: the sign-in form's own CSRF check ----------------------------------------------
def test_a_cross_site_sign_in_post_is_refused(app: Flask, fake_services: Services) -> None:
    client = app.test_client()
    form = {"username": "alice", "password": PASSWORD}
    response = client.post("/login", data=form, headers={"Origin": "https://evil.example"})
    assert response.status_code == 400 and "did not come from this site" in response.text
    assert client.get("/api/documents").status_code == 401
    [refused] = records(fake_services, "csrf.failed")
    assert refused["details"]["path"] == "/login"
    assert post_login(client, **form).status_code == 303  # the real form works


# -- item 12: a refusal does not use up the quota ---------------------------------------------
def test_questions_refused_for_capacity_do_not_count_against_the_user(
    fake_services: Services, library: dict[str, Any]
) -> None:
    load = LoadSettings(max_concurrent_answers=1, max_waiting_answers=0, per_user_per_minute=2)
    settings = fake_services.settings.model_copy(update={"load": load})
    app = create_app(settings, fake_services, RecordingQueue())
    alice = client_for(app, "alice")
    with app.app_context():
        lease = load_control().slots.acquire()  # the only slot is busy
    try:
        for _ in range(3):
            assert alice.post("/api/ask", json={"question": "PINEAPPLE?"}).status_code == 503
    finally:
        lease.release()
    for _ in range(2):
        response = alice.post("/api/ask", json={"question": "How many PINEAPPLE days?"})
        assert response.status_code == 200 and "answer" in answer_events(response)
    assert alice.post("/api/ask", json={"question": "A third?"}).status_code == 429


# -- item 18: the last admin ------------------------------------------------------------------
def test_the_last_admin_cannot_disable_themselves_anywhere(
    app: Flask, fake_services: Services, settings: Any
) -> None:
    admin = client_for(app, "admin")
    page = admin.post("/admin/users/admin/disable", follow_redirects=True).get_data(as_text=True)
    assert "cannot disable your own account" in page
    env = {"ASSISTANT_DATA_DIR": str(settings.resolved_data_dir)}
    cli = CliRunner().invoke(main, ["users", "disable", "admin"], env=env)
    assert cli.exit_code == 1 and "last enabled admin" in cli.output
    demote = CliRunner().invoke(main, ["users", "set-role", "admin", "staff"], env=env)
    assert demote.exit_code == 1 and "last enabled admin" in demote.output
    assert fake_services.accounts.get_user("admin").role == "admin"
    assert admin.get("/admin").status_code == 200  # still signed in, still an admin
