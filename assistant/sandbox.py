"""Parse untrusted files in a child process with CPU-time, memory and wall-clock limits.

Each process that parses starts one helper, `python -m assistant.sandbox`, which imports
the parsers once and then, for each file, forks a fresh child (milliseconds, and safe:
the helper is single-threaded). The child leads its own process group (so Tesseract dies
with it), sets RLIMIT_CPU and RLIMIT_AS, parses, and answers with plain JSON, never a
pickle: a parser exploited by a hostile file can at most lie about the text. The helper
enforces the wall clock and turns any death of the child into a reason; the caller gets a
ParsedDocument or a DocumentError an admin can read, and survives whatever happens.

Frames on the helper's stdin and stdout: an 8-byte big-endian length, then the bytes.
Request: a JSON header, then the file. Reply: the child's JSON, or an error as JSON.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from assistant import errors
from assistant.errors import DocumentError
from assistant.formats.document import PageSpan, ParsedDocument
from assistant.formats.inspection import byte_size
from assistant.settings import LimitSettings

_HELPER_GRACE_SECONDS = 30.0  # beyond the wall-clock limit, before the helper is presumed hung
_PRELOAD = ("pypdf", "pypdfium2", "pytesseract", "docx", "pptx", "openpyxl", "bs4")
_lock = threading.Lock()
_helper: subprocess.Popen[bytes] | None = None
_helper_owner = 0  # the pid that started it: a forked process starts its own


def parse_isolated(
    data: bytes,
    extension: str,
    limits: LimitSettings | None = None,
    scratch_dir: Path | None = None,
) -> ParsedDocument:
    """parse() in a child process, one file at a time per calling process. Temporary files
    go to `scratch_dir` (default: the system's); for a PDF (OCR page images) to a directory
    made there and removed after."""
    limits = limits or LimitSettings()
    if scratch_dir is not None:
        scratch_dir.mkdir(parents=True, exist_ok=True)
    scratch_context: contextlib.AbstractContextManager[str] = (
        tempfile.TemporaryDirectory(prefix="parse-", dir=scratch_dir)
        if extension == ".pdf"
        else contextlib.nullcontext(str(scratch_dir or tempfile.gettempdir()))
    )
    started = time.monotonic()
    with _lock, scratch_context as scratch:
        header = {"extension": extension, "limits": limits.model_dump(), "scratch": scratch}
        helper = _running_helper()
        try:
            assert helper.stdin is not None and helper.stdout is not None
            _write_frame(helper.stdin.fileno(), json.dumps(header).encode())
            _write_frame(helper.stdin.fileno(), data)
            deadline = started + limits.parse_seconds + _HELPER_GRACE_SECONDS
            reply = _read_frame(helper.stdout.fileno(), limits.parse_memory_bytes, deadline)
        except (OSError, EOFError, TimeoutError, ValueError):
            _stop_helper()
            raise DocumentError("the parsing process stopped unexpectedly; try again") from None
    return _result(reply, time.monotonic() - started)


def _running_helper() -> subprocess.Popen[bytes]:
    global _helper, _helper_owner
    if _helper is not None and (_helper_owner != os.getpid() or _helper.poll() is not None):
        _helper = None  # inherited through a fork, or dead: start a fresh one
    if _helper is None:
        root = str(Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        _helper = subprocess.Popen(
            [sys.executable, "-m", "assistant.sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        _helper_owner = os.getpid()
    return _helper


def start() -> None:
    """Start this process's helper now (for example in Celery's worker_process_init), so
    the first file does not wait for the parsers to be imported."""
    with _lock:
        _running_helper()


def shutdown() -> None:
    """Stop this process's helper; the next parse starts a fresh one."""
    with _lock:
        _stop_helper()


def _stop_helper() -> None:
    global _helper
    if _helper is not None and _helper_owner == os.getpid():
        _helper.kill()
        _helper.wait()
    _helper = None


def _result(reply: bytes, elapsed: float) -> ParsedDocument:
    try:
        message = json.loads(reply)
        if "error" in message:
            kind = getattr(errors, str(message.get("kind")), DocumentError)
            if not (isinstance(kind, type) and issubclass(kind, DocumentError)):
                kind = DocumentError
            error = kind(str(message["error"])[:1000] or "the file could not be parsed")
        else:
            pages = [PageSpan(int(n), int(start), int(end)) for n, start, end in message["pages"]]
            report = dict(message["report"]) | {"seconds": round(elapsed, 3)}
            return ParsedDocument(str(message["text"]), pages, report)
    except (KeyError, TypeError, ValueError):
        error = DocumentError("the parser sent back a malformed result")
    raise error


