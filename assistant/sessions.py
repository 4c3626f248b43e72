"""Server-side sign-in sessions. The browser's cookie holds only a random session id; the
database holds its SHA-256, its user and its absolute expiry. Every request looks it up, so a
session ends for good when it is signed out, expires, or its user's password, role or
enabled state changes (`revoke_all`, in the same transaction as that change)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, String, delete
from sqlalchemy.orm import Mapped, Session, mapped_column

from assistant.db import Base

SESSION_ID_BYTES = 32


class UserSession(Base):
    __tablename__ = "user_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)  # never the id
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column(index=True)


def session_digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def open_session(session: Session, user_id: int, now: datetime, lifetime: timedelta) -> str:
    """A new session for the user, in the caller's transaction; returns its id (once).
    Sessions that have expired are removed on the way."""
    session.execute(delete(UserSession).where(UserSession.expires_at <= now))
    session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
    session.add(
        UserSession(
            id_sha256=session_digest(session_id),
            user_id=user_id,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return session_id


def close_session(session: Session, session_id: str) -> None:
    session.execute(delete(UserSession).where(UserSession.id_sha256 == session_digest(session_id)))


def revoke_all(session: Session, user_id: int) -> None:
    """End every session of a user, in the caller's transaction."""
    session.execute(delete(UserSession).where(UserSession.user_id == user_id))
