"""Identities: users and their roles, sign-in with throttling, API tokens and the first admin
(who acts is `assistant.actors`, who may read what `assistant.access`). Admins manage the
system, auditors read the audit log, staff ask questions; the CLI acts as the local operator
with full access. Passwords are kept as scrypt hashes, API tokens and session ids as SHA-256
digests only. The last enabled admin can be neither disabled nor demoted. Every change is
committed with its audit record, or not at all.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import Boolean, ForeignKey, String, func, select
from sqlalchemy.orm import InstrumentedAttribute, Mapped, Session, mapped_column, sessionmaker

from assistant.actors import OPERATOR, AuditedService, Change, Principal
from assistant.audit import AuditLog
from assistant.db import Base, utcnow
from assistant.errors import AssistantError, ConfigurationError, InvalidInput, NotFound
from assistant.login_throttle import LoginThrottle, LoginThrottled
from assistant.passwords import dummy_hash, hash_password, validate_password, verify_password
from assistant.sessions import UserSession, close_session, open_session, revoke_all, session_digest
from assistant.settings import Settings

# Re-exported: the web adapter maps LoginThrottled to HTTP 429; who acts is `assistant.actors`.
__all__ = ["OPERATOR", "LoginThrottled", "Principal"]

ROLES = ("staff", "admin", "auditor")
TOKEN_PREFIX = "ast_"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
T = TypeVar("T")


class InvalidCredentials(AssistantError):
    """Wrong password, unknown user or disabled user: one message for all (HTTP 401)."""

    def __init__(self) -> None:
        super().__init__("invalid username or password")


# -- tables -------------------------------------------------------------------------------
class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)  # never the token
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


# -- values -------------------------------------------------------------------------------
class Serializable:
    """A mixin for frozen dataclasses that are listed as JSON."""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: times as ISO 8601 UTC, tuples as lists."""
        return {
            key: value.isoformat() + "Z" if isinstance(value, datetime) else
            list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()  # type: ignore[call-overload]
        }  # fmt: skip


@dataclass(frozen=True)
class UserInfo(Serializable):
    """A user as listed (never the password hash)."""

    id: int
    username: str
    role: str
    disabled: bool
    created_at: datetime
    groups: tuple[str, ...]


@dataclass(frozen=True)
class TokenInfo(Serializable):
    """An API token as listed (never the token or its hash)."""

    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


