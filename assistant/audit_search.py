"""Finding and exporting audit records (callers audit the read themselves): filters shared by
the page and the export, CSV with the question and answer in columns of their own, and the
check that a passage was really shown to someone (what auditors may open)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TextIO

from sqlalchemy import ColumnElement, Row, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from assistant.audit_checkpoints import canonical_json
from assistant.audit_records import (
    COLUMNS,
    EXPORT_FIELDS,
    AuditRecord,
    format_time,
    summary,
    to_dict,
)
from assistant.errors import AuditError, InvalidInput

BATCH = 5000
CSV_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# CSV: the record's fields, then what a reader looks for, then the details in full.
CSV_FIELDS = (*EXPORT_FIELDS[:7], "summary", "question", "answer", "documents", *EXPORT_FIELDS[7:])


@dataclass(frozen=True)
class AuditFilters:
    """`actor`: `user:sam`, or just `sam` (a user or a CLI operator of that name); `text`:
    case-insensitive, in the details, actor or request id; `since` inclusive, `until` not."""

    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.since:
            where.append(AuditRecord.created_at >= format_time(self.since))
        if self.until:
            where.append(AuditRecord.created_at < format_time(self.until))
        if self.actor:
            name = self.actor.strip()
            names = [name] if ":" in name else [name, f"user:{name}", f"cli:{name}"]
            where.append(AuditRecord.actor_id.in_(names))
        if self.action:
            where.append(AuditRecord.action == self.action)
        if self.text:
            columns = (AuditRecord.details, AuditRecord.actor_id, AuditRecord.request_id)
            needle = self.text.lower()
            where.append(or_(*(func.lower(c).contains(needle, autoescape=True) for c in columns)))
        return where


def _neutralise(value: object) -> object:
    """Stop a spreadsheet from running a cell as a formula."""
    return "'" + value if isinstance(value, str) and value.startswith(CSV_TRIGGERS) else value


def csv_row(record: dict[str, Any], names: dict[str, str]) -> list[object]:
    """`names`: document id -> file name, for the passages' documents."""
    details = record["details"] if isinstance(record["details"], dict) else {}
    ids = [str(p.get("document_id")) for p in _passages(details)]
    documents = sorted(
        {names.get(i, i) for i in ids}
        | ({str(details["filename"])} if details.get("filename") else set())
    )
    derived = {
        "summary": summary(record),
        "question": details.get("question"),
        "answer": details.get("answer"),
        "documents": "; ".join(documents),
    }
    raw = record["details"]
    full = {**record, **derived, "details": raw if isinstance(raw, str) else canonical_json(raw)}
    return [_neutralise(full.get(name)) for name in CSV_FIELDS]


def _passages(details: dict[str, Any]) -> list[dict[str, Any]]:
    retrieved = details.get("retrieved")
    return [p for p in retrieved if isinstance(p, dict)] if isinstance(retrieved, list) else []


Names = Callable[[Sequence[str]], dict[str, str]]


class AuditSearch:
    """The reading half of `assistant.audit.AuditLog`."""

    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def _stream(self, session: Session, where: list[ColumnElement[bool]]) -> Iterator[Row[Any]]:
        """Records in seq order, BATCH at a time (keyset pagination: flat memory)."""
        connection, last = session.connection(), None
        while True:
            query = select(*COLUMNS).where(*where).order_by(AuditRecord.seq).limit(BATCH)
            if last is not None:
                query = query.where(AuditRecord.seq > last)
            count = 0
            for row in connection.execute(query):  # Core rows, fetched lazily: fast
                yield row
                count, last = count + 1, row.seq
            if count < BATCH:
                return

    def export(
        self,
        out: TextIO,
        fmt: Literal["jsonl", "csv"],
        filters: AuditFilters | None = None,
        names: Names | None = None,
    ) -> int:
        """Write the records that match `filters` (all without), oldest first; return how
        many. CSV names the passages' documents through `names` (document ids -> names)."""
        known: dict[str, str] = {}
        if fmt not in ("jsonl", "csv"):
            raise InvalidInput(f"unknown export format {fmt!r} (use jsonl or csv)")
        writer = csv.writer(out) if fmt == "csv" else None
        if writer:
            writer.writerow(CSV_FIELDS)
        count = 0
        try:
            with self._sessions() as session:
                for row in self._stream(session, (filters or AuditFilters()).where()):
                    record = to_dict(row)
                    if writer:
                        details = record["details"] if isinstance(record["details"], dict) else {}
                        ids = {str(p.get("document_id")) for p in _passages(details)} - set(known)
                        if ids and names is not None:
                            known |= {i: i for i in ids} | names(sorted(ids))
                        writer.writerow(csv_row(record, known))
                    else:
                        out.write(canonical_json(record) + "\n")
                    count += 1
        except Exception as exc:
            raise AuditError(f"could not export the audit log: {exc}") from exc
        return count

    def search(
        self,
        filters: AuditFilters | None = None,
        *,
        limit: int = 50,
        offset: int = 0,
        **criteria: Any,
    ) -> list[dict[str, Any]]:
        """Newest first; `criteria` are AuditFilters' fields (`action="question"`)."""
        query = (
            select(*COLUMNS)
            .where(*(filters or AuditFilters(**criteria)).where())
            .order_by(AuditRecord.seq.desc())
            .limit(max(1, min(limit, 1000)))
            .offset(max(0, offset))
        )
        with self._sessions() as session:
            return [to_dict(row) for row in session.execute(query)]

    def get(self, seq: int) -> dict[str, Any] | None:
        with self._sessions() as session:
            row = session.execute(select(*COLUMNS).where(AuditRecord.seq == seq)).first()
        return to_dict(row) if row else None

    def actions(self) -> list[str]:
        with self._sessions() as session:
            return list(session.scalars(select(AuditRecord.action).distinct().order_by("action")))

    def was_retrieved(self, chunk_id: str) -> bool:
        """Did a question's record list this passage among those retrieved? The details are
        parsed: a question that merely contains the id does not count."""
        if not chunk_id:
            return False
        needle = AuditFilters(action="question", text=json.dumps(chunk_id)).where()
        with self._sessions() as session:
            for row in self._stream(session, needle):
                details = to_dict(row)["details"]
                retrieved = details.get("retrieved", []) if isinstance(details, dict) else []
                if any(isinstance(p, dict) and p.get("chunk_id") == chunk_id for p in retrieved):
                    return True
        return False
