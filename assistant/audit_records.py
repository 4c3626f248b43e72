"""The audit log's tables and how one record reads: its fields, its hash, its summary line.

`assistant.audit` writes and verifies records, `assistant.audit_search` finds and exports
them; both use what is here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, Row, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from assistant.audit_checkpoints import canonical_json
from assistant.db import Base

GENESIS = "0" * 64  # the first record's prev_hash
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so the stored text sorts by time
FIELDS = ("seq", "created_at", "actor_id", "actor_role", "action", "request_id", "client")
EXPORT_FIELDS = (*FIELDS, "details", "prev_hash", "hash", "signature")


class AuditRecord(Base):
    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # Text exactly as hashed (UTC), so any edited byte changes the hash.
    created_at: Mapped[str] = mapped_column(String(32), index=True)
    actor_id: Mapped[str] = mapped_column(String(255), index=True)
    actor_role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64), index=True)
    request_id: Mapped[str | None] = mapped_column(String(128))
    client: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # Ed25519 over (seq, hash, created_at); None on records written before records were signed.
    signature: Mapped[str | None] = mapped_column(String(128), default=None)


class AuditHead(Base):
    """One row (id 1): the last seq and hash, and the last checkpoint. Appends lock it first."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    checkpoint_seq: Mapped[int] = mapped_column(Integer)
    checkpoint_at: Mapped[str] = mapped_column(String(32))


COLUMNS = [getattr(AuditRecord, name) for name in EXPORT_FIELDS]


def format_time(moment: datetime) -> str:
    """UTC text; a naive datetime is taken to be UTC already."""
    return (moment.astimezone(UTC) if moment.tzinfo else moment).strftime(TIME_FORMAT)


def record_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode()).hexdigest()


def hashed_fields(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in (*FIELDS, "details")}


def to_dict(row: Row[Any]) -> dict[str, Any]:
    record = dict(row._mapping)
    with contextlib.suppress(TypeError, ValueError):  # not JSON (tampered): shown as stored
        record["details"] = json.loads(record["details"])
    return record


def scrub(value: Any) -> Any:
    """Text that UTF-8 can hold: a lone surrogate (which a JSON string may carry) becomes
    U+FFFD, so that a hostile question or name is recorded instead of failing the write."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {scrub(key): scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    return value


def summary(record: dict[str, Any]) -> str:
    """One line saying what a record is about, for lists and exports."""
    details = record.get("details")
    if not isinstance(details, dict):
        return ""
    for key in ("question", "filename", "group", "collection", "username", "path", "reason"):
        value = details.get(key)
        if value:
            text = str(value)
            if key == "group" and details.get("username"):
                text = f"{details['username']} in {text}"
            return text
    if "rating" in details:  # answer.feedback
        said = "helpful" if details["rating"] == 1 else "not helpful"
        return f"{said}: {details['comment']}" if details.get("comment") else said
    if "conversations" in details:  # conversation.purged
        return f"{details['conversations']} conversations past {details.get('retention_days')} days"
    if details.get("conversation_id"):
        return f"conversation {details['conversation_id']}"
    if "repeats" in details:
        return f"{details['repeats']} more like this"
    return ""
