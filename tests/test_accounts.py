"""Users, groups, collections, API tokens and login throttling on a real SQLite database."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from assistant.access import AccessService
from assistant.accounts import AccountService, InvalidCredentials, LoginThrottled, Principal
from assistant.audit import AuditLog
from assistant.cli import main
from assistant.db import make_engine, make_session_factory
from assistant.errors import ConfigurationError, InvalidInput, NotFound
from assistant.passwords import hash_password, verify_password
from assistant.settings import Settings, load_settings

PASSWORD = "correct horse battery staple"


class Clock:
    """An injectable clock, so the throttling window passes without sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, 0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def open_sessions(settings: Settings) -> sessionmaker:
    settings.ensure_dirs()
    return make_session_factory(make_engine(settings.sqlalchemy_url))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessions(settings: Settings) -> sessionmaker:
    return open_sessions(settings)


@pytest.fixture
def audit_log(sessions: sessionmaker, settings: Settings) -> AuditLog:
    return AuditLog(sessions, settings)


@pytest.fixture
def access(sessions: sessionmaker, settings: Settings, audit_log: AuditLog) -> AccessService:
    return AccessService(sessions, settings, audit_log)


@pytest.fixture
def accounts(
    sessions: sessionmaker,
    settings: Settings,
    clock: Clock,
    audit_log: AuditLog,
    access: AccessService,
) -> AccountService:
    return AccountService(sessions, settings, audit_log, clock=clock, memberships=access)


def all_cells(accounts: AccountService, table: str) -> str:
    with accounts.sessions() as session:
        rows = session.execute(text(f"SELECT * FROM {table}")).all()
    return " ".join(str(cell) for row in rows for cell in row)


# -- passwords ------------------------------------------------------------------------------
def test_hash_hides_the_password_and_verifies() -> None:
    stored = hash_password(PASSWORD)
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert PASSWORD not in stored and "horse" not in stored
    assert verify_password(PASSWORD, stored)
    assert not verify_password(PASSWORD + "!", stored)
    assert not verify_password(PASSWORD, "not$a$hash")
    assert hash_password(PASSWORD) != stored  # a fresh random salt each time


def test_passwords_are_stored_only_as_hashes(accounts: AccountService) -> None:
    accounts.add_user("alice", PASSWORD, "staff")
    accounts.set_password("alice", "another long passphrase")
    cells = all_cells(accounts, "users")
    assert "scrypt$" in cells
    assert PASSWORD not in cells and "another long passphrase" not in cells
    assert "password_hash" not in accounts.get_user("alice").to_dict()


def test_short_passwords_are_refused(accounts: AccountService) -> None:
    with pytest.raises(InvalidInput, match="at least 12 characters"):
        accounts.add_user("alice", "short", "staff")
    accounts.add_user("alice", PASSWORD, "staff")
    with pytest.raises(InvalidInput, match="at least 12 characters"):
        accounts.set_password("alice", "elevenchars")


# -- login ----------------------------------------------------------------------------------
def test_the_sixth_failed_attempt_in_a_minute_is_throttled(
    accounts: AccountService, settings: Settings, clock: Clock
) -> None:
    accounts.add_user("alice", PASSWORD, "staff")
    accounts.add_user("bob", PASSWORD, "staff")
    for _ in range(5):
        clock.advance(1)
        with pytest.raises(InvalidCredentials):
            accounts.authenticate("alice", "wrong password!", client="10.0.0.7")
    clock.advance(1)
    with pytest.raises(LoginThrottled) as throttled:
        accounts.authenticate("alice", PASSWORD, client="10.0.0.7")  # even the right password
    assert 0 < throttled.value.retry_after <= 60
    # Another process (its own engine) sees the same failures.
    other = AccountService(open_sessions(settings), settings, clock=clock)
    with pytest.raises(LoginThrottled):
        other.authenticate("alice", PASSWORD, client="10.0.0.7")
    # Other accounts, and the same account from another address, are not affected.
    assert accounts.authenticate("bob", PASSWORD, client="10.0.0.7").username == "bob"
    assert accounts.authenticate("alice", PASSWORD, client="10.0.0.8").username == "alice"
    clock.advance(throttled.value.retry_after)
    assert accounts.authenticate("alice", PASSWORD, client="10.0.0.7") == Principal(
        1, "alice", "staff"
    )


