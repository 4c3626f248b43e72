"""Load on a running server: closed-loop simulated users asking `POST /api/ask` at several
concurrency levels, optionally while documents are ingested through the API, and a level at a
multiple of the server's answer capacity to show its 503 + Retry-After behaviour.

Each user asks its next question as soon as the last one is done (no think time) and waits
the Retry-After of a 503 or 429 before asking again. Timings, all taken by this client unless
named server_*:
- ttfb: to the response headers. The server sends them with the first SSE event (`status`)
  once the question holds an answer slot, so for a 200 this includes the wait in the queue.
- answer: to the `answer` event. The endpoint does not stream tokens: the answer is released
  whole once its audit record is written, so this is when a user sees the first word.
- total: to the end of the response.
- server_ttft, server_total: the answerer's own `first_token_seconds` and `total_seconds`
  from the answer event: from the start of retrieval to the model's first token (or to the
  decline), and to the finished answer; they exclude the queue wait and the audit write.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from assistant.errors import InvalidInput
from assistant.evaluation.datasets import load_questions
from assistant.evaluation.load_server import (
    ADMIN,
    COLLECTION,
    INGEST_COLLECTION,
    TIMEOUT,
    Ingester,
    Server,
    create_users,
    error_message,
    json_body,
    prepare,
    revoke_tokens,
)
from assistant.evaluation.metrics import percentile
from assistant.evaluation.qa import sample_questions
from assistant.services import Services
from assistant.settings import Settings

logger = logging.getLogger(__name__)

TIMED = ("ttfb", "answer", "total", "server_ttft", "server_total")


@dataclass
class Sample:
    """One question: HTTP status (None: no response), outcome and timings in seconds."""

    user: int
    started_s: float
    status: int | None = None
    outcome: str = "connection"  # answered, declined, stream_error, refused, connection
    reason: str | None = None
    retry_after: int | None = None
    ttfb_s: float | None = None
    answer_s: float | None = None
    total_s: float = 0.0
    server_ttft_s: float | None = None
    server_total_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("answered", "declined")


def parse_levels(text: str) -> list[tuple[int, bool]]:
    """'5,10,20,2x' -> [(5, False), (10, False), (20, False), (2, True)]: a number of users,
    or (with x) a multiple of the server's capacity."""
    levels = []
    for part in (p.strip().lower() for p in text.split(",")):
        multiple = part.endswith("x")
        number = part[:-1] if multiple else part
        if not number.isdigit() or int(number) < 1:
            raise ValueError(f"{part!r} is not a number of users (5) or of capacities (2x)")
        levels.append((int(number), multiple))
    return levels


