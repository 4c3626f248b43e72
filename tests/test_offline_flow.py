"""Nothing leaves the premises, checked by the kernel's view rather than Python's: the whole
flow (serve, upload, ingest, ask, audit export and verify) runs as real processes under
`strace -f`, and every connect/send with an internet address must go to loopback, and none
to port 53 (DNS).

The environment is stripped of HF_*/TRANSFORMERS_*/ORT_* switches, so the product has to set
them itself. ONNX Runtime (1.29 and later) uploads telemetry from Linux unless
ORT_DISABLE_TELEMETRY=1 is set before it starts. Its upload is timed, so the test also checks
the sign that it started, which is deterministic: a device id and an event queue under
$XDG_CACHE_HOME/Microsoft/DeveloperTools/.

The tracer proves it saw the flow: it followed `assistant serve` into gunicorn and the Celery
worker (their execve), and the server's accept() calls show this test's HTTP connections
arriving from 127.0.0.1."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_PASSWORD
from tests.documents import sample_files
from tests.test_end_to_end import sse_events
from tests.test_serve import free_port

pytestmark = pytest.mark.slow

STRACE = shutil.which("strace") or "/usr/bin/strace"
SYSCALLS = "connect,sendto,sendmsg,sendmmsg,accept,accept4,execve"
ASSISTANT = str(Path(sys.executable).parent / "assistant")
QUESTION = "Who chairs the compliance review?"
SYSCALL = re.compile(r"^\d+\s+(?:<\.\.\. )?(connect|sendto|sendmsg|sendmmsg|accept4?)\b")
PORT = re.compile(r"sin6?_port=htons\((\d+)\)")
HOST = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6?, "([^"]+)"')


def traced(log: Path, *args: str) -> list[str]:
    return [STRACE, "-f", "--seccomp-bpf", "-qq", "-e", f"trace={SYSCALLS}", "-o", str(log), *args]


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def classify(logs: list[Path]) -> tuple[Counter[str], list[str]]:
    """Counts of loopback / unix / other-family calls, and every outbound-looking line."""
    counts: Counter[str] = Counter()
    outbound: list[str] = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            call = SYSCALL.match(line)
            if not call:
                continue
            name = "accept" if call.group(1).startswith("accept") else "connect/send"
            for address in line.split("sa_family=")[1:]:  # sendmmsg may hold several
                family = re.split(r"[,}]", address, maxsplit=1)[0]
                port, host = PORT.search(address), HOST.search(address)
                if family in ("AF_INET", "AF_INET6"):
                    ip = host and (host.group(1) or host.group(2))
                    if not ip or (port and port.group(1) == "53") or not is_loopback(ip):
                        outbound.append(line)
                    else:
                        counts[f"{name} loopback"] += 1
                else:
                    counts[f"{name} {family}"] += 1
    return counts, outbound


def http(url: str, token: str, body: bytes | None = None, content_type: str = "") -> Any:
    request = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {token}"})
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=300) as response:
        text = response.read().decode()
        return (
            text if response.headers.get_content_type() == "text/event-stream" else json.loads(text)
        )


def multipart(files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files.items()
    ]
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def wait_for(predicate: Any, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text(errors='replace')[-4000:]}")


def test_the_whole_flow_attempts_no_connection_off_the_machine(
    tmp_path: Path, model_cache: Path
) -> None:
    if not Path(STRACE).exists():
        pytest.skip("strace is not installed (apt-get install strace; `make test` does)")
    probe = subprocess.run(traced(tmp_path / "probe.trace", "true"), capture_output=True, text=True)
    assert probe.returncode == 0, f"strace cannot trace here (ptrace refused?): {probe.stderr}"

    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "TRANSFORMERS_", "ORT_", "ANONYMIZED_", "ASSISTANT_"))
    }
    env |= {
        "ASSISTANT_DATA_DIR": str(tmp_path / "var"),  # fresh: database, index, audit log
        "ASSISTANT_MODEL_CACHE_DIR": str(model_cache),  # the exported models, made once
        "ASSISTANT_PORT": str(port),
        "ASSISTANT_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),  # where telemetry would keep its queue
    }
    traces: list[Path] = []

    def run(name: str, *args: str) -> str:
        traces.append(tmp_path / f"{name}.trace")
        result = subprocess.run(
            traced(traces[-1], ASSISTANT, *args),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    url, serve_log = f"http://127.0.0.1:{port}", tmp_path / "serve.log"
    traces.append(tmp_path / "serve.trace")
    with serve_log.open("wb") as output:
        tracer = subprocess.Popen(
            traced(traces[-1], ASSISTANT, "serve"), env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: b"ok" in urllib.request.urlopen(f"{url}/healthz", timeout=5).read(),
                 90, "the server", serve_log)  # fmt: skip
        token = run("token", "users", "token", "admin", "--name", "offline-test").strip()
        token = token.splitlines()[-1]
        files = sample_files()
        uploaded = http(f"{url}/api/documents", token, *multipart(files))
        ids = [document["id"] for document in uploaded["accepted"]]
        assert len(ids) == len(files), uploaded

        def indexed() -> bool:
            states = {http(f"{url}/api/documents/{i}", token)["status"] for i in ids}
            assert "failed" not in states, http(f"{url}/api/documents", token)
            return states == {"indexed"}

        wait_for(indexed, 240, "the worker to index the uploads", serve_log)
        body = json.dumps({"question": QUESTION}).encode()
        name, answer = sse_events(http(f"{url}/api/ask", token, body, "application/json"))[-1]
        assert name == "answer" and not answer["declined"], answer
        assert "Amara Okafor" in answer["citations"][0]["text"]
    finally:
        serve = subprocess.run(["pgrep", "-P", str(tracer.pid)], capture_output=True, text=True)
        for pid in serve.stdout.split():
            os.kill(int(pid), signal.SIGINT)  # Ctrl-C to `assistant serve`, not to strace
        try:
            tracer.wait(timeout=60)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()

    export = tmp_path / "audit.jsonl"
    run("export", "audit", "export", "--format", "jsonl", "--output", str(export))
    actions = [json.loads(line)["action"] for line in export.read_text().splitlines()]
    assert "question" in actions and "document.upload" in actions, Counter(actions)
    assert "OK" in run("verify", "audit", "verify")

    telemetry = sorted(str(p) for p in (tmp_path / "cache").rglob("*"))
    assert telemetry == [], f"a library set up telemetry (device id, event queue): {telemetry}"
    counts, outbound = classify(traces)
    print("strace, all processes of the flow:", dict(sorted(counts.items())))
    assert outbound == [], "connections off the machine (or DNS):\n" + "\n".join(outbound)
    served = (tmp_path / "serve.trace").read_text(errors="replace")
    assert re.search(r'execve\("[^"]*", \[[^]]*"gunicorn"', served), "gunicorn was not traced"
    assert re.search(r'execve\("[^"]*", \[[^]]*"celery"', served), "the worker was not traced"
    # Each HTTP request above was a new connection from 127.0.0.1, accepted by the server.
    assert counts["accept loopback"] >= len(ids) + 3, counts
