"""`GET /healthz`: the process answers and so does the database (liveness).
`GET /readyz`: the database (a read, and a write lock on the audit head as every audited
request takes), the audit log (its signing key and folder), the broker, the vector store and
the model are all ready.

Neither needs a sign-in, so they reveal nothing else: each part is "ok" or a short fixed
reason; the details go to the server log."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify
from sqlalchemy.engine import make_url

from assistant.answering.generation import LlamaGenerator
from assistant.answering.models import PACKAGED_MODELS, available
from assistant.errors import AuditError
from assistant.services import Services
from web.state import services

logger = logging.getLogger(__name__)
bp = Blueprint("health", __name__)

BROKER_TIMEOUT = 1.0  # seconds a network broker has to answer
OK = "ok"


class NotReady(Exception):
    """A part is not ready; the message is shown to anyone, so it stays generic."""


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    try:
        services().documents.counts()
    except Exception:
        logger.exception("health check: the database does not answer")
        return jsonify(status="error", error="the database does not answer"), 503
    return jsonify(status="ok"), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    current = services()
    checks = {
        "database": check_database,
        "audit": check_audit,
        "broker": check_broker,
        "vector_store": check_vector_store,
        "model": check_model,
    }
    report: dict[str, str] = {}
    for part, check in checks.items():
        try:
            check(current)
        except NotReady as exc:
            report[part] = f"error: {exc}"
        except Exception:
            logger.exception("readiness: %s failed", part)
            report[part] = f"error: the {part.replace('_', ' ')} does not answer"
        else:
            report[part] = OK
    ready = all(state == OK for state in report.values())
    if not ready:
        logger.warning("not ready: %s", report)
    return jsonify(report), 200 if ready else 503


def check_database(current: Services) -> None:
    url = make_url(current.settings.sqlalchemy_url)
    file = url.database if url.get_backend_name() == "sqlite" else None
    # A pooled SQLite connection keeps reading a deleted file: look for the file itself.
    if file not in (None, "", ":memory:") and not Path(str(file)).is_file():
        logger.error("readiness: the database file %s is missing", file)
        raise NotReady("the database file is missing")
    current.documents.counts()
    _audit_ready(current.audit_log.check_writable, "the database cannot be written (locked)")


def check_audit(current: Services) -> None:
    _audit_ready(current.audit_log.check_signing, "the audit log cannot be signed or written")


def _audit_ready(check: Callable[[], None], reason: str) -> None:
    """Run one of the audit log's readiness checks; its details go to the log only."""
    try:
        check()
    except AuditError as exc:
        logger.error("readiness: %s", exc)
        raise NotReady(reason) from exc


def check_broker(current: Services) -> None:
    settings = current.settings
    if not settings.broker_url:
        # The embedded filesystem broker: its folders must exist and be writable.
        for name in ("queue", "processed", "control"):
            folder = settings.broker_dir / name
            if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
                logger.error("readiness: broker folder %s is missing or not writable", folder)
                raise NotReady("the broker's folders are missing or not writable")
        return
    parts = urlsplit(settings.broker_url)
    try:
        if parts.scheme in ("redis", "rediss"):
            import redis

            client = redis.Redis.from_url(
                settings.broker_url,
                socket_connect_timeout=BROKER_TIMEOUT,
                socket_timeout=BROKER_TIMEOUT,
            )
            try:
                client.ping()
            finally:
                client.close()
        elif parts.hostname and parts.port:
            socket.create_connection((parts.hostname, parts.port), BROKER_TIMEOUT).close()
        else:
            raise NotReady("the broker URL cannot be checked")
    except NotReady:
        raise
    except Exception as exc:
        logger.error("readiness: the broker does not answer: %s", exc)
        raise NotReady("the broker does not answer") from exc


def check_vector_store(current: Services) -> None:
    current.store.count()


def check_model(current: Services) -> None:
    """The GGUF files are there (or, for the packaged models, can be assembled from their
    installed packages on first use). The models themselves are not loaded."""
    for generator in (current.generator, current.large_generator):
        if not isinstance(generator, LlamaGenerator):
            continue  # a test double, or routing off: no model file
        settings = generator.settings
        if settings.model_path is not None:
            found = settings.model_path.expanduser().is_file()
        else:
            found = available(PACKAGED_MODELS[settings.model], generator.models_dir)
        if not found:
            logger.error("readiness: the model file of %s is missing", generator.name)
            raise NotReady("the model file is missing")
