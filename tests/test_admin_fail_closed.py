"""Admin changes fail closed: a change whose audit record cannot be written is not made.

For every kind of admin change, through the web admin page and through the CLI: with audit
inserts aborted by a trigger (SQLite or PostgreSQL), the request is refused with a reason
and the database is exactly as before (users, passwords, groups, members, collections,
readers, tokens, sessions, the audit log and its signed head); with the trigger gone, the
same request succeeds and leaves one record of it. Real SQLite or PostgreSQL, the Flask
test client and the CLI in-process."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from assistant.accounts import Principal
from assistant.cli import main
from assistant.services import Services
from assistant.settings import Settings
from tests.conftest import sign_in
from tests.test_hardening_access import block_audit_inserts, unblock_audit_inserts

PASSWORD = "a staff password 12"
NEW_PASSWORD = "another staff password 34"

# What the state is made of, as plain rows: anything a change could touch.
STATE = {
    "users": "SELECT username, role, disabled, password_hash FROM users",
    "members": "SELECT g.name, u.username FROM group_members m "
    "JOIN groups g ON g.id = m.group_id JOIN users u ON u.id = m.user_id",
    "collections": "SELECT name, description FROM collections",
    "readers": "SELECT c.name, g.name FROM collection_readers r "
    "JOIN collections c ON c.id = r.collection_id JOIN groups g ON g.id = r.group_id",
    "groups": "SELECT name FROM groups",
    "tokens": "SELECT user_id, name, token_sha256, revoked FROM api_tokens",
    "sessions": "SELECT user_id, id_sha256, expires_at FROM user_sessions",
    "audit": "SELECT seq, hash, signature FROM audit_records",
    "head": "SELECT seq, hash, checkpoint_seq FROM audit_head",
}


def state(services: Services) -> dict[str, Any]:
    with services.sessions() as session:
        rows = {name: sorted(map(tuple, session.execute(text(sql)))) for name, sql in STATE.items()}
    head_file = services.settings.head_file
    return {**rows, "head_file": head_file.read_text() if head_file.exists() else None}


# What each kind of change alters, besides the audit log.
EFFECTS = {
    "user.add": {"users", "members"},
    "user.disable": {"users", "sessions"},
    "user.enable": {"users"},
    "user.set_password": {"users", "sessions"},
    "user.set_role": {"users", "sessions"},
    "token.issue": {"tokens"},
    "token.revoke": {"tokens"},
    "group.create": {"groups"},
    "group.delete": {"groups", "members", "readers"},
    "group.add_member": {"members"},
    "group.remove_member": {"members"},
    "collection.create": {"collections", "readers"},
    "collection.set_readers": {"readers"},
}
AUDIT = {"audit", "head", "head_file"}


def assert_done_and_audited(services: Services, before: dict[str, Any], action: str) -> None:
    """The change took effect (and nothing else changed), with one record of it."""
    after = state(services)
    assert {name for name in after if after[name] != before[name]} == EFFECTS[action] | AUDIT
    last = max(before["audit"])[0]
    new = [r for r in services.audit_log.search(limit=100) if r["seq"] > last]
    assert [r["action"] for r in new] == [action]
    assert services.audit_log.verify().ok


@pytest.fixture
def people(fake_services: Services) -> Services:
    """Groups hr and legal; collection hr read by hr; alice (staff, in hr, with a token),
    carol (disabled), and the first admin."""
    operator, access, accounts = Principal.operator(), fake_services.access, fake_services.accounts
    for group in ("hr", "legal"):
        access.create_group(group, actor=operator)
    access.create_collection("hr", ["hr"], "leave and pay", actor=operator)
    accounts.add_user("alice", PASSWORD, "staff", ["hr"], actor=operator)
    accounts.add_user("carol", PASSWORD, "staff", actor=operator)
    accounts.disable_user("carol", actor=operator)
    accounts.issue_token("alice", "scripts", actor=operator)
    return fake_services


@pytest.fixture
def alice(app: Flask) -> FlaskClient:
    """A live session of alice's, which a refused disable or password change must keep."""
    client = app.test_client()
    sign_in(client, "alice", PASSWORD)
    return client


# -- the web admin page -----------------------------------------------------------------------
WEB_CHANGES = {
    "user.add": ("/admin/users", {"username": "dan", "password": PASSWORD, "role": "staff",
                                  "groups": ["hr"]}),
    "user.disable": ("/admin/users/alice/disable", {}),
    "user.enable": ("/admin/users/carol/enable", {}),
    "token.issue": ("/admin/users/alice/token", {"token_name": "laptop"}),
    "group.create": ("/admin/groups", {"group": "finance"}),
    "group.add_member": ("/admin/groups/legal/members", {"username": "alice"}),
    "group.remove_member": ("/admin/groups/hr/members/alice/remove", {}),
    "collection.create": ("/admin/collections", {"collection": "ledgers", "readers": ["legal"]}),
    "collection.set_readers": ("/admin/collections/hr/readers", {"readers": ["legal"]}),
}  # fmt: skip