def test_unknown_names_are_throttled_and_worded_like_wrong_passwords(
    accounts: AccountService,
) -> None:
    accounts.add_user("alice", PASSWORD, "staff")
    with pytest.raises(InvalidCredentials) as wrong:
        accounts.authenticate("alice", "wrong password!")
    with pytest.raises(InvalidCredentials) as unknown:
        accounts.authenticate("mallory", PASSWORD)
    assert str(wrong.value) == str(unknown.value) == "invalid username or password"
    for _ in range(4):
        with pytest.raises(InvalidCredentials):
            accounts.authenticate("mallory", PASSWORD)
    with pytest.raises(LoginThrottled):
        accounts.authenticate("mallory", PASSWORD)


def test_disabled_users_cannot_log_in_or_read(
    accounts: AccountService, access: AccessService
) -> None:
    access.create_group("legal")
    access.create_collection("contracts", readers=["legal"])
    alice = accounts.add_user("alice", PASSWORD, "staff", groups=["legal"])
    token = accounts.issue_token("alice", "script")
    session_id = accounts.start_session(alice.user_id or 0)
    assert accounts.principal_for_session(session_id) == alice
    accounts.disable_user("alice")
    with pytest.raises(InvalidCredentials, match="invalid username or password"):
        accounts.authenticate("alice", PASSWORD)
    assert accounts.principal_for_token(token) is None
    assert access.readable_collections(alice) == []
    assert accounts.principal_for_session(session_id) is None
    accounts.enable_user("alice")
    assert accounts.authenticate("Alice ", PASSWORD) == alice
    assert access.readable_collections(alice) == ["contracts"]
    # Re-enabling does not bring the old session back (issue 14, item 4).
    assert accounts.principal_for_session(session_id) is None


# -- access ---------------------------------------------------------------------------------
def test_readable_collections_by_role_and_revocation_is_immediate(
    accounts: AccountService,
    access: AccessService,
) -> None:
    access.create_group("legal")
    access.create_group("hr")
    access.create_collection("contracts", readers=["legal"], description="Signed contracts")
    access.create_collection("policies", readers=["legal", "hr"])
    access.create_collection("payroll", readers=["hr"])
    staff = accounts.add_user("alice", PASSWORD, "staff", groups=["legal"])
    loner = accounts.add_user("carol", PASSWORD, "staff")
    admin = accounts.add_user("root", PASSWORD, "admin")
    auditor = accounts.add_user("audrey", PASSWORD, "auditor", groups=["legal"])

    assert access.readable_collections(staff) == ["contracts", "policies"]
    assert access.readable_collections(loner) == []
    assert access.readable_collections(admin) is None
    assert access.readable_collections(auditor) == []
    assert access.readable_collections(Principal.operator()) is None
    assert access.can_read(staff, "contracts") and not access.can_read(staff, "payroll")
    assert access.can_read(admin, "payroll")
    assert access.collection_names() == ["contracts", "default", "payroll", "policies"]

    access.set_readers("contracts", ["hr"])  # revoke legal
    assert access.readable_collections(staff) == ["policies"]
    access.remove_member("legal", "alice")
    assert access.readable_collections(staff) == []
    access.add_member("hr", "alice")
    assert access.readable_collections(staff) == ["contracts", "payroll", "policies"]
    access.delete_group("hr")
    assert access.readable_collections(staff) == []
    accounts.set_role("alice", "admin")  # the role is read from the database too
    assert access.readable_collections(staff) is None


def test_the_default_collection_always_exists(access: AccessService) -> None:
    assert access.collection_names() == ["default"]
    access.create_group("everyone")
    access.set_readers("default", ["everyone"])
    [default] = access.list_collections()
    assert (default.name, default.readers) == ("default", ("everyone",))
    with pytest.raises(InvalidInput, match="already exists"):
        access.create_collection("default")


