"""Signed checkpoints of the audit log: their Ed25519 key, their table and their files.

A checkpoint signs the head of the hash chain (seq, hash, time) with an Ed25519 key kept
outside the database. It is stored in a table, in the same transaction as the record it
signs, and after the commit appended to a JSON-lines file that can be shipped off the box.
`assistant.audit` decides when to make one and checks the records against them.

Every record is signed too, the same way (its seq, hash and time), and the newest such signed
head is kept in a small file outside the database (`head_file`): written beside it before the
commit, moved into place after. A record rewritten without the key fails its signature,
which names it exactly; records deleted from the end, with the head row moved back, fall
short of the signed head file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Integer, String, func, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from assistant.db import Base
from assistant.errors import AuditError
from assistant.settings import Settings

logger = logging.getLogger(__name__)

Problems = list[tuple[int | None, str]]  # what a verify found: (first bad seq, what)


def canonical_json(value: Any) -> str:
    """The text that record hashes and checkpoint signatures are computed over."""
    # default=str: a stray datetime or Path in details is stored as text, not lost.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


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


class AuditCheckpoint(Base):
    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    head_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(128))  # hex
    key_fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the raw public key


def _from_row(row: AuditCheckpoint) -> Checkpoint:
    return Checkpoint(row.seq, row.head_hash, row.created_at, row.signature, row.key_fingerprint)


def key_fingerprint(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def signature_problem(checkpoint: Checkpoint, public: Ed25519PublicKey | None) -> str:
    """Empty if `checkpoint` (or a record's signed head) was signed by `public`'s key."""
    if public is None or checkpoint.key_fingerprint != key_fingerprint(public):
        return "signed by another key"
    try:
        public.verify(bytes.fromhex(checkpoint.signature), checkpoint.payload())
    except (InvalidSignature, ValueError, TypeError):
        return "bad signature"
    return ""


def _write(path: Path, data: bytes, flags: int, sync: bool = True) -> None:
    """One whole write() and (unless `sync` is False) an fsync, to a file created with mode
    0600 in a 0700 directory."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o600)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(f"{path}: short write")
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


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
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    _write(temp, pem, os.O_EXCL)
    try:
        os.link(temp, path)  # atomic: the key appears complete, and never overwrites one
        return key
    except FileExistsError:
        return _load_key(path) or key
    finally:
        temp.unlink()


class Checkpoints:
    """The checkpoint table, the file at `settings.checkpoint_file`, and the signing key at
    `settings.signing_key_path` (made on first use)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._key: Ed25519PrivateKey | None = None
        self._key_lock = threading.Lock()

    # -- writing --------------------------------------------------------------------------
    def add(self, db: Connection, seq: int, head_hash: str, created_at: str) -> Checkpoint:
        """Sign the head and store the checkpoint, in the caller's transaction."""
        key = self._signing_key()
        unsigned = Checkpoint(seq, head_hash, created_at, "", key_fingerprint(key.public_key()))
        checkpoint = replace(unsigned, signature=key.sign(unsigned.payload()).hex())
        db.execute(insert(AuditCheckpoint), [checkpoint.to_dict()])
        return checkpoint

    def sign_head(self, seq: int, head_hash: str, created_at: str) -> Checkpoint:
        """The head signed, not stored: each record carries one (microseconds of work)."""
        key = self._signing_key()
        unsigned = Checkpoint(seq, head_hash, created_at, "", key_fingerprint(key.public_key()))
        return replace(unsigned, signature=key.sign(unsigned.payload()).hex())

    def stage_head(self, head: Checkpoint) -> Path:
        """Before the commit: the signed head written to a file of its own beside the head
        file, so that a full disk or an unwritable folder fails the transaction instead of
        a committed record. `install_head` syncs it and moves it into place after the commit
        (not here: the audit head's lock is held until the commit)."""
        path = self._settings.head_file
        staged = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{head.seq}")
        try:
            _write(staged, canonical_json(head.to_dict()).encode(), os.O_TRUNC, sync=False)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return staged

    def install_head(self, head: Checkpoint, staged: Path) -> None:
        """After the commit: the signed head file moves forward only (under a lock, since
        processes commit in seq order but may get here in another)."""
        path = self._settings.head_file
        fd = os.open(staged, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        lock = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.read_head([])
            if current is not None and current.seq >= head.seq:
                staged.unlink(missing_ok=True)
                return
            staged.replace(path)  # atomic: the file is always one whole signed head
        finally:
            os.close(lock)

    def read_head(self, problems: Problems) -> Checkpoint | None:
        """The signed head file's contents (not yet checked against the key)."""
        try:
            text = self._settings.head_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        try:
            head = Checkpoint(**json.loads(text))
            if type(head.seq) is not int:
                raise TypeError(head.seq)
            return head
        except (TypeError, ValueError):
            problems.append((None, f"the signed head file {self._settings.head_file} is damaged"))
            return None

    def public_key(self) -> tuple[Ed25519PublicKey | None, str]:
        """The key on disk to check signatures with, or why there is none."""
        path = self._settings.signing_key_path
        try:
            key = _load_key(path)
        except Exception as exc:
            return None, f"the signing key {path} is unreadable: {exc}"
        if key is None:
            return None, f"the signing key {path} is missing"
        return key.public_key(), ""

    def _signing_key(self) -> Ed25519PrivateKey:
        with self._key_lock:
            if self._key is None:
                path = self._settings.signing_key_path
                self._key = _load_key(path) or _create_key(path)
            return self._key

    def append_to_file(self, checkpoint: Checkpoint) -> None:
        """Call it after the commit, so the file never names a checkpoint the table lacks."""
        # One write() per line, so lines from several processes do not interleave.
        line = canonical_json(checkpoint.to_dict()) + "\n"
        _write(self._settings.checkpoint_file, line.encode(), os.O_APPEND)

    # -- reading --------------------------------------------------------------------------
    def get(self, session: Session, seq: int) -> Checkpoint | None:
        row = session.get(AuditCheckpoint, seq)
        return _from_row(row) if row is not None else None

    def last_seq(self, session: Session | Connection) -> int:
        return session.scalar(select(func.max(AuditCheckpoint.seq))) or 0

    def verify(self, session: Session, problems: Problems) -> tuple[dict[int, str], int]:
        """Check the table's and the file's checkpoints against the key on disk.

        Return seq -> head hash of those whose signature is good, and how many were checked.
        """
        # The file first: its lines are written after their rows commit, so none is missing.
        from_file = self._read_file(problems)
        query = select(AuditCheckpoint).order_by(AuditCheckpoint.seq)
        table = [_from_row(row) for row in session.scalars(query)]
        return self._check(table, from_file, problems), len(table) + len(from_file)

    def _read_file(self, problems: Problems) -> list[Checkpoint]:
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

    def _check(
        self, table: list[Checkpoint], from_file: list[Checkpoint], problems: Problems
    ) -> dict[int, str]:
        """Return seq -> head hash of the checkpoints whose signature is good."""
        public, key_problem = self.public_key()
        signed: dict[int, str] = {}
        in_table = {c.seq for c in table}
        for where, checkpoint in [("table", c) for c in table] + [("file", c) for c in from_file]:
            trouble = key_problem or signature_problem(checkpoint, public)
            if not trouble:  # authentic, so it binds the records even if its row is gone
                signed[checkpoint.seq] = checkpoint.head_hash
                if where == "file" and checkpoint.seq not in in_table:
                    trouble = "missing from the table"
            if trouble:
                problems.append(
                    (checkpoint.seq, f"checkpoint {checkpoint.seq} ({where}): {trouble}")
                )
        return signed
