"""Auditor pages: search the audit log, open one record with links to the exact passages it
showed, verify the hash chain and signatures, and export. Reading the log is itself audited."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, render_template, request

from assistant.errors import InvalidInput, NotFound
from web.auth import audit, require_role
from web.state import services

bp = Blueprint("audit", __name__, url_prefix="/audit")
PAGE_SIZE = 50


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


def _filters() -> dict[str, Any]:
    text = {
        name: request.args.get(name, "").strip() or None for name in ("actor", "action", "text")
    }
    return {**text, "since": _date("since"), "until": _date("until")}


@bp.get("")
def page() -> str:
    filters = _filters()
    try:
        page_number = max(1, int(request.args.get("page", "1")))
    except ValueError as exc:
        raise InvalidInput("page must be a number") from exc
    log = services().audit_log
    records = log.search(**filters, limit=PAGE_SIZE + 1, offset=(page_number - 1) * PAGE_SIZE)
    audit("audit.read", {"filters": {k: str(v) for k, v in filters.items() if v}})
    return render_template(
        "audit.html",
        records=records[:PAGE_SIZE],
        more=len(records) > PAGE_SIZE,
        page=page_number,
        actions=log.actions(),
        args=request.args,
    )


@bp.get("/<int:seq>")
def record(seq: int) -> str:
    found = services().audit_log.get(seq)
    if found is None:
        raise NotFound(f"no audit record {seq}")
    audit("audit.read", {"seq": seq})
    details = found["details"] if isinstance(found["details"], dict) else {}
    return render_template("audit_record.html", record=found, details=details)


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
    since, until = _date("since"), _date("until")
    buffer = io.StringIO()
    count = services().audit_log.export(buffer, fmt, since, until)  # type: ignore[arg-type]
    audit(
        "audit.export", {"format": fmt, "since": str(since), "until": str(until), "records": count}
    )
    mimetype = "text/csv" if fmt == "csv" else "application/x-ndjson"
    return Response(
        buffer.getvalue(),
        mimetype=mimetype,
        headers={"Content-Disposition": f"attachment; filename=audit.{fmt}"},
    )
