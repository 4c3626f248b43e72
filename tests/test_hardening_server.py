"""Issue 14 against a real `assistant serve` (gunicorn, a Celery worker, the embedded broker,
SQLite): the terminal at first start (item 19), oversized bodies refused unread (item 2),
concurrent guesses (item 3) and a sign-in whose audit record fails (item 1), over real
sockets. One server for the module; the PostgreSQL run does not repeat it (the same code
paths run on PostgreSQL through the test client in test_hardening_access.py)."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_DATABASE, stop_process, wait_until
from tests.test_serve import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.sqlite("one server per module, on SQLite files of its own"),
    pytest.mark.skipif(TEST_DATABASE == "postgresql", reason="run once, in the SQLite run"),
]
REPO = Path(__file__).resolve().parent.parent
# What third-party start-up output looks like: none of it may reach the terminal.
NOISE = re.compile(
    r"celery@|\[INFO\]|Booting worker|Listening at|-------------- |onnxruntime|quantiz|"
    r"RuntimeWarning|running the worker with superuser"
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[dict[str, Any]]:
    """`assistant serve` on a new data directory, its terminal output captured."""
    data_dir = tmp_path_factory.mktemp("serve") / "var"
    port = free_port()
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(data_dir), "ASSISTANT_PORT": str(port),
           "ASSISTANT_MODEL_CACHE_DIR": str(model_cache),
           "ASSISTANT_ACCOUNTS__SECURE_COOKIES": "false"}  # fmt: skip
    env.pop("ASSISTANT_ADMIN_PASSWORD", None)
    terminal = data_dir.parent / "terminal.txt"
    with terminal.open("w") as output:
        serve = subprocess.Popen(
            [sys.executable, "-m", "assistant.cli", "serve"],
            cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{url}/healthz"), 120, "assistant serve to answer")
        worker_log = data_dir / "logs" / "worker.log"
        wait_until(lambda: " ready." in _read(worker_log), 180, "the worker to be ready")
        password = re.search(r"Password:\s+(\S+)", terminal.read_text())
        assert password, terminal.read_text()
        yield {"url": url, "port": port, "data_dir": data_dir, "terminal": terminal,
               "serve": serve, "password": password.group(1)}  # fmt: skip
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGINT)
            try:
                serve.wait(60)
            except subprocess.TimeoutExpired:
                stop_process(serve)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Browser:
    """A cookie jar and the sign-in form, over real HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )

    def get(self, path: str) -> tuple[int, str]:
        return self._open(urllib.request.Request(self.url + path))

    def sign_in(self, username: str, password: str) -> tuple[int, str]:
        _, form = self.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token, form
        body = urllib.parse.urlencode(
            {"csrf_token": token.group(1), "username": username, "password": password}
        ).encode()
        return self._open(urllib.request.Request(self.url + "/login", data=body))

    def _open(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# -- item 19 -----------------------------------------------------------------------------------
def test_first_start_prints_one_clear_block_and_logs_go_to_files(served: dict[str, Any]) -> None:
    said = served["terminal"].read_text()
    lines = [line for line in said.splitlines() if line.strip()]
    assert lines[0] == f"Document assistant running at http://127.0.0.1:{served['port']}/"
    assert "  User:      admin" in said and "shown only this once" in said
    logs = served["data_dir"].resolve() / "logs"
    assert f"Logs:      {logs / 'web.log'}" in said and str(logs / "worker.log") in said
    assert len(lines) <= 10, said
    assert not NOISE.search(said), said
    assert "Booting worker" in _read(logs / "web.log")
    assert "SecurityWarning" in _read(logs / "worker.log") and " ready." in _read(
        logs / "worker.log"
    )
    status, _ = Browser(served["url"]).sign_in("admin", served["password"])
    assert status == 303


def test_make_run_installs_no_test_packages() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "run"], cwd=REPO, capture_output=True, text=True
    )
    assert dry_run.returncode == 0, dry_run.stderr
    assert "tesseract-ocr" in dry_run.stdout
    assert "chromium" not in dry_run.stdout and "strace" not in dry_run.stdout
    tests = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True)
    assert "chromium strace" in tests.stdout


# -- item 2 ------------------------------------------------------------------------------------
def raw_post(
    port: int, path: str, headers: dict[str, str], length: int, send: int
) -> tuple[str, float]:
    """Send the headers of a `length`-byte body and only `send` bytes of it; return the
    status line and how long the answer took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}"
                f"Content-Length: {length}\r\nConnection: close\r\n\r\n")  # fmt: skip
        connection.sendall(head.encode() + b"a" * send)
        answer = connection.recv(4096).decode(errors="replace")
    return answer.split("\r\n", 1)[0], time.monotonic() - started


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) if match else 0


def descendants(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    children = [int(child) for child in found.stdout.split()]
    return children + [d for child in children for d in descendants(child)]


def gunicorn_workers(serve_pid: int) -> list[int]:
    """The web server's processes (this server's only: the machine may run others)."""
    return [
        pid
        for pid in descendants(serve_pid)
        if b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def api_token(served: dict[str, Any]) -> str:
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(served["data_dir"])}
    issued = subprocess.run(
        [sys.executable, "-m", "assistant.cli", "users", "token", "admin", "--name", "big"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return issued.stdout.strip()


@pytest.mark.parametrize(("path", "signed_in"), [("/login", False), ("/api/ask", True)])
def test_a_300_mb_body_gets_413_before_it_is_sent(
    served: dict[str, Any], path: str, signed_in: bool
) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signed_in:
        headers = {"Content-Type": "application/json"}
        headers["Authorization"] = f"Bearer {api_token(served)}"
    workers = gunicorn_workers(served["serve"].pid)
    before = max(rss_kib(pid) for pid in workers)
    status, seconds = raw_post(served["port"], path, headers, 300 * 1024 * 1024, 65536)
    assert " 413 " in status, status
    assert seconds < 10  # answered with 300 MB still unsent: the body was never read
    assert max(rss_kib(pid) for pid in workers) - before < 50 * 1024


# -- item 1 ------------------------------------------------------------------------------------
def test_no_working_session_when_the_sign_in_cannot_be_audited(served: dict[str, Any]) -> None:
    database = sqlite3.connect(served["data_dir"] / "assistant.db", isolation_level=None)
    database.execute("CREATE TRIGGER no_audit BEFORE INSERT ON audit_records "
                     "BEGIN SELECT RAISE(ABORT, 'audit inserts blocked'); END")  # fmt: skip
    try:
        browser = Browser(served["url"])
        status, _ = browser.sign_in("admin", served["password"])
        assert status == 503
        assert browser.get("/api/documents")[0] == 401
    finally:
        database.execute("DROP TRIGGER no_audit")
        database.close()


# -- item 3 ------------------------------------------------------------------------------------
def test_thirty_concurrent_guesses_are_five_checks(served: dict[str, Any]) -> None:
    """Last in the module: it locks `admin` out of 127.0.0.1 for a minute."""
    browsers = [Browser(served["url"]) for _ in range(30)]
    for browser in browsers:
        browser.get("/login")  # each has its form and token first
    statuses: list[int] = []
    barrier = threading.Barrier(30)

    def guess(browser: Browser) -> None:
        barrier.wait()
        statuses.append(browser.sign_in("admin", "not the password")[0])

    threads = [threading.Thread(target=guess, args=(b,)) for b in browsers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(statuses) == [401] * 5 + [429] * 25
