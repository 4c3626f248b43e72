"""The tamper-evident audit log: append-only, hash-chained records with signed checkpoints.

Each record stores sha256(previous hash + canonical JSON of the record), so editing, deleting,
inserting or reordering records breaks the chain. Every N records or T minutes the head
(seq, hash, time) is signed (see `assistant.audit_checkpoints`) and the checkpoint stored.
Appends are serialised across threads and processes by locking the one-row `audit_head` table.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TextIO

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Row,
    String,
    Text,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from assistant.audit_checkpoints import Checkpoint, Checkpoints, Problems, canonical_json
from assistant.db import Base
from assistant.errors import AuditError, InvalidInput
from assistant.settings import Settings

logger = logging.getLogger(__name__)

GENESIS = "0" * 64  # the first record's prev_hash
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so the stored text sorts by time
BATCH = 5000
CSV_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
FIELDS = ("seq", "created_at", "actor_id", "actor_role", "action", "request_id", "client")
EXPORT_FIELDS = (*FIELDS, "details", "prev_hash", "hash")


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


class AuditHead(Base):
    """One row (id 1): the last seq and hash, and the last checkpoint. Appends lock it first."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    checkpoint_seq: Mapped[int] = mapped_column(Integer)
    checkpoint_at: Mapped[str] = mapped_column(String(32))


COLUMNS = [getattr(AuditRecord, name) for name in EXPORT_FIELDS]
READ_HEAD = select(AuditHead).where(AuditHead.id == 1)
MOVE_HEAD = update(AuditHead).where(AuditHead.id == 1)
LOCK_HEAD = MOVE_HEAD.values(seq=AuditHead.seq + bindparam("step"))


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records_checked: int
    checkpoints_checked: int
    first_bad_seq: int | None = None
    problem: str = ""

    def summary(self) -> str:
        if self.ok:
            return (
                f"audit log OK: {self.records_checked} records, "
                f"{self.checkpoints_checked} signed checkpoints verified"
            )
        where = "" if self.first_bad_seq is None else f", first bad seq {self.first_bad_seq}"
        return f"audit log TAMPERED{where}: {self.problem}"


def record_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode()).hexdigest()


def _now() -> datetime:  # the clock; tests may replace it
    return datetime.now(UTC)


def _format_time(moment: datetime) -> str:
    """UTC text; a naive datetime is taken to be UTC already."""
    return (moment.astimezone(UTC) if moment.tzinfo else moment).strftime(TIME_FORMAT)


def _hashed_fields(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in (*FIELDS, "details")}


def _to_dict(row: Row[Any]) -> dict[str, Any]:
    record = dict(row._mapping)
    with contextlib.suppress(TypeError, ValueError):  # not JSON (tampered): shown as stored
        record["details"] = json.loads(record["details"])
    return record


def _neutralise(value: object) -> object:
    """Stop a spreadsheet from running a cell as a formula."""
    return "'" + value if isinstance(value, str) and value.startswith(CSV_TRIGGERS) else value


@contextlib.contextmanager
def _fail_closed(what: str) -> Iterator[None]:
    """Any failure becomes an AuditError: callers rely on it to fail closed."""
    try:
        yield
    except AuditError:
        raise
    except Exception as exc:
        logger.error("audit: could not %s: %s", what, exc)
        raise AuditError(f"could not {what}: {exc}") from exc