def test_groups_list_their_members(accounts: AccountService, access: AccessService) -> None:
    access.create_group("legal")
    access.create_group("hr")
    accounts.add_user("bob", PASSWORD, "staff", groups=["legal", "hr"])
    accounts.add_user("alice", PASSWORD, "staff", groups=["legal"])
    access.add_member("legal", "alice")  # already a member: no change
    listed = {g.name: g.members for g in access.list_groups()}
    assert listed == {"hr": ("bob",), "legal": ("alice", "bob")}
    assert accounts.get_user("bob").to_dict()["groups"] == ["hr", "legal"]
    assert [u.groups for u in accounts.list_users()] == [("legal",), ("hr", "legal")]


def test_without_the_access_service_users_join_no_groups(
    settings: Settings, access: AccessService
) -> None:
    access.create_group("legal")
    alone = AccountService(access.sessions, settings)
    with pytest.raises(ConfigurationError, match="access service"):
        alone.add_user("bob", PASSWORD, "staff", groups=["legal"])
    alone.add_user("bob", PASSWORD, "staff")
    access.add_member("legal", "bob")
    assert alone.get_user("bob").groups == ()


# -- tokens ---------------------------------------------------------------------------------
def test_tokens_are_stored_as_hashes_and_can_be_revoked(
    accounts: AccountService, clock: Clock
) -> None:
    alice = accounts.add_user("alice", PASSWORD, "staff")
    token = accounts.issue_token("alice", "nightly export")
    assert token.startswith("ast_") and len(token) > 40
    cells = all_cells(accounts, "api_tokens")
    assert token not in cells and token[4:] not in cells
    assert hashlib.sha256(token.encode()).hexdigest() in cells

    assert accounts.principal_for_token(token) == alice
    [info] = accounts.list_tokens("alice")
    assert info.last_used_at == clock.now and info.to_dict()["name"] == "nightly export"
    assert accounts.principal_for_token(token + "x") is None
    assert accounts.principal_for_token("not a token") is None

    accounts.revoke_token(info.id)
    assert accounts.principal_for_token(token) is None
    assert accounts.list_tokens("alice")[0].revoked
    with pytest.raises(NotFound):
        accounts.revoke_token(999)


# -- the first admin ------------------------------------------------------------------------
@pytest.mark.sqlite("a second data directory stands for a second installation")
def test_first_admin_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "var", admin_password="env admin passphrase")
    accounts = AccountService(open_sessions(settings), settings)
    assert accounts.ensure_first_admin() is None
    assert accounts.authenticate("admin", "env admin passphrase").role == "admin"
    assert accounts.ensure_first_admin() is None
    assert [u.username for u in accounts.list_users()] == ["admin"]
    short = load_settings(data_dir=tmp_path / "other", admin_password="too short")
    with pytest.raises(ConfigurationError, match=r"ASSISTANT_ADMIN_PASSWORD: .* at least 12"):
        AccountService(open_sessions(short), short).ensure_first_admin()


def test_first_admin_with_a_generated_password_printed_once(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "var", admin_password=None)
    accounts = AccountService(open_sessions(settings), settings)
    password = accounts.ensure_first_admin()
    assert password and len(password) >= 12
    assert accounts.authenticate("admin", password).role == "admin"
    assert accounts.ensure_first_admin() is None


# -- validation and audit -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Alice", "", "-alice", "al ice", "a" * 65, "alice\n", "é"])
def test_bad_names_are_refused(accounts: AccountService, access: AccessService, name: str) -> None:
    with pytest.raises(InvalidInput, match="lower-case letters"):
        accounts.add_user(name, PASSWORD, "staff")
    with pytest.raises(InvalidInput, match="lower-case letters"):
        access.create_group(name)
    with pytest.raises(InvalidInput, match="lower-case letters"):
        access.create_collection(name)


