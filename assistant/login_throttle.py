"""Sign-in throttling, kept in the database so that it holds across threads and processes.

Every sign-in attempt is counted *before* its password is checked, by one atomic upsert per
counter, so concurrent guesses cannot all slip under the limit. Two counters apply:

- per account and source address: `max_failed_logins` in the window. Someone guessing
  `admin`'s password from one address does not lock out the real admin at another;
- per source address over all accounts: `max_failed_logins_per_client`, so spraying one
  guess each over many names is throttled too.

A successful sign-in gives its attempt back (and clears its account's counter), so only
failures use up the limits. The windows are fixed: each starts at its first attempt.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, String, case, delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from assistant.db import Base
from assistant.errors import AssistantError
from assistant.settings import AccountSettings

logger = logging.getLogger(__name__)
MAX_KEY = 160


class LoginThrottled(AssistantError):
    """Too many failed sign-ins from this address (for this account) in the window (429).
    `locked` names the counters this very attempt pushed over their limit (to audit once)."""

    def __init__(self, retry_after: int, locked: tuple[str, ...] = ()) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} seconds")
        self.retry_after = retry_after
        self.locked = locked


class LoginCounter(Base):
    """Attempts per counter key within its current window."""

    __tablename__ = "login_counters"

    key: Mapped[str] = mapped_column(String(MAX_KEY), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(index=True)
    count: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True)
class Reservation:
    """An attempt counted against its two counters, to give back if it succeeds."""

    account_key: str
    client_key: str
    window_start: datetime


def counter_keys(username: str, client: str | None) -> tuple[str, str]:
    address = (client or "-")[:64]
    return f"account:{username[:64]}@{address}", f"client:{address}"


class LoginThrottle:
    def __init__(
        self, sessions: sessionmaker, settings: AccountSettings, clock: Callable[[], datetime]
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.clock = clock

    def reserve(self, username: str, client: str | None) -> Reservation:
        """Count one attempt, or raise LoginThrottled if a counter is over its limit."""
        account_key, client_key = counter_keys(username, client)
        now, window = self.clock(), timedelta(seconds=self.settings.failed_login_window_seconds)
        limits = {
            account_key: self.settings.max_failed_logins,
            client_key: self.settings.max_failed_logins_per_client,
        }
        over: list[tuple[str, int, datetime]] = []
        with self.sessions.begin() as session:
            for key, limit in limits.items():  # always in this order: no deadlock
                count, started = self._bump(session, key, now, window)
                if count > limit:
                    over.append((key, count - limit, started))
        self._forget_expired(now - window)
        if over:
            frees_at = max(started for _, _, started in over) + window
            retry_after = max(1, math.ceil((frees_at - now).total_seconds()))
            locked = tuple(key for key, excess, _ in over if excess == 1)
            raise LoginThrottled(retry_after, locked)
        return Reservation(account_key, client_key, now)

    def succeeded(self, reservation: Reservation) -> None:
        """The password was right: the account's counter starts over, the address's gets
        this attempt back."""
        with self.sessions.begin() as session:
            session.execute(delete(LoginCounter).where(LoginCounter.key == reservation.account_key))
            session.execute(
                update(LoginCounter)
                .where(
                    LoginCounter.key == reservation.client_key,
                    LoginCounter.window_start <= reservation.window_start,
                    LoginCounter.count > 0,
                )
                .values(count=LoginCounter.count - 1)
            )

    def _forget_expired(self, before: datetime) -> None:
        """Counters whose window has passed, in a transaction of their own: two of these
        can deadlock on PostgreSQL, and then one simply leaves the rows for the next."""
        try:
            with self.sessions.begin() as session:
                session.execute(delete(LoginCounter).where(LoginCounter.window_start <= before))
        except DBAPIError as exc:
            logger.debug("expired sign-in counters left for later: %s", exc)

    @staticmethod
    def _bump(session: Session, key: str, now: datetime, window: timedelta) -> tuple[int, datetime]:
        """Add one to a counter atomically (a new window once the old one has passed) and
        return its count and window start. The upsert locks the row (PostgreSQL) or the
        database (SQLite) until commit, so concurrent attempts are counted one by one."""
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        expired = LoginCounter.window_start <= now - window
        statement = (
            insert(LoginCounter)
            .values(key=key, window_start=now, count=1)
            .on_conflict_do_update(
                index_elements=[LoginCounter.key],
                set_={
                    "count": case((expired, 1), else_=LoginCounter.count + 1),
                    "window_start": case((expired, now), else_=LoginCounter.window_start),
                },
            )
            .returning(LoginCounter.count, LoginCounter.window_start)
        )
        count, started = session.execute(statement).one()
        return int(count), started
