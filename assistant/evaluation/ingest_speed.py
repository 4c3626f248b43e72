"""Ingestion speed through the real worker: a set's corpus written out as files, uploaded
into a fresh data directory and sent to a real `assistant worker` process, timed from the
first upload to the last document indexed, with the worker's peak memory sampled from /proc
(the Celery parent, its pool processes and their parsing helpers)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from assistant.db import Document, DocumentStatus
from assistant.errors import AssistantError
from assistant.evaluation.datasets import read_jsonl
from assistant.evaluation.retrieval import corpus_uploads
from assistant.evaluation.scratch import scratch_services
from assistant.settings import Settings

logger = logging.getLogger(__name__)
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# Given the scratch settings, a function that hands one document id to their workers.
Connect = Callable[[Settings], Callable[[str], None]]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0  # the process ended between listing and reading


def tree_rss(pid: int) -> tuple[int, int]:
    """Resident bytes of a process and all its descendants: (their sum, the largest one)."""
    sizes, pending = [], [pid]
    while pending:
        current = pending.pop()
        sizes.append(_rss(current))
        pending.extend(_children(current))
    return sum(sizes), max(sizes)


def _start_worker(settings: Settings, concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ASSISTANT_DATA_DIR": str(settings.resolved_data_dir),
        "ASSISTANT_MODEL_CACHE_DIR": str(settings.models_dir),
    }
    env.pop("ASSISTANT_DATABASE_URL", None)  # the scratch directory's own SQLite database
    command = [sys.executable, "-m", "assistant.cli", "worker", "--concurrency", str(concurrency)]
    with log.open("wb") as output:
        worker = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while b" ready." not in log.read_bytes():
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise AssistantError(f"the worker did not start: {log.read_text(errors='replace')}")
        time.sleep(0.2)
    return worker


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def measure_ingestion(
    settings: Settings,
    directory: Path,
    connect: Connect,
    *,
    limit: int | None = None,
    concurrency: int = 1,
) -> dict[str, Any]:
    """Upload a BEIR-layout set's corpus (one .txt file per document) and time a real worker
    indexing it. `connect` gives the function that queues a document (the CLI: Celery's)."""
    uploads = corpus_uploads(read_jsonl(directory / "corpus.jsonl", required=("_id", "text")))
    uploads = uploads[:limit] if limit is not None else uploads
    # The worker reuses the exported embedding model instead of exporting it again.
    cached = settings.model_copy(update={"model_cache_dir": settings.models_dir})
    with scratch_services(cached, None) as svc:
        log = Path(tempfile.mkstemp(prefix="assistant-eval-worker-", suffix=".log")[1])
        worker = _start_worker(svc.settings, concurrency, log)
        send = connect(svc.settings)
        try:
            idle_sum, idle_largest = tree_rss(worker.pid)
            peak_sum, peak_largest = idle_sum, idle_largest
            started = time.perf_counter()
            for _, filename, data in uploads:
                send(svc.documents.add(filename, data).id)
            upload_seconds = time.perf_counter() - started
            while True:
                counts = svc.documents.counts()
                total, largest = tree_rss(worker.pid)
                peak_sum, peak_largest = max(peak_sum, total), max(peak_largest, largest)
                if worker.poll() is not None:
                    raise AssistantError(f"the worker stopped: {log.read_text(errors='replace')}")
                if not any(counts.get(status, 0) for status in DocumentStatus.PENDING):
                    break
                time.sleep(0.25)
            with svc.sessions() as session:
                first, last = session.execute(
                    select(func.min(Document.created_at), func.max(Document.updated_at))
                ).one()
                chunks = session.scalar(select(func.sum(Document.chunk_count))) or 0
        finally:
            _stop(worker)
            log.unlink(missing_ok=True)
    seconds = (last - first).total_seconds()
    return {
        "n_documents": len(uploads),
        "n_indexed": counts.get(DocumentStatus.INDEXED, 0),
        "n_failed": counts.get(DocumentStatus.FAILED, 0),
        "n_chunks": chunks,
        "seconds_first_upload_to_last_indexed": seconds,
        "upload_seconds": upload_seconds,
        "chunks_per_second": chunks / seconds if seconds else 0.0,
        "documents_per_minute": 60 * len(uploads) / seconds if seconds else 0.0,
        "worker_concurrency": concurrency,
        "worker_idle_rss_mib": idle_sum / 2**20,
        "worker_peak_rss_mib_all_processes": peak_sum / 2**20,
        "worker_peak_rss_mib_largest_process": peak_largest / 2**20,
        "ingest_group_documents": settings.ingest_group_documents,
        "ingest_group_bytes": settings.ingest_group_bytes,
        "embedding_backend": settings.embedding_backend,
        "embedding_batch_size": settings.embedding_batch_size,
    }
