"""The tamper-evident audit log: append-only, hash-chained records with signed checkpoints.

Each record stores sha256(previous hash + canonical JSON of the record), so editing, deleting,
inserting or reordering records breaks the chain. Every record is signed, and after each
commit the newest signed head is written outside the database; every N records or T minutes
the head (seq, hash, time) is also signed as a stored checkpoint (see
`assistant.audit_checkpoints`). Appends are serialised across threads and processes by
locking the one-row `audit_head` table. Finding and exporting: `assistant.audit_search`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

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

__all__ = ["GENESIS", "AuditLog", "VerifyResult", "record_hash"]

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


class AuditLog(AuditSearch):
    """Append-only: there is no method to change or delete a record."""

    def __init__(self, sessions: sessionmaker, settings: Settings) -> None:
        super().__init__(sessions)
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
            body = scrub({**body, "details": canonical_json(scrub(details or {}))})
            head, checkpoint = self._append(body)
            if checkpoint:
                self._checkpoints.append_to_file(checkpoint)
            self._checkpoints.write_head(head)
        return head.seq

    def _append(self, body: dict[str, Any]) -> tuple[Checkpoint, Checkpoint | None]:
        for _ in range(2):
            with self._sessions() as session, session.begin():
                db = session.connection()  # Core statements: about half the cost of the ORM
                # Updating the head row first takes SQLite's write lock or PostgreSQL's row
                # lock, so appends from every thread and process queue up here.
                if db.execute(LOCK_HEAD, {"step": 1}).rowcount == 1:
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
                    return signed, checkpoint
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
                    checkpoint_at=format_time(_now()),
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
