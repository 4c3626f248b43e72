"""No outbound connection is attempted: ingest and ask run with every non-loopback
connection and name lookup recorded and refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.documents import MARKDOWN

GUARD = """
import os, socket

LOG = os.environ["NETWORK_ATTEMPTS_LOG"]
LOCAL = ("127.", "::1", "localhost", "0.0.0.0")

def _record(what):
    with open(LOG, "a") as log:
        log.write(what + "\\n")
    raise OSError("network access is disabled in this test: " + what)

_connect = socket.socket.connect
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = str(address[0])
        if host and not host.startswith(LOCAL):
            _record("connect " + host)
    return _connect(self, address)
socket.socket.connect = connect

_getaddrinfo = socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else str(host or "")
    if name and not name.startswith(LOCAL):
        _record("lookup " + name)
    return _getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
"""


@pytest.mark.slow
def test_ingest_and_ask_attempt_no_outbound_connection(tmp_path: Path) -> None:
    guard_dir = tmp_path / "guard"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(GUARD)
    attempts = tmp_path / "attempts.log"
    attempts.touch()
    document = tmp_path / "compliance.md"
    document.write_text(MARKDOWN)
    # A clean environment: the product itself must switch off hubs and telemetry.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "TRANSFORMERS_", "ANONYMIZED_", "ASSISTANT_"))
    }
    env |= {
        "PYTHONPATH": str(guard_dir),
        "NETWORK_ATTEMPTS_LOG": str(attempts),
        "ASSISTANT_DATA_DIR": str(tmp_path / "var"),
    }
    for args in (["ingest", str(document)], ["ask", "Who chairs the compliance review?"]):
        result = subprocess.run(
            [sys.executable, "-m", "assistant.cli", *args],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    assert attempts.read_text() == ""