def test_duplicates_unknown_names_and_roles(
    accounts: AccountService, access: AccessService
) -> None:
    access.create_group("legal")
    accounts.add_user("alice", PASSWORD, "staff")
    with pytest.raises(InvalidInput, match="user 'alice' already exists"):
        accounts.add_user("alice", PASSWORD, "staff")
    with pytest.raises(InvalidInput, match="group 'legal' already exists"):
        access.create_group("legal")
    with pytest.raises(InvalidInput, match="invalid role 'root'"):
        accounts.add_user("bob", PASSWORD, "root")
    with pytest.raises(NotFound, match="no such group: sales"):
        accounts.add_user("bob", PASSWORD, "staff", groups=["sales"])
    with pytest.raises(NotFound, match="no such user: bob"):  # nothing half-created
        accounts.disable_user("bob")
    with pytest.raises(NotFound, match="no such collection: nope"):
        access.set_readers("nope", ["legal"])
    with pytest.raises(NotFound, match="not a member"):
        access.remove_member("legal", "alice")


def test_every_change_is_audited_with_its_actor(
    accounts: AccountService, access: AccessService, audit_log: AuditLog
) -> None:
    admin = Principal(None, "ops", "operator")
    access.create_group("legal", actor=admin)
    accounts.add_user("alice", PASSWORD, "staff", actor=admin)
    access.add_member("legal", "alice", actor=admin)
    access.add_member("legal", "alice", actor=admin)  # a member already: nothing to record
    access.remove_member("legal", "alice", actor=admin)
    accounts.set_password("alice", "a new long passphrase", actor=admin)
    accounts.set_role("alice", "auditor", actor=admin)
    accounts.disable_user("alice", actor=admin)
    accounts.enable_user("alice", actor=admin)
    access.create_collection("contracts", ["legal"], actor=admin)
    access.set_readers("contracts", [], actor=admin)
    token = accounts.issue_token("alice", "ci", actor=admin)
    accounts.revoke_token(accounts.list_tokens("alice")[0].id, actor=admin)
    access.delete_group("legal", actor=admin)
    events = audit_log.search()[::-1]
    assert [e["action"] for e in events] == [
        "group.create", "user.add", "group.add_member", "group.remove_member",
        "user.set_password", "user.set_role", "user.disable", "user.enable",
        "collection.create", "collection.set_readers", "token.issue", "token.revoke",
        "group.delete",
    ]  # fmt: skip
    assert {(e["actor_id"], e["actor_role"]) for e in events} == {("cli:ops", "operator")}
    assert events[5]["details"] == {"username": "alice", "role": "auditor"}
    assert events[8]["details"] == {"collection": "contracts", "readers": ["legal"]}
    assert audit_log.verify().ok
    logged = repr(events)
    assert PASSWORD not in logged and "a new long passphrase" not in logged
    assert token not in logged and "scrypt$" not in logged


def test_the_operator_acts_as_the_os_user() -> None:
    operator = Principal.operator()
    assert operator.role == "operator" and operator.actor == f"cli:{operator.username}"
    assert Principal(3, "alice", "staff").actor == "user:alice"


def test_access_and_throttling_on_postgresql(
    tmp_path: Path, clock: Clock, postgres_url: str
) -> None:
    settings = load_settings(data_dir=tmp_path / "var", database_url=postgres_url)
    sessions = open_sessions(settings)
    access = AccessService(sessions, settings)
    accounts = AccountService(sessions, settings, clock=clock, memberships=access)
    access.create_group("legal")
    access.create_collection("contracts", readers=["legal"])
    alice = accounts.add_user("alice", PASSWORD, "staff", groups=["legal"])
    with pytest.raises(InvalidInput, match="already exists"):
        accounts.add_user("alice", PASSWORD, "staff")
    assert access.readable_collections(alice) == ["contracts"]
    access.delete_group("legal")
    assert access.readable_collections(alice) == []
    for _ in range(5):
        with pytest.raises(InvalidCredentials):
            accounts.authenticate("alice", "wrong password!")
    with pytest.raises(LoginThrottled):
        accounts.authenticate("alice", PASSWORD)
    assert checked_of_concurrent_guesses(accounts, "bob", 30) == 5
    token = accounts.issue_token("alice", "ci")
    assert accounts.principal_for_token(token) == alice
    sessions.kw["bind"].dispose()


# -- CLI ------------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., Any]:
    runner = CliRunner()
    env = {"ASSISTANT_DATA_DIR": str(tmp_path / "cli-var")}

    def invoke(*args: str, input: str | None = None) -> Any:
        return runner.invoke(main, list(args), input=input, env=env)

    return invoke


