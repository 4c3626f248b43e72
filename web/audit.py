"""Auditor pages: search the audit log, open one record with links to the exact passages it
showed, verify the hash chain and signatures, and export. Reading the log is itself audited."""

from __future__ import annotations

import io
from datetime import datetime

from flask import Blueprint, Response, render_template, request

from assistant.audit_records import summary
from assistant.audit_search import AuditFilters
from assistant.errors import InvalidInput, NotFound
from web.auth import audit, require_role
from web.state import services

bp = Blueprint("audit", __name__, url_prefix="/audit")
PAGE_SIZE = 50
MAX_SEQ = 2**31 - 1  # the column's range on PostgreSQL; larger numbers are simply not found
FILTER_NAMES = ("actor", "action", "text", "since", "until")


@bp.before_request
@require_role("auditor", "admin")
def _auditors_only() -> None:
    return None


def _date(name: str) -> datetime | None:
    value = request.args.get(name, "").strip()
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(f"{name}: {value!r} is not a date like 2026-11-25") from exc


def _filters() -> AuditFilters:
    """The page's filters, the same for the list and both exports."""
    text = {
        name: request.args.get(name, "").strip()[:200] or None
        for name in ("actor", "action", "text")
    }
    return AuditFilters(**text, since=_date("since"), until=_date("until"))


def _described(filters: AuditFilters) -> dict[str, str]:
    return {name: str(value) for name in FILTER_NAMES if (value := getattr(filters, name))}


@bp.get("")
def page() -> str:
    filters = _filters()
    try:
        page_number = max(1, int(request.args.get("page", "1")))
    except ValueError as exc:
        raise InvalidInput("page must be a number") from exc
    log = services().audit_log
    records = log.search(filters, limit=PAGE_SIZE + 1, offset=(page_number - 1) * PAGE_SIZE)
    audit("audit.read", {"filters": _described(filters)})
    shown = [{**r, "summary": summary(r)} for r in records[:PAGE_SIZE]]
    return render_template(
        "audit.html",
        records=shown,
        more=len(records) > PAGE_SIZE,
        page=page_number,
        actions=log.actions(),
        args=request.args,
        filters={name: request.args.get(name, "") for name in FILTER_NAMES},
    )


@bp.get(f"/<int(max={MAX_SEQ}):seq>")
def record(seq: int) -> str:
    found = services().audit_log.get(seq)
    if found is None:
        raise NotFound(f"no audit record {seq}")
    audit("audit.read", {"seq": seq})
    details = found["details"] if isinstance(found["details"], dict) else {}
    retrieved = details.get("retrieved")
    ids = (
        [p.get("document_id") for p in retrieved if isinstance(p, dict)]
        if isinstance(retrieved, list)
        else []
    )
    names = services().documents.filenames([i for i in ids if isinstance(i, str)])
    return render_template("audit_record.html", record=found, details=details, names=names)


@bp.post("/verify")
def verify() -> str:
    result = services().audit_log.verify()
    audit("audit.verify", {"ok": result.ok, "first_bad_seq": result.first_bad_seq})
    return render_template("audit_verify.html", result=result)


@bp.get("/export")
def export() -> Response:
    fmt = request.args.get("format", "jsonl")
    if fmt not in ("jsonl", "csv"):
        raise InvalidInput("format must be jsonl or csv")
    filters = _filters()
    buffer = io.StringIO()
    current = services()
    count = current.audit_log.export(buffer, fmt, filters, current.documents.filenames)  # type: ignore[arg-type]
    audit("audit.export", {"format": fmt, "filters": _described(filters), "records": count})
    mimetype = "text/csv" if fmt == "csv" else "application/x-ndjson"
    return Response(
        buffer.getvalue(),
        mimetype=mimetype,
        headers={"Content-Disposition": f"attachment; filename=audit.{fmt}"},
    )
