"""The tamper-evident audit log: append-only, hash-chained records with signed checkpoints.

Each record stores sha256(previous hash + canonical JSON of the record), so editing, deleting,
inserting or reordering records breaks the chain. Every record is signed, and the newest
signed head is written outside the database (staged before the commit, moved into place
after); every N records or T minutes the head (seq, hash, time) is also signed as a stored
checkpoint (see `assistant.audit_checkpoints`). Appends are serialised across threads and
processes by locking the one-row `audit_head` table. Finding and exporting:
`assistant.audit_search`.

A record can be written in a transaction of its own (`AuditLog.record`) or in the caller's,
with the change it records (`AuditLog.transaction`): then both commit or neither does, so an
admin change whose record cannot be written is not made (fail closed).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Required, TypedDict, Unpack

from sqlalchemy import Connection, Row, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from assistant.audit_checkpoints import Checkpoint, Checkpoints, Problems, canonical_json
from assistant.audit_records import (
    GENESIS,
    TIME_FORMAT,
    AuditHead,
    AuditRecord,
    format_time,
    hashed_fields,
    record_hash,
    scrub,
)
from assistant.audit_search import AuditSearch
from assistant.audit_verify import ChainWalk, VerifyResult, result
from assistant.errors import AuditError
from assistant.settings import Settings

__all__ = ["GENESIS", "AuditLog", "AuditTransaction", "VerifyResult", "record_hash"]

logger = logging.getLogger(__name__)

READ_HEAD = select(AuditHead).where(AuditHead.id == 1)
MOVE_HEAD = update(AuditHead).where(AuditHead.id == 1)
LOCK_HEAD = MOVE_HEAD.values(seq=AuditHead.seq + bindparam("step"))


def _now() -> datetime:  # the clock; tests may replace it
    return datetime.now(UTC)


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


class RecordFields(TypedDict, total=False):
    """What the writer of a record says: who, what, and in which request."""

    actor_id: Required[str]
    actor_role: Required[str]
    action: Required[str]
    details: dict[str, Any] | None
    request_id: str | None
    client: str | None


BODY = ("actor_id", "actor_role", "action", "request_id", "client")  # as they are stored


def _writing(fields: RecordFields) -> str:
    return f"write the audit record {fields['action']!r} by {fields['actor_id']!r}"


@dataclass(frozen=True)
class _Written:
    """A record appended in an open transaction: its signed head (staged on disk) and the
    checkpoint it made, if one was due."""

    head: Checkpoint
    staged: Path
    checkpoint: Checkpoint | None


class _HeadTaken(AuditError):
    """Another process created the missing head row at the same moment: try again."""


class AuditTransaction:
    """A database transaction whose audit records commit with everything else written in
    it, or not at all (`AuditLog.transaction`). Write its records last: the audit head stays
    locked, for every writer, from the first record to the commit."""

    def __init__(
        self,
        session: Session,
        append: Callable[[Connection, dict[str, Any]], _Written],
        checkpoints: Checkpoints,
    ) -> None:
        self.session = session
        self._append = append
        self._checkpoints = checkpoints
        self.written: list[_Written] = []
        self.failed = False

    def record(self, **fields: Unpack[RecordFields]) -> int:
        """Append one record in this transaction and return its seq. Raises AuditError on
        any failure, and the transaction can then only roll back."""
        self.session.flush()  # the caller's changes (and their errors) before the head's lock
        try:
            with _fail_closed(_writing(fields)):
                body: dict[str, Any] = {name: fields.get(name) for name in BODY}
                body["details"] = canonical_json(scrub(fields.get("details") or {}))
                written = self._append(self.session.connection(), scrub(body))
        except AuditError:
            self.failed = True
            raise
        self.written.append(written)
        return written.head.seq

    def publish(self) -> None:
        """After the commit: due checkpoints to their file, the signed head into place."""
        try:
            with _fail_closed("publish the signed audit head after the commit"):
                for written in self.written:
                    if written.checkpoint:
                        self._checkpoints.append_to_file(written.checkpoint)
                    self._checkpoints.install_head(written.head, written.staged)
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the staged heads not moved into place (all of them after a rollback)."""
        for written in self.written:
            written.staged.unlink(missing_ok=True)