# -- names --------------------------------------------------------------------------------
def check_name(kind: str, name: str) -> None:
    """The rule for user, group and collection names."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid {kind} {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"invalid role {role!r}: choose one of {', '.join(ROLES)}")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def find(
    session: Session, model: type[T], column: InstrumentedAttribute[str], kind: str, name: str
) -> T:
    """The row whose unique `column` is `name`; NotFound (`no such {kind}`) if there is none."""
    row = session.scalar(select(model).where(column == name))
    if row is None:
        raise NotFound(f"no such {kind}: {name}")
    return row


def find_user(session: Session, username: str) -> User:
    return find(session, User, User.username, "user", username)


# -- the services -------------------------------------------------------------------------
class Memberships(Protocol):
    """Group membership, owned by `assistant.access.AccessService` (which imports this module,
    so it is handed in rather than imported)."""

    def join_groups(self, session: Session, user_id: int, groups: Sequence[str]) -> None: ...

    def groups_of(self, user_ids: Sequence[int]) -> Mapping[int, tuple[str, ...]]: ...


class AccountService(AuditedService):
    """Users, sign-in and API tokens. With `memberships`, a new user can join groups and
    listed users show their groups; without it they show none."""

    def __init__(
        self,
        sessions: sessionmaker,
        settings: Settings,
        audit_log: AuditLog | None = None,
        clock: Callable[[], datetime] = utcnow,  # naive UTC, like the rest of the database
        memberships: Memberships | None = None,
    ) -> None:
        super().__init__(sessions, settings, audit_log)
        self.clock = clock
        self.memberships = memberships
        self.throttle = LoginThrottle(sessions, settings.accounts, clock)

    # -- users ----------------------------------------------------------------------------
    def add_user(
        self, username: str, password: str, role: str, groups: Sequence[str] = (),
        *, actor: Principal | None = None,
    ) -> Principal:  # fmt: skip
        check_name("username", username)
        _check_role(role)
        password_hash = hash_password(password, [username])  # scrypt is slow: before
        names = sorted(set(groups))
        if names and self.memberships is None:
            raise ConfigurationError("joining groups needs the access service (build_services)")
        user = User(username=username, role=role, password_hash=password_hash)

        def join_groups_and_record(change: Change) -> None:
            if self.memberships is not None:
                self.memberships.join_groups(change.session, user.id, names)
            change.record(actor, "user.add", username=username, role=role, groups=names)

        self._add_unique("user", username, user, join_groups_and_record)
        return Principal(user.id, username, role)

    def _listed(self, users: Sequence[User]) -> list[UserInfo]:
        ids = [user.id for user in users]
        groups = self.memberships.groups_of(ids) if self.memberships and ids else {}
        return [
            UserInfo(u.id, u.username, u.role, u.disabled, u.created_at, groups.get(u.id, ()))
            for u in users
        ]

    def list_users(self) -> list[UserInfo]:
        with self.sessions() as session:
            users = session.scalars(select(User).order_by(User.username)).all()
        return self._listed(users)

    def get_user(self, username: str) -> UserInfo:
        with self.sessions() as session:
            user = find_user(session, username)
        return self._listed([user])[0]

    def _update_user(
        self, username: str, actor: Principal | None, action: str, **values: Any
    ) -> None:
        """Change a user; their sessions end with it, in the same transaction as its audit
        record. The last enabled admin can be neither disabled nor demoted."""
        enabled_admins = select(User.id).where(User.role == "admin", User.disabled.is_(False))
        with self._changing() as change:
            session = change.session
            # Lock the admins' rows first (PostgreSQL), so two admins cannot be disabled at
            # once; on SQLite the flush below takes the write lock for the same effect.
            session.execute(select(User.id).where(User.role == "admin").with_for_update())
            user = find_user(session, username)
            was_admin = user.role == "admin" and not user.disabled
            for key, value in values.items():
                setattr(user, key, value)
            if action != "user.enable":
                revoke_all(session, user.id)
            session.flush()
            if (
                was_admin
                and session.scalar(select(func.count()).select_from(enabled_admins.subquery())) == 0
            ):
                raise InvalidInput(
                    f"{username} is the last enabled admin: make another user an admin first"
                )
            details = {key: value for key, value in values.items() if key == "role"}
            change.record(actor, action, username=username, **details)

    def disable_user(self, username: str, *, actor: Principal | None = None) -> None:
        self._update_user(username, actor, "user.disable", disabled=True)

    def enable_user(self, username: str, *, actor: Principal | None = None) -> None:
        self._update_user(username, actor, "user.enable", disabled=False)

    def set_password(self, username: str, password: str, *, actor: Principal | None = None) -> None:
        password_hash = hash_password(password, [username])
        self._update_user(username, actor, "user.set_password", password_hash=password_hash)

    def set_role(self, username: str, role: str, *, actor: Principal | None = None) -> None:
        _check_role(role)
        self._update_user(username, actor, "user.set_role", role=role)

    # -- login ----------------------------------------------------------------------------
    def authenticate(self, username: str, password: str, client: str | None = None) -> Principal:
        """Check a password. The attempt is counted first (LoginThrottled: HTTP 429); the
        caller audits the outcome."""
        name = username.strip().lower()
        reservation = self.throttle.reserve(name, client)
        with self.sessions() as session:
            user = session.scalar(select(User).where(User.username == name))
        # Always do the scrypt work, so unknown and disabled users take as long as others.
        matches = verify_password(password, user.password_hash if user else dummy_hash())
        if matches and user is not None and not user.disabled:
            self.throttle.succeeded(reservation)
            return Principal(user.id, user.username, user.role)
        raise InvalidCredentials()

    # -- sessions -------------------------------------------------------------------------
    def start_session(self, user_id: int) -> str:
        """A new server-side session that ends `session_hours` from now, whatever happens."""
        lifetime = timedelta(hours=self.settings.accounts.session_hours)
        with self.sessions.begin() as session:
            return open_session(session, user_id, self.clock(), lifetime)

    def principal_for_session(self, session_id: str) -> Principal | None:
        """The session's user; None once it ended, expired or its user is disabled."""
        query = (
            select(User)
            .join(UserSession, UserSession.user_id == User.id)
            .where(UserSession.id_sha256 == session_digest(session_id))
            .where(UserSession.expires_at > self.clock())
        )
        with self.sessions() as session:
            user = session.scalar(query)
            if user is None or user.disabled:
                return None
            return Principal(user.id, user.username, user.role)

    def end_session(self, session_id: str) -> None:
        with self.sessions.begin() as session:
            close_session(session, session_id)

    def ensure_first_admin(self, *, actor: Principal | None = None) -> str | None:
        """Create user `admin` when no admin exists. Returns the password only if generated."""
        with self.sessions() as session:
            if session.scalar(select(User.id).where(User.role == "admin").limit(1)):
                return None
            if session.scalar(select(User.id).where(User.username == "admin")):
                raise ConfigurationError(
                    "no admin account exists and the name 'admin' is taken; "
                    "create one with `assistant users add NAME --role admin`"
                )
        secret = self.settings.admin_password
        password = secret.get_secret_value() if secret else secrets.token_urlsafe(18)
        try:
            validate_password(password)
        except InvalidInput as exc:
            raise ConfigurationError(f"ASSISTANT_ADMIN_PASSWORD: {exc}") from exc
        try:
            self.add_user("admin", password, "admin", actor=actor)
        except InvalidInput:  # another process created it at the same moment
            return None
        return None if secret else password

    # -- API tokens -----------------------------------------------------------------------
    def issue_token(self, username: str, name: str, *, actor: Principal | None = None) -> str:
        """A new token for the JSON API. Only its SHA-256 is kept: show it to the user once."""
        label = name.strip()
        if not label or len(label) > 64 or not label.isprintable():
            raise InvalidInput("the token name must be 1-64 printable characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._changing() as change:
            user = find_user(change.session, username)
            row = ApiToken(user_id=user.id, name=label, token_sha256=_token_hash(token))
            change.session.add(row)
            change.session.flush()
            change.record(actor, "token.issue", username=username, token_id=row.id, name=label)
        return token

    def principal_for_token(self, token: str) -> Principal | None:
        """The token's user; None for an unknown or revoked token or a disabled user."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        with self.sessions.begin() as session:
            found = session.execute(
                select(ApiToken, User)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.token_sha256 == _token_hash(token))
            ).first()
            if found is None or found.ApiToken.revoked or found.User.disabled:
                return None
            found.ApiToken.last_used_at = self.clock()
            return Principal(found.User.id, found.User.username, found.User.role)

    def revoke_token(self, token_id: int, *, actor: Principal | None = None) -> None:
        with self._changing() as change:
            row = change.session.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"no such token: {token_id}")
            row.revoked = True
            username = change.session.get_one(User, row.user_id).username
            change.record(actor, "token.revoke", username=username, token_id=token_id)

    def list_tokens(self, username: str) -> list[TokenInfo]:
        with self.sessions() as session:
            user_id = find_user(session, username).id
            query = select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)
            return [
                TokenInfo(t.id, t.name, t.created_at, t.last_used_at, t.revoked)
                for t in session.scalars(query)
            ]