# -- framing ------------------------------------------------------------------------------
def _write_frame(fd: int, payload: bytes) -> None:
    _write_all(fd, len(payload).to_bytes(8, "big"))
    _write_all(fd, payload)


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _read_frame(fd: int, max_bytes: int, deadline: float | None = None) -> bytes:
    size = int.from_bytes(_read_exact(fd, 8, deadline), "big")
    if size > max_bytes:
        raise ValueError(f"a frame of {size} bytes is over the limit of {max_bytes}")
    return _read_exact(fd, size, deadline)


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    parts: list[bytes] = []
    while size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("no reply in time")
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError("the channel closed")
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


# -- the helper process -------------------------------------------------------------------
def _serve() -> None:
    """The helper's loop: one request at a time, until its stdin closes."""
    import assistant.parsing  # noqa: F401  (and the libraries below, so children start warm)

    for module in _PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(module)
    gc.freeze()  # children share the imported objects instead of copying them
    requests, replies = os.dup(0), os.dup(1)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)  # a stray print must not corrupt the replies
    while True:
        try:
            header = json.loads(_read_frame(requests, 1 << 20))
            data = _read_frame(requests, 1 << 40)
        except EOFError:
            return  # the process it serves has gone
        limits = LimitSettings(**header["limits"])
        reply = _run_child(data, str(header["extension"]), limits, str(header["scratch"]))
        del data
        try:
            _write_frame(replies, reply)
        except BrokenPipeError:
            return


def _run_child(data: bytes, extension: str, limits: LimitSettings, scratch: str) -> bytes:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child keeps only stdin, stdout, stderr and its result pipe
        os.closerange(3, write_end)
        os.closerange(write_end + 1, 1 << 16)
        try:
            _child(write_end, data, extension, limits, scratch)
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + limits.parse_seconds
    parts: list[bytes] = []
    received, timed_out, oversized = 0, False, False
    with os.fdopen(read_end, "rb", buffering=0) as result:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([result], [], [], remaining)[0]:
                timed_out = True
                break
            chunk = os.read(read_end, 1 << 20)
            if not chunk:
                break
            received += len(chunk)
            if received > limits.parse_memory_bytes:
                oversized = True
                break
            parts.append(chunk)
    for kill in (os.killpg, os.kill):  # the child's group: Tesseract too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return _error(f"parsing took longer than {limits.parse_seconds:g} s", "ParseLimitExceeded")
    if oversized:
        size = byte_size(limits.parse_memory_bytes)
        return _error(f"the text extracted is larger than {size}", "ParseLimitExceeded")
    reply = b"".join(parts)
    try:
        message = json.loads(reply)
        if isinstance(message, dict) and ("error" in message or "text" in message):
            return reply
    except ValueError:
        pass
    return _death(os.waitstatus_to_exitcode(status), limits)


def _death(exitcode: int, limits: LimitSettings) -> bytes:
    if exitcode == -signal.SIGXCPU:
        reason = f"parsing used more than {limits.parse_cpu_seconds} s of CPU time"
        return _error(reason, "ParseLimitExceeded")
    if exitcode < 0:
        name = signal.Signals(-exitcode).name
        return _error(
            f"the parser crashed on this file ({name}); it is damaged, or needed more than "
            f"{byte_size(limits.parse_memory_bytes)} of memory"
        )
    return _error(f"the parser stopped unexpectedly (exit code {exitcode})")


def _error(reason: str, kind: str = "DocumentError") -> bytes:
    return json.dumps({"error": reason, "kind": kind}).encode()


def _child(fd: int, data: bytes, extension: str, limits: LimitSettings, scratch: str) -> None:
    """In the forked child: own process group, limits, parse, one JSON message, exit."""
    import resource

    from assistant.parsing import describe, parse

    os.setpgrp()
    _die_with_parent()
    cpu, memory = limits.parse_cpu_seconds, limits.parse_memory_bytes
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))  # SIGXCPU, then SIGKILL
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.environ["OMP_THREAD_LIMIT"] = "1"  # Tesseract: one thread
    os.environ["TMPDIR"] = tempfile.tempdir = scratch
    try:
        parsed = parse(data, extension, limits=limits)
        spans = [[s.number, s.start, s.end] for s in parsed.pages]
        message: dict[str, Any] = {"text": parsed.text, "pages": spans, "report": parsed.report}
    except DocumentError as exc:
        message = {"error": str(exc), "kind": type(exc).__name__}
    except MemoryError:
        message = {"error": f"parsing needed more than {byte_size(memory)} of memory"}
        message["kind"] = "ParseLimitExceeded"
    except Exception as exc:  # an unforeseen failure still ends with a reason
        message = {"error": f"the file could not be parsed ({describe(exc)})"}
    del data
    try:
        payload = json.dumps(message, default=str).encode()
    except MemoryError:
        payload = _error(f"parsing needed more than {byte_size(memory)} of memory")
    _write_all(fd, payload)
    os.close(fd)


def _die_with_parent() -> None:
    """Linux: the child is killed if the helper dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


if __name__ == "__main__":
    _serve()
