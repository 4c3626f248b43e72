"""The tamper-evident audit log: append-only, hash-chained records with signed checkpoints.

Each record stores sha256(previous hash + canonical JSON of the record), so editing, deleting,
inserting or reordering records breaks the chain. Every N records or T minutes the head
(seq, hash, time) is signed with an Ed25519 key kept outside the database; the signed
checkpoints go to a table and to a JSON-lines file that can be shipped off the box. Appends
are serialised across threads and processes by locking the one-row `audit_head` table.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TextIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
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


class AuditCheckpoint(Base):
    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    head_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(128))  # hex
    key_fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the raw public key


class AuditHead(Base):
    """One row (id 1): the last seq and hash, and the last checkpoint. Appends lock it first."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    checkpoint_seq: Mapped[int] = mapped_column(Integer)
    checkpoint_at: Mapped[str] = mapped_column(String(32))


COLUMNS = [getattr(AuditRecord, name) for name in EXPORT_FIELDS]
LOCK_HEAD = update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + bindparam("step"))


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    head_hash: str
    created_at: str
    signature: str
    key_fingerprint: str

    def payload(self) -> bytes:
        """The signed bytes: everything but the signature."""
        unsigned = {k: v for k, v in asdict(self).items() if k != "signature"}
        return canonical_json(unsigned).encode()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def canonical_json(value: Any) -> str:
    # default=str: a stray datetime or Path in details is stored as text, not lost.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def record_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode()).hexdigest()


