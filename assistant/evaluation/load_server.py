"""The server side of `assistant eval load`: its JSON API as the load uses it, the users and
API tokens the load creates on the server's data directory, the documents it uploads before
the load (the questions' contexts) and during it (ingestion in parallel)."""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from assistant.accounts import Principal
from assistant.db import DocumentStatus
from assistant.errors import InvalidInput
from assistant.evaluation.datasets import read_jsonl
from assistant.services import Services

logger = logging.getLogger(__name__)

GROUP = COLLECTION = "loadtest"
INGEST_COLLECTION = "loadtest-ingest"  # no readers (admins only): answers do not change
ADMIN = "loadtest-admin"
TOKEN_NAME = "eval-load"
PENDING = DocumentStatus.PENDING
TIMEOUT = httpx.Timeout(600.0, connect=5.0)
_METRIC = re.compile(r"^assistant_answers_max_(concurrent|waiting) (\d+)$", re.M)


# -- the server's API -------------------------------------------------------------------------
class Server:
    """The JSON API as the load needs it; a failure is an InvalidInput naming its cause."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise InvalidInput(f"cannot reach {self.url}: {exc}") from exc
        if response.status_code in (401, 403):
            why = f"the server refused the token (HTTP {response.status_code})"
            raise InvalidInput(f"{self.url}{path}: {why}: {error_message(response)}")
        if response.status_code >= 400 and not (path == "/api/documents" and method == "POST"):
            raise InvalidInput(
                f"{self.url}{path}: HTTP {response.status_code}: {error_message(response)}"
            )
        return response

    def check(self) -> None:
        """Reachable and healthy, and the token is accepted."""
        if self.request("GET", "/healthz").json().get("status") != "ok":
            raise InvalidInput(f"{self.url}/healthz does not report ok")
        self.request("GET", "/api/documents")

    def capacity(self) -> dict[str, Any]:
        """Answer slots and queue room of the web process that answers /metrics."""
        found = {k: int(v) for k, v in _METRIC.findall(self.request("GET", "/metrics").text)}
        if len(found) != 2:
            raise InvalidInput(f"{self.url}/metrics does not show the answer queue's size")
        return {"max_concurrent": found["concurrent"], "max_waiting": found["waiting"],
                "total": sum(found.values()), "source": "the server's /metrics"}  # fmt: skip

    def upload(self, name: str, data: bytes, collection: str) -> tuple[str | None, str]:
        """(document id, "") or (None, why the server rejected it)."""
        files, form = {"files": (name, data)}, {"collection": collection}
        response = self.request("POST", "/api/documents", files=files, data=form)
        body = json_body(response)
        if body.get("accepted"):
            return str(body["accepted"][0]["id"]), ""
        rejected = "; ".join(r["error"] for r in body.get("rejected", []))
        return None, rejected or f"HTTP {response.status_code}: {error_message(response)}"

    def status(self, document_id: str) -> str:
        return str(self.request("GET", f"/api/documents/{document_id}").json()["status"])


def json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def error_message(response: httpx.Response) -> str:
    return str(json_body(response).get("error") or response.text.strip())[:200]


# -- ingestion in parallel ----------------------------------------------------------------------
def ingest_source(path: Path) -> Iterator[tuple[str, bytes]]:
    """The files of a directory, or each row of a BEIR corpus.jsonl as a text file."""
    if path.is_dir():
        yield from ((p.name, p.read_bytes()) for p in sorted(path.iterdir()) if p.is_file())
        return
    for row in read_jsonl(path, required=("_id", "text")):
        yield f"{row['_id']}.txt", f"{row.get('title', '')}\n\n{row['text']}".strip().encode()


class Ingester:
    """Uploads the source's files as an admin while a level runs, keeping `pending` of them
    queued or in progress so that a worker is always busy, and counts what finished."""

    def __init__(self, server: Server, source: Path, collection: str, pending: int = 2) -> None:
        self.server, self.collection, self.pending = server, collection, pending
        self.source = ingest_source(source)
        self.uploaded: list[str] = []
        self.waiting: set[str] = set()
        self.exhausted = False

    def during(self, stop: threading.Event, counts: Counter[str]) -> None:
        while not stop.is_set():
            for document_id in list(self.waiting):
                if (state := self.server.status(document_id)) not in PENDING:
                    self.waiting.discard(document_id)
                    counts[state] += 1
            while len(self.waiting) < self.pending and not self.exhausted:
                name, data = next(self.source, ("", b""))
                self.exhausted = not name
                document_id, error = (
                    self.server.upload(name, data, self.collection) if name else (None, "")
                )
                if document_id:
                    counts["uploaded"] += 1
                    self.uploaded.append(document_id)
                    self.waiting.add(document_id)
                elif name:
                    counts["rejected"] += 1
                    logger.warning("ingestion upload %s rejected: %s", name, error)
            stop.wait(0.5)

    def remove(self, seconds: float = 600.0) -> None:
        """Wait for what is still being ingested, then delete every uploaded document, so a
        rerun can upload the same files (identical bytes are rejected as duplicates)."""
        deadline = time.monotonic() + seconds
        while self.waiting and time.monotonic() < deadline:
            self.waiting = {d for d in self.waiting if self.server.status(d) in PENDING}
            time.sleep(1)
        for document_id in self.uploaded:
            self.server.request("DELETE", f"/api/documents/{document_id}")


# -- setting up -------------------------------------------------------------------------------
def prepare(server: Server, documents: Sequence[Path], collection: str) -> int:
    """Upload the documents the questions are about (those not yet indexed in `collection`)
    and wait until they are indexed; returns how many were uploaded."""
    listed = server.request("GET", "/api/documents").json()["documents"]
    present = {
        d["filename"] for d in listed if (d["collection"], d["status"]) == (collection, "indexed")
    }
    waiting = {}
    for path in (p for p in documents if p.name not in present):
        document_id, error = server.upload(path.name, path.read_bytes(), collection)
        if document_id is None:
            raise InvalidInput(f"{path.name}: the server rejected it: {error}")
        waiting[document_id] = path.name
    deadline = time.monotonic() + 1800
    for document_id, name in waiting.items():
        while (state := server.status(document_id)) in PENDING:
            if time.monotonic() > deadline:
                raise InvalidInput(
                    f"{name} is still {state} after 30 minutes: is a worker running?"
                )
            time.sleep(1)
        if state != "indexed":
            raise InvalidInput(f"{name} was not indexed: {state}")
    return len(waiting)


def create_users(services: Services, wanted: Sequence[tuple[str, str]]) -> list[str]:
    """On the server's data directory: the load's group and collections (the questions' one
    read by the group, the ingestion one by admins only), the (username, role) users, reused
    from earlier runs, and a new API token for each."""
    access, accounts, operator = services.access, services.accounts, Principal.operator()
    if GROUP not in {g.name for g in access.list_groups()}:
        access.create_group(GROUP, actor=operator)
    for name, readers in ((COLLECTION, [GROUP]), (INGEST_COLLECTION, [])):
        if name not in access.collection_names():
            access.create_collection(name, readers, "assistant eval load", actor=operator)
    existing = {u.username for u in accounts.list_users()}
    for username, role in wanted:
        if username not in existing:
            groups = [GROUP] if role == "staff" else []
            accounts.add_user(username, secrets.token_urlsafe(24), role, groups, actor=operator)
    return [accounts.issue_token(name, TOKEN_NAME, actor=operator) for name, _ in wanted]


def revoke_tokens(services: Services) -> None:
    """Revoke the tokens the load issued (every run issues new ones)."""
    for user in services.accounts.list_users():
        if user.username.startswith("loadtest-"):
            for token in services.accounts.list_tokens(user.username):
                if token.name == TOKEN_NAME and not token.revoked:
                    services.accounts.revoke_token(token.id, actor=Principal.operator())