def _spread(values: Sequence[float | None]) -> dict[str, float | None]:
    found = [v for v in values if v is not None]
    return {f"p{q}": _round(percentile(found, q / 100)) for q in (50, 95, 99)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def summarize(samples: Sequence[Sample], seconds: float, users: int) -> dict[str, Any]:
    """Counts by outcome and status, rates, and p50/p95/p99 timings of the answered requests
    (the time of the 503s apart)."""
    ok = [s for s in samples if s.ok]
    refused = [s for s in samples if s.status == 503]
    errors = len(samples) - len(ok)
    return {
        "users": users,
        "seconds": round(seconds, 2),
        "requests": len(samples),
        "ok": len(ok),
        "answered": sum(s.outcome == "answered" for s in samples),
        "declined": sum(s.outcome == "declined" for s in samples),
        "errors": errors,
        "error_rate": round(errors / len(samples), 4) if samples else None,
        "http_503": len(refused),
        "http_429": sum(s.status == 429 for s in samples),
        "other_errors": sum(not s.ok and s.status not in (503, 429) for s in samples),
        "statuses": dict(sorted(Counter(str(s.status) for s in samples).items())),
        "requests_per_s": round(len(samples) / seconds, 3) if seconds > 0 else None,
        "answers_per_s": round(len(ok) / seconds, 3) if seconds > 0 else None,
        **{name: _spread([getattr(s, f"{name}_s") for s in ok]) for name in TIMED},
        "refused_503": {
            "reasons": dict(Counter(s.reason or "-" for s in refused)),
            "with_retry_after": sum(s.retry_after is not None for s in refused),
            "time": _spread([s.total_s for s in refused]),
            "max_time_s": _round(max((s.total_s for s in refused), default=None)),
        },
    }


# -- questions ------------------------------------------------------------------------------
def ask(http: httpx.Client, question: str, user: int, origin: float) -> Sample:
    started = time.perf_counter()
    sample = Sample(user, round(started - origin, 3))
    try:
        with http.stream("POST", "/api/ask", json={"question": question}) as response:
            sample.status, sample.ttfb_s = response.status_code, time.perf_counter() - started
            if response.status_code == 200:
                _read_events(response, sample, started)
            else:
                response.read()
                sample.outcome, retry = "refused", response.headers.get("Retry-After", "")
                sample.retry_after = int(retry) if retry.isdigit() else None
                sample.reason = json_body(response).get("reason") or error_message(response)
    except httpx.HTTPError as exc:
        sample.reason = f"{type(exc).__name__}: {exc}"[:200]
    sample.total_s = time.perf_counter() - started
    return sample


def _read_events(response: httpx.Response, sample: Sample, started: float) -> None:
    sample.outcome, event = "stream_error", ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:") and event == "answer":
            answer = json.loads(line[5:])
            sample.answer_s = time.perf_counter() - started
            sample.outcome = "declined" if answer.get("declined") else "answered"
            sample.server_ttft_s = answer.get("first_token_seconds")
            sample.server_total_s = answer.get("total_seconds")
        elif line.startswith("data:") and event == "error":
            sample.reason = str(json.loads(line[5:]).get("error"))[:200]


def run_level(
    url: str, tokens: Sequence[str], questions: Sequence[str], users: int, seconds: float
) -> tuple[list[Sample], float]:
    """`users` threads, user i with tokens[i % len(tokens)], each asking back to back until
    the time is up (after a 503 or 429, once its Retry-After has passed). Returns the samples
    and the wall time to the end of the last request."""
    samples: list[Sample] = []
    origin = time.perf_counter()
    deadline = origin + seconds

    def user(number: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[number % len(tokens)]}"}
        with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT) as http:
            for index in itertools.count(number * len(questions) // users):
                if time.perf_counter() >= deadline:
                    return
                sample = ask(http, questions[index % len(questions)], number, origin)
                samples.append(sample)  # list.append is atomic
                if sample.retry_after is not None:
                    time.sleep(max(0.0, min(sample.retry_after, deadline - time.perf_counter())))

    threads = [threading.Thread(target=user, args=(n,), daemon=True) for n in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples, time.perf_counter() - origin


# -- the whole run ------------------------------------------------------------------------------
@dataclass
class LoadOptions:
    url: str
    levels: list[tuple[int, bool]]
    seconds: float
    token: str | None = None  # an admin's; with `setup`, one is created
    user_tokens: Path | None = None  # one per line; else --setup's users, else the admin's
    setup: bool = False  # create users and tokens on the server's data directory
    prepare: bool = False
    collection: str | None = None
    ingest: Path | None = None
    questions: Path | None = None
    limit: int = 200
    seed: int = 0


def evaluate_load(
    settings: Settings, directory: Path, options: LoadOptions, services: Services | None = None
) -> dict[str, Any]:
    """Check the server and the tokens, set up users and documents if asked, then run each
    level in turn after one warm-up question. `setup` needs `services` on the server's data."""
    path = options.questions or directory / "questions.jsonl"
    rows = sample_questions(load_questions(path), options.limit, options.seed, path)
    questions = [str(r["question"]) for r in rows]
    documents = sorted(p for p in (directory / "documents").glob("*") if p.is_file())
    if options.prepare and not documents:
        raise InvalidInput(f"{directory / 'documents'}: no documents to upload")
    if not options.token and not (options.setup and services):
        raise InvalidInput("give an admin's API token with --token, or use --setup")
    ingester = None
    try:
        if options.token:
            admin = options.token
        elif services is not None:
            admin = create_users(services, [(ADMIN, "admin")])[0]
        server = Server(options.url, admin)
        server.check()
        capacity = _capacity(server, settings)
        # Each level has users of its own, so no level inherits the last one's rate windows.
        sizes = [n * capacity["total"] if times else n for n, times in options.levels]
        if options.user_tokens:
            tokens = options.user_tokens.read_text().split() or [admin]
        elif options.setup and services:
            wanted = [(f"loadtest-{n:03d}", "staff") for n in range(1, sum(sizes) + 1)]
            tokens = create_users(services, wanted)
        else:
            tokens = [admin]
        for number, token in enumerate(dict.fromkeys(tokens), start=1):
            try:
                Server(options.url, token).request("GET", "/api/documents")
            except InvalidInput as exc:
                raise InvalidInput(f"user token {number}: {exc}") from None
        collection = options.collection or (COLLECTION if options.setup else "default")
        prepared = prepare(server, documents, collection) if options.prepare else 0
        if options.ingest:
            target = INGEST_COLLECTION if options.setup else collection
            ingester = Ingester(server, options.ingest, target)
        warm = ask(server.http, questions[0], -1, time.perf_counter())
        if not warm.ok:
            raise InvalidInput(f"the warm-up question failed: HTTP {warm.status} {warm.reason}")
        levels = []
        for number, ((count, times), users) in enumerate(zip(options.levels, sizes, strict=True)):
            first = sum(sizes[:number])
            own = [tokens[(first + n) % len(tokens)] for n in range(users)]
            label = f"{users} ({count}x capacity)" if times else str(users)
            levels.append(_level(server.url, own, questions, options.seconds, label, ingester))
    finally:
        if ingester is not None:
            try:
                ingester.remove()
            except InvalidInput as exc:  # do not hide what stopped the run
                logger.error("could not delete the documents ingested during the load: %s", exc)
        if options.setup and services:
            revoke_tokens(services)
    return {"url": server.url, "capacity": capacity, "seconds_per_level": options.seconds,
            "questions": len(questions), "user_tokens": len(set(tokens)), "collection": collection,
            "prepared_uploads": prepared, "levels": levels}  # fmt: skip


def _capacity(server: Server, settings: Settings) -> dict[str, Any]:
    try:
        return server.capacity()
    except InvalidInput as exc:  # not an admin's token and not on the server's machine
        logger.warning("taking the capacity from this command's settings: %s", exc)
    concurrent, waiting = settings.load.max_concurrent_answers, settings.load.max_waiting_answers
    return {"max_concurrent": concurrent, "max_waiting": waiting, "total": concurrent + waiting,
            "source": "this command's settings"}  # fmt: skip


def _level(
    url: str, tokens: Sequence[str], questions: Sequence[str], seconds: float, label: str,
    ingester: Ingester | None,
) -> dict[str, Any]:  # fmt: skip
    """One level, a user per token, with the ingester uploading meanwhile if there is one."""
    users = len(tokens)
    logger.info("%s users for %s s", users, seconds)
    stop, counts = threading.Event(), Counter[str]()
    thread = threading.Thread(target=ingester.during, args=(stop, counts)) if ingester else None
    if thread:
        thread.start()
    try:
        samples, wall = run_level(url, tokens, questions, users, seconds)
    finally:
        stop.set()
        if thread:
            thread.join()
    ingested = None
    if ingester:
        keys = ("uploaded", "rejected", "indexed", "failed")
        ingested = {k: counts[k] for k in keys} | {"source_exhausted": ingester.exhausted}
    summary = {"label": label, **summarize(samples, wall, users), "ingestion": ingested}
    rounded = [{k: _round(v) if isinstance(v, float) else v for k, v in asdict(s).items()}
               for s in samples]  # fmt: skip
    return summary | {"samples": rounded}


def _cell(spread: dict[str, float | None]) -> str:
    return " / ".join("-" if v is None else f"{v:.2f}" for v in spread.values())


def format_markdown(report: dict[str, Any]) -> str:
    """One row per level; timings are p50 / p95 / p99 seconds of the answered requests."""
    head = [
        "users",
        "requests",
        "req/s",
        "answers/s",
        "errors",
        "503",
        "429",
        "other",
        "TTFB",
        "answer (client TTFT)",
        "server TTFT",
        "total",
        "503 time p95",
        "ingested (failed)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for level in report["levels"]:
        p95, ingested = level["refused_503"]["time"]["p95"], level["ingestion"]
        row = [
            level["label"],
            level["requests"],
            level["requests_per_s"],
            level["answers_per_s"],
            "-" if level["error_rate"] is None else f"{level['error_rate']:.1%}",
            level["http_503"],
            level["http_429"],
            level["other_errors"],
            *(_cell(level[name]) for name in ("ttfb", "answer", "server_ttft", "total")),
            "-" if p95 is None else f"{p95:.3f} s",
            "-" if ingested is None else f"{ingested['indexed']} ({ingested['failed']})",
        ]
        lines.append("| " + " | ".join(map(str, row)) + " |")
    capacity = report["capacity"]
    lines.append(
        f"\nCapacity ({capacity['source']}): {capacity['max_concurrent']} answering + "
        f"{capacity['max_waiting']} waiting = {capacity['total']} questions per web process. "
        f"{report['seconds_per_level']:g} s per level; {report['questions']} questions; "
        f"{report['user_tokens']} user token(s). Timings are p50 / p95 / p99 seconds of the "
        "answered requests: TTFB and answer by this client (the answer arrives whole, after "
        "its audit record), server TTFT by the answerer (without the queue wait)."
    )
    return "\n".join(lines)
