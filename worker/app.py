"""Celery app and tasks. Start with `assistant worker` (or `celery -A worker.app worker`)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, Task, signals

from assistant import sandbox
from assistant.audit import AuditLog
from assistant.conversations import ConversationService
from assistant.db import make_engine, make_session_factory
from assistant.errors import AssistantError, NotFound, Unavailable
from assistant.services import Services, build_services, pending_document_ids
from assistant.settings import Settings, load_settings
from worker import broker

logger = logging.getLogger(__name__)
MAX_RETRIES = 3


def _celery_config() -> dict[str, object]:
    """Read when Celery first needs its configuration, not at import time."""
    settings = load_settings()
    settings.ensure_dirs()  # the embedded queue's folders must exist before consuming
    config = settings.celery_config()
    if config["broker_url"] == "filesystem://":
        config["broker_url"] = f"{broker.SCHEME}://"  # reads only fully written messages
    return config


app = Celery("assistant")
app.add_defaults(_celery_config)


def client_for(settings: Settings) -> Celery:
    """An app that only sends, to the workers of other settings (an evaluation's scratch
    data directory, say), leaving this process's own `app` as it is."""
    settings.ensure_dirs()
    client = Celery("assistant")
    client.conf.update(settings.celery_config())
    return client


_services: Services | None = None


def services() -> Services:
    """Built on first use in each worker process (never in the parent before fork)."""
    global _services
    if _services is None:
        _services = build_services(load_settings())
    return _services


@signals.worker_process_init.connect
def _load_models(**_: Any) -> None:
    services().embedder.embed(["warm-up"])
    sandbox.start()  # the parsing helper, so the first file does not wait for it


@signals.worker_ready.connect
def _requeue_pending(**_: Any) -> None:
    # The database is the source of truth: whatever a crash or a lost message left queued,
    # parsing or embedding is sent again. Each step is a compare-and-set and every write an
    # upsert, so a duplicate message is harmless; a file that keeps killing its worker is
    # failed after `limits.max_attempts` attempts (DocumentService.ingest).
    ids = pending_document_ids(load_settings())
    for document_id in ids:
        ingest_document.delay(document_id)
    if ids:
        logger.info("re-enqueued %s pending documents", len(ids))


@signals.worker_ready.connect
def _start_retention(**_: Any) -> None:
    threading.Thread(target=_purge_periodically, name="retention", daemon=True).start()


def _purge_periodically() -> None:
    """Conversations past the retention period are deleted now and every
    `conversations.purge_interval_hours` (each run that deletes any is audited)."""
    settings = load_settings()
    # The database and the audit log only: no search index is opened in this parent process,
    # which forks new pool processes after it.
    sessions = make_session_factory(make_engine(settings.sqlalchemy_url))
    conversations = ConversationService(sessions, settings, AuditLog(sessions, settings))
    stop = threading.Event()
    while True:
        try:
            deleted = conversations.purge(None, settings.conversations.retention_days)
            if deleted:
                logger.info("retention: deleted %s conversations", deleted)
        except Exception:  # a locked database or an audit failure: try again next time
            logger.exception("retention: the conversation purge failed")
        stop.wait(settings.conversations.purge_interval_hours * 3600)


@app.task(name="ingest_document", bind=True, max_retries=MAX_RETRIES)
def ingest_document(self: Task, document_id: str, force: bool = False) -> str:
    try:
        document = services().documents.ingest(document_id, force=force)
    except NotFound:
        logger.warning("document %s no longer exists; nothing to do", document_id)
        return "missing"
    except Unavailable as exc:  # the Chroma server is down, say: later, then fail
        if self.request.retries >= MAX_RETRIES:
            services().documents.mark_failed(document_id, str(exc))
            return "failed"
        raise self.retry(exc=exc, countdown=2**self.request.retries) from exc
    except AssistantError as exc:
        services().documents.mark_failed(document_id, str(exc))
        return "failed"
    except Exception as exc:
        if self.request.retries >= MAX_RETRIES:
            logger.exception("document %s failed after %s retries", document_id, MAX_RETRIES)
            services().documents.mark_failed(document_id, f"ingestion error: {exc}")
            return "failed"
        raise self.retry(exc=exc, countdown=2**self.request.retries) from exc
    return document.status