def key_fingerprint(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


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


def _checkpoint(row: AuditCheckpoint) -> Checkpoint:
    return Checkpoint(row.seq, row.head_hash, row.created_at, row.signature, row.key_fingerprint)


def _signature_problem(checkpoint: Checkpoint, public: Ed25519PublicKey | None) -> str:
    if public is None or checkpoint.key_fingerprint != key_fingerprint(public):
        return "signed by another key"
    try:
        public.verify(bytes.fromhex(checkpoint.signature), checkpoint.payload())
    except (InvalidSignature, ValueError, TypeError):
        return "bad signature"
    return ""


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


def _load_key(path: Path) -> Ed25519PrivateKey | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if path.stat().st_mode & 0o077:
        logger.warning("the audit signing key %s is readable by other users", path)
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{path} is not an Ed25519 private key")
    return key


def _create_key(path: Path) -> Ed25519PrivateKey:
    """Write a new key with mode 0600; if another process wins the race, use its key."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)  # atomic: the key appears complete, and never overwrites one
        return key
    except FileExistsError:
        return _load_key(path) or key
    finally:
        temp.unlink()


class AuditLog:
    """Append-only: there is no method to change or delete a record."""

    def __init__(self, sessions: sessionmaker, settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._key: Ed25519PrivateKey | None = None
        self._key_lock = threading.Lock()

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
                self._append_to_file(checkpoint)
        return seq

    def _append(self, body: dict[str, Any]) -> tuple[int, Checkpoint | None]:
        for _ in range(2):
            with self._sessions() as session, session.begin():
                db = session.connection()  # Core statements: about half the cost of the ORM
                # Updating the head row first takes SQLite's write lock or PostgreSQL's row
                # lock, so appends from every thread and process queue up here.
                if db.execute(LOCK_HEAD, {"step": 1}).rowcount == 1:
                    head = db.execute(select(AuditHead).where(AuditHead.id == 1)).one()
                    now = _now()
                    fields = {"seq": head.seq, "created_at": _format_time(now), **body}
                    digest = record_hash(head.hash, fields)
                    record = {**fields, "prev_hash": head.hash, "hash": digest}
                    db.execute(insert(AuditRecord), [record])
                    checkpoint = None
                    if self._checkpoint_due(head, now):
                        checkpoint = self._sign(db, head.seq, digest, now)
                    else:
                        db.execute(update(AuditHead).where(AuditHead.id == 1), {"hash": digest})
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
        with self._sessions() as session:
            try:
                with session.begin():
                    if session.get(AuditHead, 1) is not None:
                        return
                    last = session.execute(
                        select(AuditRecord.seq, AuditRecord.hash)
                        .order_by(AuditRecord.seq.desc())
                        .limit(1)
                    ).first()
                    last_checkpoint = session.scalar(select(func.max(AuditCheckpoint.seq)))
                    session.add(
                        AuditHead(
                            id=1,
                            seq=last.seq if last else 0,
                            hash=last.hash if last else GENESIS,
                            checkpoint_seq=last_checkpoint or 0,
                            checkpoint_at=_format_time(_now()),
                        )
                    )
            except IntegrityError:
                pass  # another process created it first

    def checkpoint(self) -> Checkpoint:
        """Sign the current head now (or return the checkpoint already made at this seq)."""
        with _fail_closed("write the checkpoint"), self._sessions() as session:
            with session.begin():
                db = session.connection()
                db.execute(LOCK_HEAD, {"step": 0})  # lock the head, as an append does
                head = db.execute(select(AuditHead).where(AuditHead.id == 1)).first()
                if head is None or head.seq == 0:
                    raise AuditError("the audit log is empty: there is nothing to checkpoint")
                existing = session.get(AuditCheckpoint, head.seq)
                if existing is not None:
                    return _checkpoint(existing)
                checkpoint = self._sign(db, head.seq, head.hash, _now())
            self._append_to_file(checkpoint)
        return checkpoint

    def _sign(self, db: Connection, seq: int, head_hash: str, now: datetime) -> Checkpoint:
        """Sign the head, store the checkpoint and move the head on to it."""
        key = self._signing_key()
        fingerprint = key_fingerprint(key.public_key())
        unsigned = Checkpoint(seq, head_hash, _format_time(now), "", fingerprint)
        checkpoint = replace(unsigned, signature=key.sign(unsigned.payload()).hex())
        db.execute(insert(AuditCheckpoint), [checkpoint.to_dict()])
        moved = {"hash": head_hash, "checkpoint_seq": seq, "checkpoint_at": checkpoint.created_at}
        db.execute(update(AuditHead).where(AuditHead.id == 1), moved)
        return checkpoint

    def _append_to_file(self, checkpoint: Checkpoint) -> None:
        """After the commit, so the file never names a checkpoint the table lacks."""
        path = self._settings.checkpoint_file
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:  # one write() per line, so lines from several processes do not interleave
            os.write(fd, (canonical_json(checkpoint.to_dict()) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _signing_key(self) -> Ed25519PrivateKey:
        with self._key_lock:
            if self._key is None:
                path = self._settings.signing_key_path
                self._key = _load_key(path) or _create_key(path)
            return self._key

    # -- verifying ------------------------------------------------------------------------
    def verify(self) -> VerifyResult:
        """Check every record and checkpoint; name the first bad seq. Streams in batches."""
        with _fail_closed("verify the audit log"):
            result = self._verify()
        return result

    def _verify(self) -> VerifyResult:
        problems: list[tuple[int | None, str]] = []  # (first bad seq, what)
        # The file first: its lines are written after their rows commit, so none is missing.
        from_file = self._read_file(problems)
        with self._sessions() as session:
            query = select(AuditCheckpoint).order_by(AuditCheckpoint.seq)
            table = [_checkpoint(row) for row in session.scalars(query)]
            head = session.get(AuditHead, 1)
            signed = self._check_checkpoints(table, from_file, problems)
            records = self._check_records(session, signed, head.seq if head else 0, problems)
        checked = len(table) + len(from_file)
        if not problems:
            return VerifyResult(True, records, checked)
        seq, problem = min(problems, key=lambda p: p[0] or 0)
        return VerifyResult(False, records, checked, seq, problem)

    def _check_checkpoints(
        self,
        table: list[Checkpoint],
        from_file: list[Checkpoint],
        problems: list[tuple[int | None, str]],
    ) -> dict[int, str]:
        """Return seq -> head hash of the checkpoints whose signature is good."""
        path = self._settings.signing_key_path
        try:
            key = _load_key(path)
            public = key.public_key() if key else None
            key_problem = "" if key else f"the signing key {path} is missing"
        except Exception as exc:
            public, key_problem = None, f"the signing key {path} is unreadable: {exc}"
        signed: dict[int, str] = {}
        in_table = {c.seq for c in table}
        for where, checkpoint in [("table", c) for c in table] + [("file", c) for c in from_file]:
            trouble = key_problem or _signature_problem(checkpoint, public)
            if not trouble:  # authentic, so it binds the records even if its row is gone
                signed[checkpoint.seq] = checkpoint.head_hash
                if where == "file" and checkpoint.seq not in in_table:
                    trouble = "missing from the table"
            if trouble:
                problems.append(
                    (checkpoint.seq, f"checkpoint {checkpoint.seq} ({where}): {trouble}")
                )
        return signed

    def _check_records(
        self,
        session: Session,
        signed: dict[int, str],
        head_seq: int,
        problems: list[tuple[int | None, str]],
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

    def _read_file(self, problems: list[tuple[int | None, str]]) -> list[Checkpoint]:
        checkpoints: list[Checkpoint] = []
        try:
            text = self._settings.checkpoint_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return checkpoints
        for number, line in enumerate(text.splitlines(), 1):
            try:
                checkpoint = Checkpoint(**json.loads(line))
                if type(checkpoint.seq) is not int:
                    raise TypeError(checkpoint.seq)
                checkpoints.append(checkpoint)
            except (TypeError, ValueError):
                problems.append((None, f"checkpoint file line {number} is not a checkpoint"))
        return checkpoints

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
