"""`assistant serve`: web server and worker on the embedded defaults, stopped by Ctrl-C."""

from __future__ import annotations

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
