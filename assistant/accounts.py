"""Users, roles, groups, collections and API tokens: who may read which collection.

Staff read the collections their groups may read; admins read everything and manage the
system; auditors read the audit log only. The CLI acts as the local operator, with full
access. Passwords are stored as scrypt hashes and API tokens as SHA-256 digests only.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import math
import os
import re
import secrets
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Boolean, Column, ForeignKey, Index, String, Table, Text, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, selectinload, sessionmaker

from assistant.db import Base, utcnow
from assistant.errors import AssistantError, ConfigurationError, InvalidInput, NotFound
from assistant.settings import Settings

ROLES = ("staff", "admin", "auditor")
OPERATOR = "operator"  # the CLI's role; never stored
DEFAULT_COLLECTION = "default"
TOKEN_PREFIX = "ast_"
MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH = 12, 1024
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
T = TypeVar("T")


class InvalidCredentials(AssistantError):
    """Wrong password, unknown user or disabled user: one message for all (HTTP 401)."""

    def __init__(self) -> None:
        super().__init__("invalid username or password")


class LoginThrottled(AssistantError):
    """Too many failed logins for this account within the window (HTTP 429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} seconds")
        self.retry_after = retry_after


# -- tables -------------------------------------------------------------------------------
group_members = Table(
    "group_members",
    Base.metadata,
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
)
# The groups that may read each collection.
collection_readers = Table(
    "collection_readers",
    Base.metadata,
    Column("collection_id", ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    groups: Mapped[list[Group]] = relationship(
        secondary=group_members, back_populates="members", order_by="Group.name"
    )


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    members: Mapped[list[User]] = relationship(
        secondary=group_members, back_populates="groups", order_by="User.username"
    )
    collections: Mapped[list[Collection]] = relationship(
        secondary=collection_readers, back_populates="readers"
    )


class Collection(Base):
    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    readers: Mapped[list[Group]] = relationship(
        secondary=collection_readers, back_populates="collections", order_by="Group.name"
    )


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)  # never the token
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class LoginFailure(Base):
    """Failed logins, kept in the database so throttling holds across processes."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_username_at", "username", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(index=True)
    client: Mapped[str | None] = mapped_column(String(64), default=None)


# How users, groups and collections are found by name, and what messages call them.
_BY_NAME: dict[type, tuple[Any, str]] = {
    User: (User.username, "user"),
    Group: (Group.name, "group"),
    Collection: (Collection.name, "collection"),
}


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


class _Plain:
    def to_dict(self) -> dict[str, object]:
        """JSON-ready: times as ISO 8601 UTC, tuples as lists."""
        return {
            key: value.isoformat() + "Z" if isinstance(value, datetime) else
            list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()  # type: ignore[call-overload]
        }  # fmt: skip


@dataclass(frozen=True)
class UserInfo(_Plain):
    """A user as listed (never the password hash)."""

    id: int
    username: str
    role: str
    disabled: bool
    created_at: datetime
    groups: tuple[str, ...]

    @classmethod
    def of(cls, user: User) -> UserInfo:
        groups = tuple(group.name for group in user.groups)
        return cls(user.id, user.username, user.role, user.disabled, user.created_at, groups)


@dataclass(frozen=True)
class GroupInfo(_Plain):
    name: str
    members: tuple[str, ...]  # usernames


@dataclass(frozen=True)
class CollectionInfo(_Plain):
    name: str
    description: str
    readers: tuple[str, ...]  # group names


@dataclass(frozen=True)
class TokenInfo(_Plain):
    """An API token as listed (never the token or its hash)."""

    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


# -- passwords and names ------------------------------------------------------------------
def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    data = password.encode("utf-8", "surrogatepass")
    return hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=length)


def validate_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"the password must be at most {MAX_PASSWORD_LENGTH} characters long")


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$hash` (base64 salt and hash); the password is validated first."""
    validate_password(password)
    salt = os.urandom(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P, 32)
    encoded = [base64.b64encode(value).decode() for value in (salt, digest)]
    return "$".join(["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), *encoded])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        want = base64.b64decode(expected, validate=True)
        got = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p), 32)
    except ValueError:  # a malformed stored hash (binascii.Error is a ValueError too)
        return False
    return scheme == "scrypt" and hmac.compare_digest(got, want)


@cache
def _dummy_hash() -> str:
    """Checked against for unknown users, so timing does not tell which names exist."""
    return hash_password(secrets.token_urlsafe(16))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _check_name(kind: str, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid {kind} {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"invalid role {role!r}: choose one of {', '.join(ROLES)}")


# -- the service --------------------------------------------------------------------------
class AccountService:
    """Accounts and access rules. Each change is reported after its commit, as
    `audit(actor=principal_or_None, action="user.add", details={...})`."""

    def __init__(
        self,
        sessions: sessionmaker,
        settings: Settings,
        audit: Callable[..., Any] | None = None,
        clock: Callable[[], datetime] = utcnow,  # naive UTC, like the rest of the database
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.audit = audit
        self.clock = clock
        self._default_ready = False

    def _report(self, actor: Principal | None, action: str, **details: Any) -> None:
        if self.audit is not None:
            self.audit(actor=actor, action=action, details=details)

    @staticmethod
    def _get(session: Session, model: type[T], name: str, *options: Any) -> T:
        """A user, group or collection by name; NotFound if there is none."""
        column, kind = _BY_NAME[model]
        row = session.scalar(select(model).where(column == name).options(*options))
        if row is None:
            raise NotFound(f"no such {kind}: {name}")
        return row

    def _add_unique(
        self, kind: str, name: str, row: Base, then: Callable[[Session], None] | None = None
    ) -> None:
        """Insert a row with a unique name (then `then` in the same transaction)."""
        try:
            with self.sessions.begin() as session:
                session.add(row)
                session.flush()
                if then is not None:
                    then(session)
        except IntegrityError as exc:  # also when another process added it meanwhile
            raise InvalidInput(f"{kind} {name!r} already exists") from exc

    # -- users ----------------------------------------------------------------------------
    def add_user(
        self, username: str, password: str, role: str, groups: Sequence[str] = (),
        *, actor: Principal | None = None,
    ) -> Principal:  # fmt: skip
        _check_name("username", username)
        _check_role(role)
        password_hash = hash_password(password)  # before the transaction: scrypt is slow
        names = sorted(set(groups))
        user = User(username=username, role=role, password_hash=password_hash)

        def join_groups(session: Session) -> None:
            user.groups = [self._get(session, Group, name) for name in names]

        self._add_unique("user", username, user, join_groups)
        self._report(actor, "user.add", username=username, role=role, groups=names)
        return Principal(user.id, username, role)

    def list_users(self) -> list[UserInfo]:
        with self.sessions() as session:
            query = select(User).options(selectinload(User.groups)).order_by(User.username)
            return [UserInfo.of(user) for user in session.scalars(query)]

    def get_user(self, username: str) -> UserInfo:
        with self.sessions() as session:
            return UserInfo.of(self._get(session, User, username, selectinload(User.groups)))

    def get_principal(self, user_id: int) -> Principal | None:
        """The current principal of a logged-in user (for sessions); None if gone or disabled."""
        with self.sessions() as session:
            user = session.get(User, user_id)
            if user is None or user.disabled:
                return None
            return Principal(user.id, user.username, user.role)

    def _update_user(
        self, username: str, actor: Principal | None, action: str, **values: Any
    ) -> None:
        with self.sessions.begin() as session:
            user = self._get(session, User, username)
            for key, value in values.items():
                setattr(user, key, value)
        details = {key: value for key, value in values.items() if key == "role"}
        self._report(actor, action, username=username, **details)

    def disable_user(self, username: str, *, actor: Principal | None = None) -> None:
        self._update_user(username, actor, "user.disable", disabled=True)

    def enable_user(self, username: str, *, actor: Principal | None = None) -> None:
        self._update_user(username, actor, "user.enable", disabled=False)

    def set_password(self, username: str, password: str, *, actor: Principal | None = None) -> None:
        self._update_user(
            username, actor, "user.set_password", password_hash=hash_password(password)
        )

    def set_role(self, username: str, role: str, *, actor: Principal | None = None) -> None:
        _check_role(role)
        self._update_user(username, actor, "user.set_role", role=role)

    # -- login ----------------------------------------------------------------------------
    def authenticate(self, username: str, password: str, client: str | None = None) -> Principal:
        """Check a password. The caller audits the outcome and maps LoginThrottled to 429."""
        name = username.strip().lower()
        key = name[:64]  # failures are counted per (normalised) account name
        now = self.clock()
        window = timedelta(seconds=self.settings.accounts.failed_login_window_seconds)
        limit = self.settings.accounts.max_failed_logins
        with self.sessions() as session:
            recent = session.scalars(
                select(LoginFailure.at)
                .where(LoginFailure.username == key, LoginFailure.at > now - window)
                .order_by(LoginFailure.at)
            ).all()
            if len(recent) >= limit:
                # Allowed again once enough of these failures have left the window.
                frees_at = recent[len(recent) - limit] + window
                raise LoginThrottled(max(1, math.ceil((frees_at - now).total_seconds())))
            user = session.scalar(select(User).where(User.username == name))
        # Always do the scrypt work, so unknown and disabled users take as long as others.
        matches = verify_password(password, user.password_hash if user else _dummy_hash())
        if matches and user is not None and not user.disabled:
            return Principal(user.id, user.username, user.role)
        with self.sessions.begin() as session:
            session.execute(delete(LoginFailure).where(LoginFailure.at <= now - window))
            session.add(LoginFailure(username=key, at=now, client=client[:64] if client else None))
        raise InvalidCredentials()

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

    # -- groups ---------------------------------------------------------------------------
    def create_group(self, name: str, *, actor: Principal | None = None) -> None:
        _check_name("group name", name)
        self._add_unique("group", name, Group(name=name))
        self._report(actor, "group.create", group=name)

    def delete_group(self, name: str, *, actor: Principal | None = None) -> None:
        """Also ends its memberships and read grants."""
        with self.sessions.begin() as session:
            session.delete(self._get(session, Group, name))
        self._report(actor, "group.delete", group=name)

    def add_member(self, group: str, username: str, *, actor: Principal | None = None) -> None:
        with self.sessions.begin() as session:
            found, user = self._get(session, Group, group), self._get(session, User, username)
            if user in found.members:
                return  # nothing changes
            found.members.append(user)
        self._report(actor, "group.add_member", group=group, username=username)

    def remove_member(self, group: str, username: str, *, actor: Principal | None = None) -> None:
        with self.sessions.begin() as session:
            found, user = self._get(session, Group, group), self._get(session, User, username)
            if user not in found.members:
                raise NotFound(f"{username} is not a member of group {group}")
            found.members.remove(user)
        self._report(actor, "group.remove_member", group=group, username=username)

    def list_groups(self) -> list[GroupInfo]:
        with self.sessions() as session:
            query = select(Group).options(selectinload(Group.members)).order_by(Group.name)
            return [
                GroupInfo(group.name, tuple(user.username for user in group.members))
                for group in session.scalars(query)
            ]

    # -- collections ----------------------------------------------------------------------
    def _ensure_default(self) -> None:
        """The collection documents belong to unless told otherwise always exists."""
        if self._default_ready:
            return
        with self.sessions() as session:
            query = select(Collection.id).where(Collection.name == DEFAULT_COLLECTION)
            exists = session.scalar(query) is not None
        if not exists:
            with suppress(InvalidInput):  # created by another process meanwhile
                self._add_unique(
                    "collection", DEFAULT_COLLECTION, Collection(name=DEFAULT_COLLECTION)
                )
        self._default_ready = True

    def create_collection(
        self, name: str, readers: Sequence[str] = (), description: str = "",
        *, actor: Principal | None = None,
    ) -> None:  # fmt: skip
        _check_name("collection name", name)
        self._ensure_default()
        names = sorted(set(readers))
        collection = Collection(name=name, description=description.strip())

        def grant(session: Session) -> None:
            collection.readers = [self._get(session, Group, group) for group in names]

        self._add_unique("collection", name, collection, grant)
        self._report(actor, "collection.create", collection=name, readers=names)

    def set_readers(
        self, name: str, groups: Sequence[str], *, actor: Principal | None = None
    ) -> None:
        """Replace the groups that may read a collection; takes effect on the next request."""
        self._ensure_default()
        names = sorted(set(groups))
        with self.sessions.begin() as session:
            readers = [self._get(session, Group, group) for group in names]
            collection = self._get(session, Collection, name)
            collection.readers = readers
        self._report(actor, "collection.set_readers", collection=name, readers=names)

    def list_collections(self) -> list[CollectionInfo]:
        self._ensure_default()
        with self.sessions() as session:
            query = select(Collection).options(selectinload(Collection.readers))
            return [
                CollectionInfo(c.name, c.description, tuple(group.name for group in c.readers))
                for c in session.scalars(query.order_by(Collection.name))
            ]

    def collection_names(self) -> list[str]:
        self._ensure_default()
        with self.sessions() as session:
            return list(session.scalars(select(Collection.name).order_by(Collection.name)))

    def readable_collections(self, principal: Principal) -> list[str] | None:
        """None: unrestricted. Otherwise the collections this principal may read, from the
        database on every call (the user's current role, groups and grants)."""
        if principal.role == OPERATOR:
            return None
        with self.sessions() as session:
            user = session.get(User, principal.user_id) if principal.user_id is not None else None
            if user is None or user.disabled:
                return []
            if user.role == "admin":
                return None
            if user.role != "staff":
                return []  # auditors see passages only through the audit pages
            query = (
                select(Collection.name)
                .join(Collection.readers)
                .join(Group.members)
                .where(User.id == user.id)
                .distinct()
                .order_by(Collection.name)
            )
            return list(session.scalars(query))

    def can_read(self, principal: Principal, collection: str) -> bool:
        allowed = self.readable_collections(principal)
        return allowed is None or collection in allowed

    # -- API tokens -----------------------------------------------------------------------
    def issue_token(self, username: str, name: str, *, actor: Principal | None = None) -> str:
        """A new token for the JSON API. Only its SHA-256 is kept: show it to the user once."""
        label = name.strip()
        if not label or len(label) > 64 or not label.isprintable():
            raise InvalidInput("the token name must be 1-64 printable characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.sessions.begin() as session:
            user = self._get(session, User, username)
            row = ApiToken(user_id=user.id, name=label, token_sha256=_token_hash(token))
            session.add(row)
            session.flush()
        self._report(actor, "token.issue", username=username, token_id=row.id, name=label)
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
        with self.sessions.begin() as session:
            row = session.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"no such token: {token_id}")
            row.revoked = True
            username = session.get_one(User, row.user_id).username
        self._report(actor, "token.revoke", username=username, token_id=token_id)

    def list_tokens(self, username: str) -> list[TokenInfo]:
        with self.sessions() as session:
            user_id = self._get(session, User, username).id
            query = select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)
            return [
                TokenInfo(t.id, t.name, t.created_at, t.last_used_at, t.revoked)
                for t in session.scalars(query)
            ]
