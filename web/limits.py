"""Backpressure on questions: a bounded queue in front of answering, and a per-user rate limit.

Both are kept in memory and hold **per web process**: with several gunicorn worker processes
each has its own slots and its own rate windows (`assistant serve` starts one by default).
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app

from assistant.settings import LoadSettings

EXTENSION = "assistant.limits"
WINDOW_SECONDS = 60.0


class Refused(Exception):
    """A question refused before it is answered: HTTP `status` with a Retry-After."""

    def __init__(self, status: int, reason: str, retry_after: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class Lease:
    """One answer slot, held from the start of the answer to the end of its stream.
    Releasing twice is harmless (the stream and the response close both release it)."""

    slots: AnswerSlots
    waited_seconds: float
    _released: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self.slots._release()


class AnswerSlots:
    """At most `concurrent` answers run; at most `waiting` more wait for a slot, each up to
    `wait_seconds`. Anything past that is refused at once (503), never left hanging."""

    def __init__(
        self, concurrent: int, waiting: int, wait_seconds: float, retry_after: int
    ) -> None:
        self.concurrent = concurrent
        self.max_waiting = waiting
        self.wait_seconds = wait_seconds
        self.retry_after = retry_after
        self._slots = threading.BoundedSemaphore(concurrent)
        self._lock = threading.Lock()
        self.running = 0
        self.waiting = 0

    def acquire(self) -> Lease:
        started = time.monotonic()
        if not self._slots.acquire(blocking=False):
            with self._lock:
                if self.waiting >= self.max_waiting:
                    raise self._busy("capacity", "the assistant is busy answering other questions")
                self.waiting += 1
            try:
                got = self._slots.acquire(timeout=self.wait_seconds)
            finally:
                with self._lock:
                    self.waiting -= 1
            if not got:
                raise self._busy("wait_timeout", "the question waited too long for the assistant")
        with self._lock:
            self.running += 1
        return Lease(self, time.monotonic() - started)

    def _release(self) -> None:
        with self._lock:
            self.running -= 1
        self._slots.release()

    def _busy(self, reason: str, message: str) -> Refused:
        text = f"{message}; try again in {self.retry_after} s"
        return Refused(503, reason, self.retry_after, text)


class RateLimiter:
    """A sliding window of the last minute's questions, per user (in memory, per process)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._asked: defaultdict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, user: str) -> float:
        """Count one question by `user`, or raise Refused(429) if the window is full.
        Returns the question's mark, for `give_back`."""
        now = self.clock()
        with self._lock:
            asked = self._asked[user]
            while asked and asked[0] <= now - WINDOW_SECONDS:
                asked.popleft()
            if len(asked) >= self.per_minute:
                retry_after = max(1, math.ceil(asked[0] + WINDOW_SECONDS - now))
                message = (
                    f"you asked {self.per_minute} questions in the last minute, the limit; "
                    f"try again in {retry_after} s"
                )
                raise Refused(429, "rate_limit", retry_after, message)
            asked.append(now)
        return now

    def give_back(self, user: str, mark: float) -> None:
        """A question refused after it was counted (no capacity: 503) does not use up the
        user's quota."""
        with self._lock:
            asked = self._asked.get(user)
            if asked is not None and mark in asked:
                asked.remove(mark)


@dataclass(frozen=True)
class LoadControl:
    slots: AnswerSlots
    rate: RateLimiter


def init_limits(app: Flask, settings: LoadSettings) -> None:
    app.extensions[EXTENSION] = LoadControl(
        slots=AnswerSlots(
            settings.max_concurrent_answers,
            settings.max_waiting_answers,
            settings.wait_seconds,
            settings.retry_after_seconds,
        ),
        rate=RateLimiter(settings.per_user_per_minute),
    )


def load_control() -> LoadControl:
    control: LoadControl = current_app.extensions[EXTENSION]
    return control
