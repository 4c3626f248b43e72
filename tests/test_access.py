"""Access control through the web adapter: an ACL matrix over every content path, sign-in,
CSRF, throttling, roles, API tokens, the auditor pages and fail-closed auditing. Real SQLite,
Chroma and FTS5; the fast deterministic embedder and generator (the filter under test is
applied inside both searches, whatever the model)."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from assistant.accounts import Principal
from assistant.services import Services
from tests.conftest import RecordingQueue, post_login, sign_in
from web import create_app

PASSWORD = "a staff password 12"
# Each document holds a secret word no other document has; a leak shows up as that word.
DOCUMENTS = {
    "hr": ("leave.md", "# Leave\n\nStaff get PINEAPPLE days of annual leave after probation.\n"),
    "legal": ("contracts.md", "# Contracts\n\nEvery contract is signed with the WALRUS seal.\n"),
    "default": ("canteen.md", "# Canteen\n\nThe canteen serves MANGOSTEEN soup on Fridays.\n"),
}
SECRETS = {"hr": "PINEAPPLE", "legal": "WALRUS", "default": "MANGOSTEEN"}
# Who may read what: staff by group, admin everything, the auditor nothing via these paths.
USERS = {
    "alice": ("staff", ["hr"], {"hr"}),
    "bob": ("staff", ["legal"], {"legal"}),
    "carol": ("staff", ["hr", "legal"], {"hr", "legal"}),
    "dave": ("staff", [], set()),
    "erin": ("auditor", [], set()),
    "admin": ("admin", [], {"hr", "legal", "default"}),
}


@pytest.fixture
def library(fake_services: Services) -> dict[str, Any]:
    return make_library(fake_services)


def make_library(fake_services: Services) -> dict[str, Any]:
    """Groups, collections, users and one indexed document per collection."""
    access, operator = fake_services.access, Principal.operator()
    for group in ("hr", "legal"):
        access.create_group(group, actor=operator)
        access.create_collection(group, readers=[group], actor=operator)
    for username, (role, groups, _) in USERS.items():
        if username != "admin":
            fake_services.accounts.add_user(username, PASSWORD, role, groups, actor=operator)
    documents = {}
    for collection, (name, body) in DOCUMENTS.items():
        added = fake_services.documents.add(name, body.encode(), collection)
        documents[collection] = fake_services.documents.ingest(added.id)
    return documents


@pytest.fixture
def app(fake_services: Services, library: dict[str, Any]) -> Flask:
    app = create_app(services=fake_services, task_sender=RecordingQueue())
    app.config["TESTING"] = True
    return app


def client_for(app: Flask, username: str) -> FlaskClient:
    client = app.test_client()
    if username == "admin":
        sign_in(client)
    else:
        sign_in(client, username, PASSWORD)
    return client


def answer_events(response: Any) -> dict[str, Any]:
    events = {}
    for block in response.get_data(as_text=True).split("\n\n"):
        if block.strip():
            lines = dict(line.split(": ", 1) for line in block.splitlines())
            events[lines["event"]] = json.loads(lines["data"])
    return events


# -- the ACL matrix -------------------------------------------------------------------------
@pytest.mark.parametrize("username", list(USERS))
def test_every_content_path_shows_only_readable_collections(
    app: Flask, library: dict[str, Any], username: str
) -> None:
    client = client_for(app, username)
    readable = USERS[username][2]
    forbidden = set(DOCUMENTS) - readable
    leaks = [SECRETS[c] for c in forbidden]

    def no_leak(body: str, where: str) -> None:
        for word in leaks:
            assert word not in body, f"{username} saw {word} through {where}"

    # Questions: answers, citations, suggestions; each secret asked about directly.
    for collection in DOCUMENTS:
        response = client.post("/api/ask", json={"question": f"What is {SECRETS[collection]}?"})
        assert response.status_code == 200
        events = answer_events(response)
        echoed = {"question": "", "resolved_question": ""}  # the question itself, echoed
        no_leak(json.dumps({**events["answer"], **echoed}), f"ask about {collection}")
        shown = events["answer"]["citations"] + events["answer"]["suggestions"]
        allowed_ids = {library[c].id for c in readable}
        assert {p["document_id"] for p in shown} <= allowed_ids
    # Lists: page and API.
    page = client.get("/documents").get_data(as_text=True)
    listed = client.get("/api/documents").get_json()
    no_leak(page, "documents page")
    assert {d["collection"] for d in listed["documents"]} == readable
    assert sum(listed["counts"].values()) == len(readable)
    for collection, document in library.items():
        chunk = f"{document.id}:{document.version}:0"
        paths = [
            f"/api/documents/{document.id}",
            f"/documents/{document.id}/source",
            f"/documents/{document.id}/source?chunk={chunk}",
            f"/documents/{document.id}/download",
        ]
        for path in paths:
            response = client.get(path)
            body = response.get_data(as_text=True)
            no_leak(body, path)
            if collection in readable:
                assert response.status_code == 200, path
                if "source" in path or "download" in path:
                    assert SECRETS[collection] in body
            else:
                # Forbidden and unknown ids get the same answer.
                unknown = client.get(path.replace(document.id, "0" * 32))
                assert response.status_code == unknown.status_code == 404, path
                unknown_body = unknown.get_data(as_text=True).replace("0" * 32, "ID")
                assert body.replace(document.id, "ID") == unknown_body, path


def test_revoking_a_group_takes_effect_on_the_next_request(
    app: Flask, fake_services: Services, library: dict[str, Any]
) -> None:
    client = client_for(app, "alice")
    path = f"/documents/{library['hr'].id}/source"
    assert client.get(path).status_code == 200
    fake_services.access.remove_member("hr", "alice", actor=Principal.operator())
    assert client.get(path).status_code == 404
    events = answer_events(client.post("/api/ask", json={"question": "How many leave days?"}))
    assert events["answer"]["declined"] and "PINEAPPLE" not in json.dumps(events)


def test_questions_are_audited_with_the_collections_filter(
    app: Flask, fake_services: Services, library: dict[str, Any]
) -> None:
    client = client_for(app, "carol")
    events = answer_events(client.post("/api/ask", json={"question": "What is the WALRUS seal?"}))
    [record] = fake_services.audit_log.search(action="question")
    assert record["actor_id"] == "user:carol" and record["actor_role"] == "staff"
    assert record["details"]["collections"] == ["hr", "legal"]
    assert record["details"]["answer"] == events["answer"]["answer"]
    assert record["client"] == "127.0.0.1"


# -- sign-in, sessions, CSRF, throttling ------------------------------------------------------
def test_signed_out_requests_go_to_the_login_page_or_get_401(app: Flask) -> None:
    client = app.test_client()
    response = client.get("/documents")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert client.get("/api/documents").status_code == 401
    assert client.post("/api/ask", json={"question": "hi"}).status_code == 401
    assert client.get("/login").status_code == 200


def test_session_cookie_flags(app: Flask) -> None:
    client = app.test_client()
    response = post_login(client, username="alice", password=PASSWORD)
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert PASSWORD not in cookie


def test_login_redirect_stays_on_this_site(app: Flask) -> None:
    client = app.test_client()
    for target in ("//evil.example/x", "https://evil.example/", "javascript:alert(1)"):
        response = post_login(client, username="alice", password=PASSWORD, next=target)
        assert response.headers["Location"] == "/"
    response = post_login(client, username="alice", password=PASSWORD, next="/documents")
    assert response.headers["Location"] == "/documents"


def test_state_changes_without_the_csrf_token_are_refused(
    app: Flask, fake_services: Services, library: dict[str, Any]
) -> None:
    client = client_for(app, "admin")
    del client.environ_base["HTTP_X_CSRF_TOKEN"]
    document = library["default"]
    for method, path, kwargs in [
        ("post", "/api/ask", {"json": {"question": "soup?"}}),
        ("post", f"/documents/{document.id}/delete", {}),
        ("delete", f"/api/documents/{document.id}", {}),
        ("post", "/admin/groups", {"data": {"group": "sneaky"}}),
        ("post", "/logout", {}),
    ]:
        response = getattr(client, method)(path, **kwargs)
        assert response.status_code == 400, path
        assert "did not come from this site" in response.get_data(as_text=True)
    forged = client.post(
        f"/documents/{document.id}/delete", data={"csrf_token": "forged-token-value"}
    )
    assert forged.status_code == 400
    assert fake_services.documents.get(document.id)  # nothing was deleted
    assert "sneaky" not in [g.name for g in fake_services.access.list_groups()]


def test_the_sixth_failed_login_in_a_minute_gets_429_and_is_audited(
    app: Flask, fake_services: Services
) -> None:
    client = app.test_client()
    for _ in range(5):
        response = post_login(client, username="alice", password="wrong guess!")
        assert response.status_code == 401
        assert "wrong user name or password" in response.get_data(as_text=True)
    response = post_login(client, username="alice", password=PASSWORD)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    actions = [r["action"] for r in fake_services.audit_log.search(actor="user:alice")]
    assert actions.count("login.failed") == 5 and actions.count("login.throttled") == 1
    # Another account is not affected.
    other = post_login(client, username="bob", password=PASSWORD)
    assert other.status_code == 303


def test_disabled_user_loses_the_session_at_once(
    app: Flask, fake_services: Services, library: dict[str, Any]
) -> None:
    client = client_for(app, "alice")
    assert client.get("/api/documents").status_code == 200
    fake_services.accounts.disable_user("alice", actor=Principal.operator())
    assert client.get("/api/documents").status_code == 401


def test_login_form_bad_input(app: Flask) -> None:
    response = post_login(app.test_client(), username="", password="")
    assert response.status_code == 400
    assert "enter your user name and password" in response.get_data(as_text=True)


# -- roles --------------------------------------------------------------------------------------
def _routes(app: Flask, prefix: str) -> list[tuple[str, str]]:
    values = {"username": "alice", "group": "hr", "collection": "hr", "seq": "1"}
    values.update(change="disable")
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(prefix):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: values.get(m.group(1), "x"), rule.rule)
        path = path.replace("<any(disable, enable):change>", "disable")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, path))
    return routes


@pytest.mark.parametrize("username", ["alice", "erin"])
def test_admin_routes_refuse_other_roles(app: Flask, username: str) -> None:
    client = client_for(app, username)
    routes = _routes(app, "/admin")
    assert len(routes) >= 8
    for method, path in routes:
        response = client.open(path, method=method, data={"group": "x"})
        assert response.status_code == 403, (method, path)


def test_audit_routes_refuse_staff(app: Flask) -> None:
    client = client_for(app, "alice")
    routes = _routes(app, "/audit")
    assert len(routes) >= 4
    for method, path in routes:
        assert client.open(path, method=method).status_code == 403, (method, path)


@pytest.mark.parametrize("username", ["alice", "erin"])
def test_only_admins_change_documents(
    app: Flask, fake_services: Services, library: dict[str, Any], username: str
) -> None:
    client = client_for(app, username)
    upload = {"files": [(io.BytesIO(b"# New\n\nText.\n"), "new.md")]}
    assert client.post("/api/documents", data=upload).status_code == 403
    document = library["hr"]
    assert client.delete(f"/api/documents/{document.id}").status_code == 403
    assert client.post(f"/documents/{document.id}/delete").status_code == 403
    assert fake_services.documents.get(document.id)


# -- admin pages and API tokens -----------------------------------------------------------------
def test_admin_sets_up_access_through_the_pages(app: Flask, fake_services: Services) -> None:
    admin = client_for(app, "admin")
    assert admin.post("/admin/groups", data={"group": "finance"}).status_code == 303
    response = admin.post(
        "/admin/collections", data={"collection": "ledgers", "readers": "finance"}
    )
    assert response.status_code == 303
    response = admin.post(
        "/admin/users",
        data={"username": "frank", "password": PASSWORD, "role": "staff", "groups": "finance"},
    )
    assert response.status_code == 303

    def upload() -> dict[str, Any]:
        return {"files": [(io.BytesIO(b"# Q3\n\nRevenue rose by QUOKKA percent.\n"), "q3.md")]}

    response = admin.post("/api/documents", data={**upload(), "collection": "ledgers"})
    assert response.status_code == 201
    document_id = response.get_json()["accepted"][0]["id"]
    fake_services.documents.ingest(document_id)
    frank = client_for(app, "frank")
    assert "QUOKKA" in frank.get(f"/documents/{document_id}/source").get_data(as_text=True)
    assert client_for(app, "alice").get(f"/documents/{document_id}/source").status_code == 404
    # Bad input on the admin page is shown, and nothing else changes.
    response = admin.post(
        "/admin/users", data={"username": "g", "password": "short", "role": "staff"}
    )
    assert response.status_code == 303
    page = admin.get("/admin").get_data(as_text=True)
    assert "at least 12 characters" in page
    assert "Unknown collection" not in page
    missing = admin.post("/api/documents", data={**upload(), "collection": "nope"})
    assert missing.status_code == 400 and "no collection 'nope'" in missing.get_json()["error"]
    actions = {r["action"] for r in fake_services.audit_log.search(actor="user:admin")}
    assert {"group.create", "collection.create", "user.add", "document.upload"} <= actions


def test_api_token_authenticates_without_csrf_and_keeps_the_role(
    app: Flask, library: dict[str, Any]
) -> None:
    admin = client_for(app, "admin")
    page = admin.post("/admin/users/alice/token", data={"token_name": "scripts"})
    [token] = re.findall(r"ast_[\w-]+", page.get_data(as_text=True))
    api = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    response = api.post("/api/ask", json={"question": "PINEAPPLE days?"}, headers=headers)
    assert response.status_code == 200 and "answer" in answer_events(response)
    listed = api.get("/api/documents", headers=headers).get_json()
    assert {d["collection"] for d in listed["documents"]} == {"hr"}
    assert api.delete(f"/api/documents/{library['hr'].id}", headers=headers).status_code == 403
    bad = api.get("/api/documents", headers={"Authorization": "Bearer ast_not-a-token"})
    assert bad.status_code == 401


# -- auditor pages and failing closed -----------------------------------------------------------
def test_auditor_finds_a_question_and_its_passages_and_verifies(
    app: Flask, fake_services: Services, library: dict[str, Any]
) -> None:
    asked = client_for(app, "alice").post("/api/ask", json={"question": "How many PINEAPPLE days?"})
    assert "answer" in answer_events(asked)
    auditor = client_for(app, "erin")
    listing = auditor.get("/audit?text=pineapple&action=question").get_data(as_text=True)
    assert "How many PINEAPPLE days?" in listing
    [seq] = re.findall(r'href="/audit/(\d+)"', listing)
    record = auditor.get(f"/audit/{seq}").get_data(as_text=True)
    # The passage retrieved (its cited sentence has a link of its own, to #sentence).
    [passage] = re.findall(r'href="(/documents/[^"]+/source\?chunk=[^"#]+)#cited"', record)
    shown = auditor.get(passage.replace("&amp;", "&"))
    assert shown.status_code == 200 and "PINEAPPLE" in shown.get_data(as_text=True)
    verified = auditor.post("/audit/verify").get_data(as_text=True)
    assert 'class="verify-ok"' in verified
    exported = auditor.get("/audit/export?format=csv")
    assert exported.status_code == 200 and "How many PINEAPPLE days?" in exported.get_data(
        as_text=True
    )
    bad = auditor.get("/audit?since=yesterday")
    assert bad.status_code == 400 and "not a date" in bad.get_data(as_text=True)
    assert auditor.get("/audit/export?format=xml").status_code == 400
    actions = [r["action"] for r in fake_services.audit_log.search(actor="user:erin")]
    assert {"audit.read", "audit.verify", "audit.export", "document.view"} <= set(actions)


def test_no_answer_is_returned_when_the_audit_write_fails(
    app: Flask, fake_services: Services, library: dict[str, Any]
) -> None:
    client = client_for(app, "alice")
    with fake_services.sessions.begin() as session:
        session.execute(text("DROP TABLE audit_head"))  # the next append cannot be written
    response = client.post("/api/ask", json={"question": "How many PINEAPPLE days?"})
    events = answer_events(response)
    assert "answer" not in events
    assert "withheld" in events["error"]["error"]
    assert "PINEAPPLE" not in response.get_data(as_text=True)


def test_the_client_address_comes_from_a_trusted_proxy_only(
    fake_services: Services, library: dict[str, Any]
) -> None:
    forwarded = {"X-Forwarded-For": "10.1.2.3"}
    login = {"username": "alice", "password": PASSWORD}
    direct = create_app(services=fake_services, task_sender=RecordingQueue()).test_client()
    post_login(direct, headers=forwarded, **login)
    behind_nginx = fake_services.settings.model_copy(update={"trusted_proxies": 1})
    proxied = create_app(behind_nginx, fake_services, RecordingQueue()).test_client()
    post_login(proxied, headers=forwarded, **login)
    clients = [r["client"] for r in fake_services.audit_log.search(action="login")]
    assert clients == ["10.1.2.3", "127.0.0.1"]  # newest first; a forged header is ignored
