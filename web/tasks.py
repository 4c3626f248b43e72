"""A tiny Celery producer: enqueue ingestion by task name (the web never imports `worker`)."""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from assistant.settings import Settings

logger = logging.getLogger(__name__)

INGEST_TASK = "ingest_document"
# Fail fast when the broker is down: the document stays queued in the database and the
# worker re-enqueues queued documents when it starts, so nothing is lost.
RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


class IngestQueue(Protocol):
    def send_ingest(self, document_id: str) -> None:
        """Ask the worker to ingest a document. Never raises."""
        ...


class TaskSender:
    """Builds its Celery app on first use, once per process, from the shared broker settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: Any = None
        self._lock = threading.Lock()

    def _celery(self) -> Any:
        with self._lock:
            if self._app is None:
                from celery import Celery

                app = Celery("assistant-web")
                app.conf.update(self.settings.celery_config())
                self._app = app
            return self._app

    def send_ingest(self, document_id: str) -> None:
        try:
            self._celery().send_task(
                INGEST_TASK, args=[document_id], retry=True, retry_policy=RETRY_POLICY
            )
        except Exception:
            # The upload is stored and marked queued: the worker picks it up at start-up.
            logger.exception("could not enqueue document %s; it stays queued", document_id)
        else:
            logger.info("enqueued ingestion of document %s", document_id)
