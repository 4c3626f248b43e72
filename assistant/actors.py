"""Who acts (`Principal`), in which request (`request_context`), and how an admin change is
made: in one database transaction with its audit record (`AuditedService`), so that a change
whose record cannot be written is not made either (fail closed).
"""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from assistant.audit import AuditLog, AuditTransaction, RecordFields
from assistant.db import Base
from assistant.errors import AuditError, InvalidInput
from assistant.settings import Settings

OPERATOR = "operator"  # the CLI's role; never stored

# The request being served (request id, client address), set by an adapter, so every audit
# record made while serving it carries them.
request_context: ContextVar[tuple[str | None, str | None]] = ContextVar(
    "request_context", default=(None, None)
)


@dataclass(frozen=True)
class Principal:
    """Who is acting: a user, or the local operator of the CLI (full access)."""

    user_id: int | None
    username: str
    role: str

    @property
    def actor(self) -> str:
        return f"cli:{self.username}" if self.role == OPERATOR else f"user:{self.username}"

    @classmethod
    def operator(cls) -> Principal:
        try:
            name = getpass.getuser()
        except (OSError, KeyError):  # no USER variable and no passwd entry (containers)
            name = f"uid{os.getuid()}"
        return cls(user_id=None, username=name, role=OPERATOR)


def record_fields(
    actor: Principal | None, action: str, details: dict[str, Any] | None
) -> RecordFields:
    """An audit record's fields: who acts (the operator if None), in which request, what."""
    actor = actor or Principal.operator()
    request_id, client = request_context.get()
    return RecordFields(
        actor_id=actor.actor,
        actor_role=actor.role,
        action=action,
        details=details,
        request_id=request_id,
        client=client,
    )


def _reason(exc: AuditError) -> str:
    """The database's own words for a failed audit write, without the SQL."""
    cause = exc.__cause__ or exc
    words = str(getattr(cause, "orig", None) or cause).strip()
    return words.splitlines()[0] if words else type(cause).__name__


@dataclass(frozen=True)
class Change:
    """One admin change in progress: its session, and its audit record to write last."""

    session: Session
    transaction: AuditTransaction | None

    def record(self, actor: Principal | None, action: str, **details: Any) -> None:
        """Write the change's audit record in its transaction. AuditError if it cannot be
        written: the change is then rolled back with it."""
        if self.transaction is None:
            return
        try:
            self.transaction.record(**record_fields(actor, action, details))
        except AuditError as exc:
            raise AuditError(
                f"{action} was not done: its audit record could not be written ({_reason(exc)})"
            ) from exc


class AuditedService:
    """The database, the settings and the audit log, shared by the account service and the
    access service. Each change runs in `self._changing()` and ends with `change.record(...)`:
    the change and its audit record commit together, or neither does. Without an audit log
    (tests of the logic around it) nothing is recorded."""

    def __init__(
        self, sessions: sessionmaker, settings: Settings, audit_log: AuditLog | None = None
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.audit_log = audit_log

    @contextlib.contextmanager
    def _changing(self) -> Iterator[Change]:
        """A transaction for one change and its audit record (see `AuditLog.transaction`)."""
        if self.audit_log is None:
            with self.sessions.begin() as session:
                yield Change(session, None)
            return
        with self.audit_log.transaction(self.sessions) as transaction:
            yield Change(transaction.session, transaction)

    def _add_unique(
        self, kind: str, name: str, row: Base, then: Callable[[Change], None] | None = None
    ) -> None:
        """Insert a row with a unique name, then `then` (its audit record) in the same
        transaction."""
        try:
            with self._changing() as change:
                change.session.add(row)
                change.session.flush()
                if then is not None:
                    then(change)
        except IntegrityError as exc:  # also when another process added it meanwhile
            raise InvalidInput(f"{kind} {name!r} already exists") from exc
