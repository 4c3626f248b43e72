"""Who may read what: groups and their members, collections and the groups that may read
them, and the default collection every document belongs to unless told otherwise.

Staff read the collections their groups may read; admins read everything; auditors read
passages only through the audit pages; the CLI's operator reads everything. Every change is
committed with its audit record, or not at all (`assistant.actors.AuditedService`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

from sqlalchemy import Column, ForeignKey, String, Table, Text, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, selectinload, sessionmaker

from assistant.accounts import Serializable, User, check_name, find, find_user
from assistant.actors import OPERATOR, AuditedService, Change, Principal
from assistant.audit import AuditLog
from assistant.db import Base
from assistant.errors import InvalidInput, NotFound
from assistant.settings import Settings

DEFAULT_COLLECTION = "default"

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


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    members: Mapped[list[User]] = relationship(secondary=group_members, order_by=User.username)
    collections: Mapped[list[Collection]] = relationship(
        secondary=collection_readers, back_populates="readers"
    )


class Collection(Base):
    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    readers: Mapped[list[Group]] = relationship(
        secondary=collection_readers, back_populates="collections", order_by=Group.name
    )


@dataclass(frozen=True)
class GroupInfo(Serializable):
    name: str
    members: tuple[str, ...]  # usernames


@dataclass(frozen=True)
class CollectionInfo(Serializable):
    name: str
    description: str
    readers: tuple[str, ...]  # group names


def _group(session: Session, name: str) -> Group:
    return find(session, Group, Group.name, "group", name)


def _collection(session: Session, name: str) -> Collection:
    return find(session, Collection, Collection.name, "collection", name)


class AccessService(AuditedService):
    """Groups, collections and read access. Also the group memberships the account service
    uses (see `accounts.Memberships`): a new user's groups and the groups users are listed with."""

    def __init__(
        self, sessions: sessionmaker, settings: Settings, audit_log: AuditLog | None = None
    ) -> None:
        super().__init__(sessions, settings, audit_log)
        self._default_ready = False

    # -- groups ---------------------------------------------------------------------------
    def create_group(self, name: str, *, actor: Principal | None = None) -> None:
        check_name("group name", name)
        self._add_unique(
            "group", name, Group(name=name), lambda c: c.record(actor, "group.create", group=name)
        )

    def delete_group(self, name: str, *, actor: Principal | None = None) -> None:
        """Also ends its memberships and read grants."""
        with self._changing() as change:
            change.session.delete(_group(change.session, name))
            change.record(actor, "group.delete", group=name)

    def add_member(self, group: str, username: str, *, actor: Principal | None = None) -> None:
        with self._changing() as change:
            found, user = _group(change.session, group), find_user(change.session, username)
            if user in found.members:
                return  # nothing changes
            found.members.append(user)
            change.record(actor, "group.add_member", group=group, username=username)

    def remove_member(self, group: str, username: str, *, actor: Principal | None = None) -> None:
        with self._changing() as change:
            found, user = _group(change.session, group), find_user(change.session, username)
            if user not in found.members:
                raise NotFound(f"{username} is not a member of group {group}")
            found.members.remove(user)
            change.record(actor, "group.remove_member", group=group, username=username)

    def list_groups(self) -> list[GroupInfo]:
        with self.sessions() as session:
            query = select(Group).options(selectinload(Group.members)).order_by(Group.name)
            return [
                GroupInfo(group.name, tuple(user.username for user in group.members))
                for group in session.scalars(query)
            ]

    def join_groups(self, session: Session, user_id: int, groups: Sequence[str]) -> None:
        """Add a user to groups in the caller's transaction; NotFound for an unknown group."""
        rows = [{"group_id": _group(session, name).id, "user_id": user_id} for name in groups]
        if rows:
            session.execute(insert(group_members), rows)

    def groups_of(self, user_ids: Sequence[int]) -> dict[int, tuple[str, ...]]:
        """Each user's group names, sorted; users in no group are left out."""
        query = (
            select(group_members.c.user_id, Group.name)
            .join(Group, Group.id == group_members.c.group_id)
            .where(group_members.c.user_id.in_(user_ids))
            .order_by(Group.name)
        )
        found: dict[int, list[str]] = defaultdict(list)
        with self.sessions() as session:
            for user_id, name in session.execute(query):
                found[user_id].append(name)
        return {user_id: tuple(names) for user_id, names in found.items()}

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
        check_name("collection name", name)
        self._ensure_default()
        names = sorted(set(readers))
        collection = Collection(name=name, description=description.strip())

        def grant_and_record(change: Change) -> None:
            collection.readers = [_group(change.session, group) for group in names]
            change.record(actor, "collection.create", collection=name, readers=names)

        self._add_unique("collection", name, collection, grant_and_record)

    def set_readers(
        self, name: str, groups: Sequence[str], *, actor: Principal | None = None
    ) -> None:
        """Replace the groups that may read a collection; takes effect on the next request."""
        self._ensure_default()
        names = sorted(set(groups))
        with self._changing() as change:
            readers = [_group(change.session, group) for group in names]
            collection = _collection(change.session, name)
            collection.readers = readers
            change.record(actor, "collection.set_readers", collection=name, readers=names)

    def list_collections(self) -> list[CollectionInfo]:
        self._ensure_default()
        with self.sessions() as session:
            query = select(Collection).options(selectinload(Collection.readers))
            return [
                CollectionInfo(c.name, c.description, tuple(group.name for group in c.readers))
                for c in session.scalars(query.order_by(Collection.name))
            ]

    def readers_of(self, name: str) -> tuple[str, ...]:
        """The groups that may read a collection (NotFound if there is none)."""
        self._ensure_default()
        with self.sessions() as session:
            return tuple(group.name for group in _collection(session, name).readers)

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