def test_cli_manages_users_groups_and_collections(cli: Callable[..., Any], tmp_path: Path) -> None:
    assert cli("groups", "create", "legal").exit_code == 0
    added = cli(
        "users", "add", "alice", "--role", "staff", "--group", "legal", "--password-stdin",
        input=PASSWORD + "\n",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    prompted = cli("users", "add", "bob", "--role", "auditor", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert prompted.exit_code == 0, prompted.output
    assert PASSWORD not in prompted.output

    [alice_json, _] = json.loads(cli("users", "list", "--json").output)
    assert alice_json["groups"] == ["legal"] and "password_hash" not in alice_json
    listed = cli("users", "list")
    assert "alice" in listed.output and "legal" in listed.output and "auditor" in listed.output
    assert cli("groups", "add-member", "legal", "bob").exit_code == 0
    assert "alice,bob" in cli("groups", "list").output
    assert cli("groups", "remove-member", "legal", "bob").exit_code == 0

    assert cli("collections", "create", "contracts", "--reader", "legal").exit_code == 0
    collections = cli("collections", "list").output
    assert "contracts" in collections and "default" in collections
    assert cli("collections", "set-readers", "default", "legal").exit_code == 0
    assert "readers: legal" in cli("collections", "list").output.split("default")[1]

    token = cli("users", "token", "alice", "--name", "script").output.strip()
    assert token.startswith("ast_")
    assert "script" in cli("users", "tokens", "alice").output
    changed = cli("users", "set-password", "alice", "--password-stdin", input="a new passphrase\n")
    assert changed.exit_code == 0, changed.output
    assert cli("users", "disable", "alice").exit_code == 0
    assert "disabled" in cli("users", "list").output

    # The same data directory, through the library.
    settings = load_settings(data_dir=tmp_path / "cli-var")
    accounts = AccountService(open_sessions(settings), settings)
    assert accounts.authenticate("bob", PASSWORD).role == "auditor"
    assert accounts.get_user("alice").disabled
    assert accounts.principal_for_token(token) is None
    accounts.enable_user("alice")
    assert accounts.principal_for_token(token) == accounts.authenticate("alice", "a new passphrase")


def test_cli_errors_are_one_clear_line(cli: Callable[..., Any]) -> None:
    short = cli("users", "add", "alice", "--role", "staff", "--password-stdin", input="short\n")
    assert short.exit_code == 1
    assert "at least 12 characters" in short.output and "Traceback" not in short.output
    missing = cli("users", "disable", "nobody")
    assert missing.exit_code == 1 and "Error: no such user: nobody" in missing.output
    bad_group = cli("groups", "create", "Bad Name")
    assert bad_group.exit_code == 1 and "lower-case letters" in bad_group.output
    assert cli("users", "add", "carol", "--role", "root", "--password-stdin").exit_code == 2
    mismatch = cli("users", "add", "carol", "--role", "staff", input=f"{PASSWORD}\nother\n")
    assert mismatch.exit_code != 0 and "carol" not in cli("users", "list").output


# -- issue 14: throttling that cannot be raced or used for lockout, sessions, passwords ------
def checked_of_concurrent_guesses(accounts: AccountService, username: str, count: int) -> int:
    """`count` wrong passwords for one account at once, from one address: how many were
    actually checked (InvalidCredentials) rather than throttled."""
    accounts.add_user(username, PASSWORD, "staff")
    outcomes: list[str] = []
    barrier = threading.Barrier(count)

    def guess() -> None:
        barrier.wait()
        try:
            accounts.authenticate(username, "wrong password!", client="192.0.2.9")
        except InvalidCredentials:
            outcomes.append("checked")
        except LoginThrottled:
            outcomes.append("throttled")

    threads = [threading.Thread(target=guess) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == count
    return outcomes.count("checked")


def test_concurrent_wrong_passwords_are_counted_atomically(accounts: AccountService) -> None:
    """Item 3: 7-22 of 30 concurrent guesses were checked against the limit of 5."""
    assert checked_of_concurrent_guesses(accounts, "alice", 30) == 5


def test_a_lockout_is_flagged_once_and_spares_the_user_elsewhere(
    accounts: AccountService, settings: Settings
) -> None:
    accounts.add_user("admin2", PASSWORD, "admin")
    locked: list[tuple[str, ...]] = []
    for _ in range(8):
        try:
            accounts.authenticate("admin2", "wrong password!", client="203.0.113.5")
        except LoginThrottled as exc:
            locked.append(exc.locked)
        except InvalidCredentials:
            pass
    assert locked == [("account:admin2@203.0.113.5",), (), ()]  # the lockout, once
    assert accounts.authenticate("admin2", PASSWORD, client="10.1.1.1").username == "admin2"


def test_spraying_one_guess_over_many_names_is_throttled(
    accounts: AccountService, settings: Settings
) -> None:
    limit = settings.accounts.max_failed_logins_per_client
    for n in range(limit):
        with pytest.raises(InvalidCredentials):
            accounts.authenticate(f"user{n}", "wrong password!", client="198.51.100.4")
    with pytest.raises(LoginThrottled) as throttled:
        accounts.authenticate("someone-else", "wrong password!", client="198.51.100.4")
    assert throttled.value.locked == ("client:198.51.100.4",)


def test_successful_sign_ins_do_not_use_up_the_limit(accounts: AccountService) -> None:
    accounts.add_user("alice", PASSWORD, "staff")
    for _ in range(30):
        accounts.authenticate("alice", PASSWORD, client="10.0.0.1")


@pytest.mark.parametrize(
    "password",
    [
        "aaaaaaaaaaaa",
        "password1234",
        "abcabcabcabc",
        "123456789012",
        "qwertyuiop12",
        "alice-alice-1",
    ],
)
def test_common_and_repetitive_passwords_are_refused(
    accounts: AccountService, password: str
) -> None:
    """Item 11: `aaaaaaaaaaaa` and `password1234` were accepted."""
    with pytest.raises(InvalidInput, match="too easy to guess"):
        accounts.add_user("alice", password, "staff")
    accounts.add_user("alice", PASSWORD, "staff")
    with pytest.raises(InvalidInput, match="too easy to guess"):
        accounts.set_password("alice", password)


def test_sessions_end_on_sign_out_password_role_change_and_after_their_lifetime(
    accounts: AccountService, settings: Settings, clock: Clock
) -> None:
    alice = accounts.add_user("alice", PASSWORD, "staff")
    user_id = alice.user_id or 0
    first, second = accounts.start_session(user_id), accounts.start_session(user_id)
    accounts.end_session(first)
    assert accounts.principal_for_session(first) is None
    assert accounts.principal_for_session(second) == alice
    accounts.set_password("alice", "a brand new passphrase")
    assert accounts.principal_for_session(second) is None
    third = accounts.start_session(user_id)
    accounts.set_role("alice", "auditor")
    assert accounts.principal_for_session(third) is None
    fourth = accounts.start_session(user_id)
    clock.advance(settings.accounts.session_hours * 3600 - 1)
    assert accounts.principal_for_session(fourth) is not None
    clock.advance(1)
    assert accounts.principal_for_session(fourth) is None  # absolute, however active
    assert "scrypt" not in all_cells(accounts, "user_sessions")
    assert fourth not in all_cells(accounts, "user_sessions")  # only its SHA-256 is kept


def test_the_last_enabled_admin_cannot_be_disabled_or_demoted(accounts: AccountService) -> None:
    """Item 18."""
    accounts.add_user("root", PASSWORD, "admin")
    with pytest.raises(InvalidInput, match="last enabled admin"):
        accounts.disable_user("root")
    with pytest.raises(InvalidInput, match="last enabled admin"):
        accounts.set_role("root", "staff")
    assert accounts.get_user("root").role == "admin" and not accounts.get_user("root").disabled
    accounts.add_user("deputy", PASSWORD, "admin")
    accounts.disable_user("root")
    with pytest.raises(InvalidInput, match="last enabled admin"):
        accounts.disable_user("deputy")
    accounts.enable_user("root")
    accounts.set_role("deputy", "staff")
    accounts.set_password("root", "another long passphrase")  # other changes still work
