"""`assistant serve`: web server and worker on the embedded defaults, stopped by Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from assistant.db import DocumentStatus
from assistant.services import build_services
from assistant.settings import load_settings
from tests.conftest import wait_until

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def children_of(pid: int) -> list[int]:
    result = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(line) for line in result.stdout.split()]


def test_serve_prints_the_url_answers_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(tmp_path / "var"), "ASSISTANT_PORT": str(port)}
    serve = subprocess.Popen(
        [sys.executable, "-m", "assistant.cli", "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        first_line = serve.stdout.readline()
        assert f"running at http://127.0.0.1:{port}/" in first_line
        processes = children_of(serve.pid)
        assert len(processes) == 2  # gunicorn and the celery worker
        health = None
        deadline = time.monotonic() + 60
        while health is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    health = json.load(r)
            except OSError:
                time.sleep(0.5)
        assert health is not None and health["status"] == "ok"
        serve.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert serve.wait(timeout=60) == 0
        for pid in processes:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    finally:
        if serve.poll() is None:
            serve.kill()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def celery_worker(serve_pid: int) -> int | None:
    for pid in children_of(serve_pid):
        with contextlib.suppress(FileNotFoundError):
            if b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return None


def test_a_worker_that_dies_is_restarted_and_the_web_keeps_serving(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "var"
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(data_dir), "ASSISTANT_PORT": str(port)}
    errors = tmp_path / "serve.err"
    with errors.open("w") as stderr:
        serve = subprocess.Popen(
            [sys.executable, "-m", "assistant.cli", "serve"],
            stdout=subprocess.DEVNULL, stderr=stderr, env=env,
        )  # fmt: skip
    try:
        wait_until(lambda: celery_worker(serve.pid) is not None, 60, "the worker to start")
        first = celery_worker(serve.pid)
        assert first is not None
        os.killpg(first, signal.SIGKILL)  # the worker and its pool, as the OOM killer might
        wait_until(
            lambda: celery_worker(serve.pid) not in (None, first), 60, "a new worker to start"
        )
        assert serve.poll() is None
        said = errors.read_text()
        assert "the ingestion worker exited with code -9 (see " in said
        assert "restarting it in 1 s" in said
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert json.load(response)["status"] == "ok"
        # The new worker does the work: a file handed to the workers gets indexed.
        note = tmp_path / "note.md"
        note.write_text("# Restart\n\nThe restarted worker indexed this note.\n")
        queued = subprocess.run(
            [sys.executable, "-m", "assistant.cli", "ingest", "--queue", str(note)],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert queued.returncode == 0, queued.stderr
        services = build_services(load_settings(data_dir=data_dir))
        wait_until(
            lambda: services.documents.counts()[DocumentStatus.INDEXED] == 1, 120, "indexing"
        )
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
