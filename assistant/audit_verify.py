"""Checking the audit log: the hash chain, the signed checkpoints, every record's signature
and the signed head file, naming the first bad seq exactly.

Record signatures are checked where the checkpoints do not already vouch for the records:
after the last checkpoint that matches (the tail), and between a good checkpoint and one
that does not match (to find the first rewritten record). Records written before records
were signed (an older version) carry no signature; once one is signed, all after must be.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Row
from sqlalchemy.exc import DBAPIError

from assistant.audit_checkpoints import (
    Checkpoint,
    Problems,
    key_fingerprint,
    signature_problem,
)

# Records held for a signature check at once; past this they are checked on the way.
PENDING_LIMIT = 10_000


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


def result(records: int, checkpoints: int, problems: Problems) -> VerifyResult:
    if not problems:
        return VerifyResult(True, records, checkpoints)
    seq, problem = min(problems, key=lambda p: p[0] or 0)
    return VerifyResult(False, records, checkpoints, seq, problem)


class ChainWalk:
    """One pass over the records in seq order (see `AuditLog.verify`)."""

    def __init__(
        self,
        record_hash: Any,
        hashed_fields: Any,
        genesis: str,
        signed: dict[int, str],
        public: Ed25519PublicKey | None,
    ) -> None:
        self.record_hash = record_hash
        self.hashed_fields = hashed_fields
        self.signed = signed  # seq -> head hash of the checkpoints with a good signature
        self.public = public
        self.fingerprint = key_fingerprint(public) if public else ""
        self.records, self.last_seq, self.prev_hash = 0, 0, genesis
        self.last_hash: dict[int, str] = {}  # seq -> hash, of the record the head file names
        self.pending: list[Row[Any]] = []  # records no good checkpoint covers yet
        self.signing_started = False
        self.completed = False  # read to the end without a bad record
        self.saw_signature = False

    def run(self, rows: Iterable[Row[Any]], problems: Problems, watch: int | None) -> None:
        """Stop at the first bad record; `watch`: a seq whose hash to remember."""
        try:
            for row in rows:
                if not self._step(row, problems):
                    return
                if row.seq == watch:
                    self.last_hash[row.seq] = row.hash
        except DBAPIError as exc:  # e.g. a byte that is no longer UTF-8
            seq = self.last_seq
            problems.append((seq + 1, f"the record after seq {seq} is unreadable: {exc}"))
            return
        self.completed = self._check_signatures(problems)

    def _step(self, row: Row[Any], problems: Problems) -> bool:
        seq, expected = row.seq, self.last_seq + 1
        if seq != expected:
            if isinstance(seq, int) and seq > expected:
                problems.append((expected, f"record {expected} is missing (deleted)"))
            else:  # seq 0, negative or not a number
                bad = seq if isinstance(seq, int) else expected
                problems.append((bad, f"unexpected record {seq!r} (inserted)"))
            return False
        if row.prev_hash != self.prev_hash:
            what = f"record {seq} does not follow record {self.last_seq}"
            problems.append((seq, what + " (inserted or reordered)"))
            return False
        if self.record_hash(row.prev_hash, self.hashed_fields(row)) != row.hash:
            problems.append((seq, f"record {seq} was edited or forged (its hash does not match)"))
            return False
        self.pending.append(row)
        self.saw_signature |= row.signature is not None
        if seq in self.signed:
            if self.signed[seq] != row.hash:
                # The chain was recomputed: the first record whose signature fails is where.
                before = len(problems)
                self._check_signatures(problems)
                if len(problems) == before:
                    first = self.pending[0].seq
                    what = f"records {first}..{seq} were rewritten"
                    problems.append((first, what + f" (checkpoint {seq} does not match)"))
                return False
            self.signing_started |= any(r.signature for r in self.pending)
            self.pending.clear()  # vouched for by the checkpoint
        elif len(self.pending) >= PENDING_LIMIT and not self._check_signatures(problems):
            return False
        self.records, self.last_seq, self.prev_hash = self.records + 1, seq, row.hash
        return True

    def _check_signatures(self, problems: Problems) -> bool:
        """Check the pending records' signatures; False (and a problem) at the first bad.
        Without the key there is nothing to check them with (the caller reports that)."""
        rows, self.pending = self.pending, []
        if self.public is None:
            return True
        for row in rows:
            if row.signature is None and not self.signing_started:
                continue  # written before records were signed
            self.signing_started = True
            head = Checkpoint(row.seq, row.hash, row.created_at, row.signature or "", "")
            problem = self._signature(head)
            if problem:
                seq = row.seq
                what = f"record {seq} was not written by the application ({problem})"
                problems.append((seq, what + "; it or the records after it were rewritten"))
                return False
        return True

    def _signature(self, head: Checkpoint) -> str:
        if not head.signature:
            return "it has no signature"
        signed = Checkpoint(
            head.seq, head.head_hash, head.created_at, head.signature, self.fingerprint
        )
        return signature_problem(signed, self.public)

    def check_head_file(self, head: Checkpoint | None, problems: Problems) -> None:
        """The signed head file: authentic, and the log reaches it with the same hash."""
        if self.public is None:
            return  # the caller reports the missing key
        if head is None:
            if self.saw_signature:
                problems.append((None, "the signed head file is missing"))
            return
        trouble = signature_problem(head, self.public)
        if trouble:
            problems.append((head.seq, f"the signed head file: {trouble}"))
        elif head.seq > self.last_seq:
            what = f"the log ends at seq {self.last_seq} but its signed head is seq {head.seq}"
            problems.append((self.last_seq + 1, what + " (truncated)"))
        elif self.last_hash.get(head.seq, head.head_hash) != head.head_hash:
            problems.append((head.seq, f"record {head.seq} differs from the signed head"))