class AuditLog:
    """Append-only: there is no method to change or delete a record."""

    def __init__(self, sessions: sessionmaker, settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._checkpoints = Checkpoints(settings)

    # -- writing --------------------------------------------------------------------------
    def record(
        self,
        *,
        actor_id: str,
        actor_role: str,
        action: str,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        client: str | None = None,
    ) -> int:
        """Append one record and return its seq. Raises AuditError on any failure."""
        with _fail_closed(f"write the audit record {action!r} by {actor_id!r}"):
            body = {"actor_id": actor_id, "actor_role": actor_role, "action": action}
            body |= {"request_id": request_id, "client": client}
            seq, checkpoint = self._append({**body, "details": canonical_json(details or {})})
            if checkpoint:
                self._checkpoints.append_to_file(checkpoint)
        return seq

    def _append(self, body: dict[str, Any]) -> tuple[int, Checkpoint | None]:
        for _ in range(2):
            with self._sessions() as session, session.begin():
                db = session.connection()  # Core statements: about half the cost of the ORM
                # Updating the head row first takes SQLite's write lock or PostgreSQL's row
                # lock, so appends from every thread and process queue up here.
                if db.execute(LOCK_HEAD, {"step": 1}).rowcount == 1:
                    head = db.execute(READ_HEAD).one()
                    now = _now()
                    fields = {"seq": head.seq, "created_at": _format_time(now), **body}
                    digest = record_hash(head.hash, fields)
                    record = {**fields, "prev_hash": head.hash, "hash": digest}
                    db.execute(insert(AuditRecord), [record])
                    checkpoint = None
                    if self._checkpoint_due(head, now):
                        checkpoint = self._sign(db, head.seq, digest, now)
                    else:
                        db.execute(MOVE_HEAD, {"hash": digest})
                    return head.seq, checkpoint
            self._create_head()
        raise AuditError("the audit head row could not be created")

    def _checkpoint_due(self, head: Row[Any], now: datetime) -> bool:
        """Every `checkpoint_every` records, or `checkpoint_minutes` after the last one."""
        audit = self._settings.audit
        last = datetime.strptime(head.checkpoint_at, TIME_FORMAT).replace(tzinfo=UTC)
        if head.seq - head.checkpoint_seq >= audit.checkpoint_every:
            return True
        return now - last >= timedelta(minutes=audit.checkpoint_minutes)

    def _create_head(self) -> None:
        """First use (or a lost head row): start from the last record, if any."""
        # An IntegrityError means that another process created it first.
        with contextlib.suppress(IntegrityError), self._sessions() as session, session.begin():
            if session.get(AuditHead, 1) is not None:
                return
            newest = select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc())
            last = session.execute(newest.limit(1)).first()
            session.add(
                AuditHead(
                    id=1,
                    seq=last.seq if last else 0,
                    hash=last.hash if last else GENESIS,
                    checkpoint_seq=self._checkpoints.last_seq(session),
                    checkpoint_at=_format_time(_now()),
                )
            )

    def checkpoint(self) -> Checkpoint:
        """Sign the current head now (or return the checkpoint already made at this seq)."""
        with _fail_closed("write the checkpoint"), self._sessions() as session:
            with session.begin():
                db = session.connection()
                db.execute(LOCK_HEAD, {"step": 0})  # lock the head, as an append does
                head = db.execute(READ_HEAD).first()
                if head is None or head.seq == 0:
                    raise AuditError("the audit log is empty: there is nothing to checkpoint")
                existing = self._checkpoints.get(session, head.seq)
                if existing is not None:
                    return existing
                checkpoint = self._sign(db, head.seq, head.hash, _now())
            self._checkpoints.append_to_file(checkpoint)
        return checkpoint

    def _sign(self, db: Connection, seq: int, head_hash: str, now: datetime) -> Checkpoint:
        """Sign the head, store the checkpoint and move the head on to it."""
        checkpoint = self._checkpoints.add(db, seq, head_hash, _format_time(now))
        moved = {"hash": head_hash, "checkpoint_seq": seq, "checkpoint_at": checkpoint.created_at}
        db.execute(MOVE_HEAD, moved)
        return checkpoint

    # -- verifying ------------------------------------------------------------------------
    def verify(self) -> VerifyResult:
        """Check every record and checkpoint; name the first bad seq. Streams in batches."""
        with _fail_closed("verify the audit log"):
            return self._verify()

    def _verify(self) -> VerifyResult:
        problems: Problems = []
        with self._sessions() as session:
            signed, checked = self._checkpoints.verify(session, problems)
            head = session.get(AuditHead, 1)
            records = self._check_records(session, signed, head.seq if head else 0, problems)
        if not problems:
            return VerifyResult(True, records, checked)
        seq, problem = min(problems, key=lambda p: p[0] or 0)
        return VerifyResult(False, records, checked, seq, problem)

    def _check_records(
        self, session: Session, signed: dict[int, str], head_seq: int, problems: Problems
    ) -> int:
        """Walk the chain in seq order; stop at the first bad record. Return records checked."""
        records, last_seq, prev_hash, last_good_checkpoint = 0, 0, GENESIS, 0
        try:
            for row in self._stream(session, []):
                seq, expected = row.seq, last_seq + 1
                if seq != expected:
                    if isinstance(seq, int) and seq > expected:
                        problems.append((expected, f"record {expected} is missing (deleted)"))
                    else:  # seq 0, negative or not a number
                        bad = seq if isinstance(seq, int) else expected
                        problems.append((bad, f"unexpected record {seq!r} (inserted)"))
                    return records
                if row.prev_hash != prev_hash:
                    what = f"record {seq} does not follow record {last_seq}"
                    problems.append((seq, what + " (inserted or reordered)"))
                    return records
                if record_hash(row.prev_hash, _hashed_fields(row)) != row.hash:
                    problems.append(
                        (seq, f"record {seq} was edited or forged (its hash does not match)")
                    )
                    return records
                if seq in signed:
                    if signed[seq] != row.hash:
                        # The chain was recomputed: only checkpoints bound where it changed.
                        first = last_good_checkpoint + 1
                        what = f"records {first}..{seq} were rewritten"
                        problems.append((first, what + f" (checkpoint {seq} does not match)"))
                        return records
                    last_good_checkpoint = seq
                records, last_seq, prev_hash = records + 1, seq, row.hash
        except DBAPIError as exc:  # e.g. a byte that is no longer UTF-8
            problems.append((last_seq + 1, f"the record after seq {last_seq} is unreadable: {exc}"))
            return records
        # The whole log was read: does a checkpoint or the head (read before) claim records
        # beyond its end? Does it go beyond the head (read after), which appends move along?
        claimed = max([*signed, head_seq])
        if claimed > last_seq:
            what = f"the log ends at seq {last_seq} but reached seq {claimed}"
            problems.append((last_seq + 1, what + " (truncated)"))
        head_after = session.scalar(select(AuditHead.seq).where(AuditHead.id == 1))
        if head_after is not None and last_seq > head_after:
            what = f"records {head_after + 1}..{last_seq} were not written by the application"
            problems.append((head_after + 1, what))
        return records

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

    # -- reading (callers audit the read themselves) ----------------------------------------
    def export(
        self,
        out: TextIO,
        fmt: Literal["jsonl", "csv"],
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> int:
        """Write the records with start <= created_at < end; return how many."""
        if fmt not in ("jsonl", "csv"):
            raise InvalidInput(f"unknown export format {fmt!r} (use jsonl or csv)")
        writer = csv.writer(out) if fmt == "csv" else None
        if writer:
            writer.writerow(EXPORT_FIELDS)
        count = 0
        with _fail_closed("export the audit log"), self._sessions() as session:
            for row in self._stream(session, self._time_range(start, end)):
                if writer:
                    writer.writerow([_neutralise(value) for value in row])
                else:
                    out.write(canonical_json(_to_dict(row)) + "\n")
                count += 1
        return count

    def search(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        text: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Newest first. `since` is inclusive, `until` exclusive; `text` is case-insensitive."""
        where = self._time_range(since, until)
        if actor:
            where.append(AuditRecord.actor_id == actor)
        if action:
            where.append(AuditRecord.action == action)
        if text:
            columns = (AuditRecord.details, AuditRecord.actor_id, AuditRecord.request_id)
            needle = text.lower()
            where.append(or_(*(func.lower(c).contains(needle, autoescape=True) for c in columns)))
        query = (
            select(*COLUMNS)
            .where(*where)
            .order_by(AuditRecord.seq.desc())
            .limit(max(1, min(limit, 1000)))
            .offset(max(0, offset))
        )
        with self._sessions() as session:
            return [_to_dict(row) for row in session.execute(query)]

    def get(self, seq: int) -> dict[str, Any] | None:
        with self._sessions() as session:
            row = session.execute(select(*COLUMNS).where(AuditRecord.seq == seq)).first()
        return _to_dict(row) if row else None

    def actions(self) -> list[str]:
        with self._sessions() as session:
            return list(session.scalars(select(AuditRecord.action).distinct().order_by("action")))

    @staticmethod
    def _time_range(start: datetime | None, end: datetime | None) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if start:
            where.append(AuditRecord.created_at >= _format_time(start))
        if end:
            where.append(AuditRecord.created_at < _format_time(end))
        return where
