"""`GET /metrics` in the Prometheus text format (version 0.0.4), written by hand.

Question counters, latency histograms and the answer queue are kept in memory **per web
process** (each gunicorn worker process reports its own; `assistant serve` starts one).
Document counts and ingestion figures are read from the database, so every process reports
the same ones.

Who may read it: an admin (session or `Authorization: Bearer` API token), or a scraper on
this machine talking to the app's port directly (a loopback client address and no
X-Forwarded-For / X-Real-IP / Forwarded header). A request relayed by the reverse proxy
carries such a header, so the proxy does not make /metrics public.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable
from datetime import timedelta

from flask import Blueprint, Flask, Response, current_app, g, request
from sqlalchemy import func, select

from assistant.db import Document, DocumentStatus, utcnow
from assistant.services import Services
from web.limits import AnswerSlots, load_control
from web.state import services

logger = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)

EXTENSION = "assistant.metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; answers on 2 cores take from a fraction of a second to tens of seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
FORWARDING_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")
# Series shown from the start, before anything happened, so rates and alerts have a base.
KNOWN_OUTCOMES = (
    ("answered", "none"),
    ("refused", "capacity"),
    ("refused", "wait_timeout"),
    ("refused", "rate_limit"),
)
RECENT = timedelta(hours=1)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Histogram:
    def __init__(self, buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        lines = [
            f'{name}_bucket{{le="{_number(bound)}"}} {count}'
            for bound, count in zip(self.bounds, self.counts, strict=True)
        ]
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {_number(round(self.total, 6))}")
        lines.append(f"{name}_count {self.count}")
        return lines


class Metrics:
    """The counters and histograms of this process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.questions: dict[tuple[str, str], int] = dict.fromkeys(KNOWN_OUTCOMES, 0)
        self.wait = Histogram()
        self.first_event = Histogram()
        self.total = Histogram()

    def question(self, outcome: str, reason: str = "none") -> None:
        with self._lock:
            key = (outcome, reason)
            self.questions[key] = self.questions.get(key, 0) + 1

    def timings(self, wait: float, first_event: float | None, total: float) -> None:
        with self._lock:
            self.wait.observe(wait)
            if first_event is not None:
                self.first_event.observe(first_event)
            self.total.observe(total)

    def lines(self) -> list[str]:
        with self._lock:
            lines = [
                "# HELP assistant_questions_total Questions received, by outcome "
                "(answered, declined, refused, failed) and reason.",
                "# TYPE assistant_questions_total counter",
            ]
            for (outcome, reason), count in sorted(self.questions.items()):
                labels = f'outcome="{_label(outcome)}",reason="{_label(reason)}"'
                lines.append(f"assistant_questions_total{{{labels}}} {count}")
            for name, histogram, what in (
                ("assistant_answer_wait_seconds", self.wait, "Time a question waited for a slot."),
                (
                    "assistant_answer_first_event_seconds",
                    self.first_event,
                    "From the request to its answer event (audited and ready to send).",
                ),
                ("assistant_answer_seconds", self.total, "From the request to the stream's end."),
            ):
                lines += [f"# HELP {name} {what}", f"# TYPE {name} histogram"]
                lines += histogram.lines(name)
        return lines


def _gauge(name: str, what: str, values: dict[str, float] | float, label: str = "") -> list[str]:
    lines = [f"# HELP {name} {what}", f"# TYPE {name} gauge"]
    if isinstance(values, dict):
        lines += [f'{name}{{{label}="{_label(k)}"}} {_number(v)}' for k, v in values.items()]
    else:
        lines.append(f"{name} {_number(values)}")
    return lines


def _queue_lines(slots: AnswerSlots) -> list[str]:
    return [
        *_gauge("assistant_answers_in_progress", "Answers being prepared now.", slots.running),
        *_gauge("assistant_answers_waiting", "Questions waiting for a slot.", slots.waiting),
        *_gauge("assistant_answers_max_concurrent", "Answer slots.", slots.concurrent),
        *_gauge("assistant_answers_max_waiting", "Room in the queue.", slots.max_waiting),
    ]


def _recent_ingestion(services: Services) -> dict[str, int]:
    """Documents (any version) whose ingestion ended in the last hour, indexed or failed."""
    finished = (DocumentStatus.INDEXED, DocumentStatus.FAILED)
    query = (
        select(Document.status, func.count())
        .where(Document.status.in_(finished), Document.updated_at >= utcnow() - RECENT)
        .group_by(Document.status)
    )
    with services.sessions() as session:
        rows = dict(session.execute(query).all())
    return {status: int(rows.get(status, 0)) for status in finished}


def _document_lines(services: Services) -> list[str]:
    try:
        counts = services.documents.counts()
        recent = _recent_ingestion(services)
    except Exception:
        logger.exception("metrics: the database does not answer")
        return _gauge("assistant_database_up", "The database answers.", 0)
    return [
        *_gauge("assistant_database_up", "The database answers.", 1),
        *_gauge(
            "assistant_documents",
            "Current document versions by ingestion status.",
            dict(counts),
            "status",
        ),
        *_gauge(
            "assistant_ingestion_finished_last_hour",
            "Documents whose ingestion ended in the last hour (throughput and failures).",
            dict(recent),
            "status",
        ),
        *_gauge(
            "assistant_ingestion_failures",
            "Current document versions whose ingestion failed.",
            counts.get(DocumentStatus.FAILED, 0),
        ),
    ]


def _from_loopback() -> bool:
    """Straight from this machine: not relayed by a reverse proxy."""
    if any(header in request.headers for header in FORWARDING_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@bp.get("/metrics", endpoint="metrics")
def metrics_view() -> Response:
    who = g.get("principal")
    if not (who is not None and who.role == "admin") and not _from_loopback():
        status = 401 if who is None else 403
        message = "metrics are for admins (sign in or send an admin API token)\n"
        return Response(message, status=status, content_type="text/plain; charset=utf-8")
    lines = [
        *metrics().lines(),
        *_queue_lines(load_control().slots),
        *_document_lines(services()),
    ]
    response = Response("\n".join(lines) + "\n", content_type=CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-store"
    return response


def metrics() -> Metrics:
    collected: Metrics = current_app.extensions[EXTENSION]
    return collected


def init_metrics(app: Flask) -> None:
    app.extensions[EXTENSION] = Metrics()
    app.register_blueprint(bp)