@pytest.mark.parametrize("action", WEB_CHANGES)
def test_a_web_admin_change_is_not_made_when_it_cannot_be_audited(
    people: Services, client: FlaskClient, alice: FlaskClient, action: str
) -> None:
    """`client` is the first admin's."""
    path, form = WEB_CHANGES[action]
    block_audit_inserts(people)
    before = state(people)
    refused = client.post(path, data=form)
    assert refused.status_code == 503
    assert "the audit log cannot be written, so this was refused" in refused.text
    assert "ast_" not in refused.text  # no token shown for a token that does not exist
    assert state(people) == before
    assert alice.get("/api/documents").status_code == 200  # her session still works

    unblock_audit_inserts(people)
    done = client.post(path, data=form)
    assert done.status_code in (200, 303), done.text
    assert_done_and_audited(people, before, action)
    [record] = people.audit_log.search(action=action, limit=1)
    assert record["actor_id"] == "user:admin" and record["request_id"]


# -- the CLI ----------------------------------------------------------------------------------
CLI_CHANGES: dict[str, tuple[list[str], str | None]] = {
    "user.add": (["users", "add", "dan", "--role", "staff", "--group", "hr",
                  "--password-stdin"], PASSWORD + "\n"),
    "user.disable": (["users", "disable", "alice"], None),
    "user.enable": (["users", "enable", "carol"], None),
    "user.set_password": (["users", "set-password", "alice", "--password-stdin"],
                          NEW_PASSWORD + "\n"),
    "user.set_role": (["users", "set-role", "alice", "auditor"], None),
    "token.issue": (["users", "token", "alice", "--name", "laptop"], None),
    "token.revoke": (["users", "revoke-token", "TOKEN"], None),
    "group.create": (["groups", "create", "finance"], None),
    "group.delete": (["groups", "delete", "hr"], None),
    "group.add_member": (["groups", "add-member", "legal", "alice"], None),
    "group.remove_member": (["groups", "remove-member", "hr", "alice"], None),
    "collection.create": (["collections", "create", "ledgers", "--reader", "legal"], None),
    "collection.set_readers": (["collections", "set-readers", "hr", "legal"], None),
}  # fmt: skip


def run_cli(settings: Settings, action: str, token_id: int) -> Result:
    args, stdin = CLI_CHANGES[action]
    args = [str(token_id) if arg == "TOKEN" else arg for arg in args]
    env = {"ASSISTANT_DATA_DIR": str(settings.data_dir)}
    return CliRunner().invoke(main, args, input=stdin, env=env)


@pytest.mark.parametrize("action", CLI_CHANGES)
def test_a_cli_admin_change_is_not_made_when_it_cannot_be_audited(
    people: Services, alice: FlaskClient, action: str
) -> None:
    [token] = people.accounts.list_tokens("alice")
    block_audit_inserts(people)
    before = state(people)
    refused = run_cli(people.settings, action, token.id)
    assert refused.exit_code == 1
    assert refused.exception is None or isinstance(refused.exception, SystemExit)
    assert refused.output.startswith(f"Error: {action} was not done: ")
    assert "its audit record could not be written (audit inserts blocked" in refused.output
    assert "ast_" not in refused.output
    assert state(people) == before
    assert alice.get("/api/documents").status_code == 200

    unblock_audit_inserts(people)
    done = run_cli(people.settings, action, token.id)
    assert done.exit_code == 0, done.output
    assert_done_and_audited(people, before, action)
    [record] = people.audit_log.search(action=action, limit=1)
    assert record["actor_id"].startswith("cli:")


# -- a locked audit head ----------------------------------------------------------------------
def hold_audit_head(services: Services, release: threading.Event, held: threading.Event) -> None:
    """Another writer holding the audit head: PostgreSQL's row lock alone (the change's own
    rows stay free), SQLite's one write lock."""
    with services.sessions.begin() as session:
        session.execute(text("UPDATE audit_head SET seq = seq WHERE id = 1"))
        held.set()
        release.wait(30)


@pytest.mark.parametrize("through", ["web", "cli"])
def test_a_change_waiting_too_long_for_the_audit_head_is_not_made(
    people: Services, impatient: tuple[Flask, Services], through: str
) -> None:
    app, services = impatient
    admin = app.test_client()
    sign_in(admin)

    def create_finance() -> tuple[int, str]:
        if through == "web":
            response = admin.post("/admin/groups", data={"group": "finance"})
            return response.status_code, response.text
        env = {"ASSISTANT_DATA_DIR": str(services.settings.data_dir)}
        env["ASSISTANT_DATABASE_BUSY_SECONDS"] = "1"
        result = CliRunner().invoke(main, ["groups", "create", "finance"], env=env)
        return result.exit_code, result.output

    before = state(services)
    release, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_audit_head, args=(services, release, held))
    holder.start()
    try:
        assert held.wait(10)
        status, said = create_finance()
    finally:
        release.set()
        holder.join(30)
    # PostgreSQL: the group is inserted, then its record waits for the head and gives up.
    # SQLite: the group's insert already waits for the one write lock.
    assert status == (503 if through == "web" else 1)
    reasons = ("audit log cannot be written", "database is busy", "group.create was not done")
    assert any(reason in said for reason in reasons), said
    assert "Traceback" not in said
    assert state(services) == before
    assert create_finance()[0] == (303 if through == "web" else 0)
    assert_done_and_audited(services, before, "group.create")