class AuditLog(AuditSearch):
    """Append-only: there is no method to change or delete a record."""

    def __init__(self, sessions: sessionmaker, settings: Settings) -> None:
        super().__init__(sessions)
        self._settings = settings
        self._checkpoints = Checkpoints(settings)

    # -- writing --------------------------------------------------------------------------
    def record(self, **fields: Unpack[RecordFields]) -> int:
        """Append one record in a transaction of its own and return its seq. Raises
        AuditError on any failure."""
        with _fail_closed(_writing(fields)):
            try:
                return self._record_alone(fields)
            except _HeadTaken:  # another process created the missing head row: once more
                return self._record_alone(fields)

    def _record_alone(self, fields: RecordFields) -> int:
        with self.transaction() as transaction:
            seq = transaction.record(**fields)
        return seq

    @contextlib.contextmanager
    def transaction(self, sessions: sessionmaker | None = None) -> Iterator[AuditTransaction]:
        """A transaction (on `sessions`, the same database, or the log's own) in which what
        the caller writes and the audit records it appends commit together or not at all:
        any error rolls all of it back, and a failed record keeps it from committing. After
        the commit the records' signed head is published (AuditError if that fails)."""
        with (sessions or self._sessions)() as session:
            transaction = AuditTransaction(session, self._append, self._checkpoints)
            try:
                with session.begin():
                    yield transaction
                    if transaction.failed:  # the caller went on after an AuditError
                        raise AuditError("an audit record of this transaction was not written")
            except BaseException:
                transaction.discard()
                raise
        transaction.publish()

    def _append(self, db: Connection, body: dict[str, Any]) -> _Written:
        """Append a record in the caller's transaction, its signed head staged on disk."""
        # Updating the head row first takes SQLite's write lock or PostgreSQL's row lock,
        # so appends from every thread and process queue up here.
        if db.execute(LOCK_HEAD, {"step": 1}).rowcount != 1:
            self._create_head(db)
            db.execute(LOCK_HEAD, {"step": 1})
        head = db.execute(READ_HEAD).one()
        now = _now()
        fields = {"seq": head.seq, "created_at": format_time(now), **body}
        digest = record_hash(head.hash, fields)
        signed = self._checkpoints.sign_head(head.seq, digest, fields["created_at"])
        record = {**fields, "prev_hash": head.hash, "hash": digest}
        db.execute(insert(AuditRecord), [{**record, "signature": signed.signature}])
        checkpoint = None
        if self._checkpoint_due(head, now):
            checkpoint = self._sign(db, head.seq, digest, now)
        else:
            db.execute(MOVE_HEAD, {"hash": digest})
        return _Written(signed, self._checkpoints.stage_head(signed), checkpoint)

    def _checkpoint_due(self, head: Row[Any], now: datetime) -> bool:
        """Every `checkpoint_every` records, or `checkpoint_minutes` after the last one."""
        audit = self._settings.audit
        last = datetime.strptime(head.checkpoint_at, TIME_FORMAT).replace(tzinfo=UTC)
        if head.seq - head.checkpoint_seq >= audit.checkpoint_every:
            return True
        return now - last >= timedelta(minutes=audit.checkpoint_minutes)

    def _create_head(self, db: Connection) -> None:
        """First use (or a lost head row): start from the last record, if any."""
        newest = select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc())
        last = db.execute(newest.limit(1)).first()
        row = {
            "id": 1,
            "seq": last.seq if last else 0,
            "hash": last.hash if last else GENESIS,
            "checkpoint_seq": self._checkpoints.last_seq(db),
            "checkpoint_at": format_time(_now()),
        }
        try:
            db.execute(insert(AuditHead), [row])
        except IntegrityError as exc:  # PostgreSQL: another process created it meanwhile
            raise _HeadTaken("the audit head row was created by another process") from exc

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
        checkpoint = self._checkpoints.add(db, seq, head_hash, format_time(now))
        moved = {"hash": head_hash, "checkpoint_seq": seq, "checkpoint_at": checkpoint.created_at}
        db.execute(MOVE_HEAD, moved)
        return checkpoint

    def check_writable(self) -> None:
        """Readiness: the head row can be locked for writing within the busy timeout (then
        let go), as every append does. Raises AuditError."""
        with _fail_closed("lock the audit head for writing"), self._sessions() as session:
            session.connection().execute(LOCK_HEAD, {"step": 0})
            session.rollback()

    def check_signing(self) -> None:
        """Readiness: the signing key signs and the signed head's folder is writable."""
        with _fail_closed("sign with the audit key"):
            self._checkpoints.sign_head(0, GENESIS, "")
            folder = self._settings.head_file.parent
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK | os.X_OK):
                raise AuditError(f"{folder} is not writable")

    # -- verifying ------------------------------------------------------------------------
    def verify(self) -> VerifyResult:
        """Check every record and checkpoint; name the first bad seq. Streams in batches."""
        with _fail_closed("verify the audit log"):
            return self._verify()

    def _verify(self) -> VerifyResult:
        problems: Problems = []
        # The head file first: it is written after its record commits, so never ahead.
        head_file = self._checkpoints.read_head(problems)
        public, key_problem = self._checkpoints.public_key()
        with self._sessions() as session:
            signed, checked = self._checkpoints.verify(session, problems)
            head = session.get(AuditHead, 1)
            walk = ChainWalk(record_hash, hashed_fields, GENESIS, signed, public)
            walk.run(self._stream(session, []), problems, head_file.seq if head_file else None)
            if walk.completed:
                walk.check_head_file(head_file, problems)
                self._check_ends(session, walk.last_seq, signed, head.seq if head else 0, problems)
        if key_problem and walk.saw_signature and not problems:
            problems.append((None, key_problem))
        return result(walk.records, checked, problems)

    @staticmethod
    def _check_ends(
        session: Session, last_seq: int, signed: dict[int, str], head_seq: int, problems: Problems
    ) -> None:
        """Does a checkpoint or the head (read before) claim records beyond the log's end?
        Does the log go beyond the head (read after), which appends move along?"""
        claimed = max([*signed, head_seq])
        if claimed > last_seq:
            what = f"the log ends at seq {last_seq} but reached seq {claimed}"
            problems.append((last_seq + 1, what + " (truncated)"))
        head_after = session.scalar(select(AuditHead.seq).where(AuditHead.id == 1))
        if head_after is not None and last_seq > head_after:
            what = f"records {head_after + 1}..{last_seq} were not written by the application"
            problems.append((head_after + 1, what))
