"""Refusals and denials, audited cheaply. Per actor, client address and action, the first
refusal in a window is recorded at once, with its details; the rest of that window are
counted and recorded as one record (`repeats`, the window and a few samples) when it ends.
A client sending 3,000 refused requests in a minute thus costs two records, not 3,000.

Kept in memory, per process (like the rate limits); what is counted when the process stops
is recorded then (`flush`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from assistant.accounts import Principal
from assistant.errors import AuditError

logger = logging.getLogger(__name__)

SAMPLES = 5  # details of repeated refusals kept as examples in the summary record
Audit = Callable[[Principal | None, str, dict[str, Any]], Any]
Key = tuple[str, str | None, str, str]  # actor, client address, action, kind


@dataclass
class _Window:
    actor: Principal
    started: float
    first_at: str
    repeats: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RefusalLog:
    def __init__(
        self,
        audit: Audit,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audit = audit
        self.window_seconds = window_seconds
        self.clock = clock
        self._windows: dict[Key, _Window] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def refuse(
        self,
        actor: Principal,
        client: str | None,
        action: str,
        details: dict[str, Any],
        kind: str = "",
    ) -> None:
        """Record a refusal (at once, or counted into its window with the others of its
        `kind`, a status say). Never raises: the request is refused either way; a failed
        audit write is logged."""
        key, now = (actor.actor, client, action, kind), self.clock()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window.started < self.window_seconds:
                window.repeats += 1
                if len(window.samples) < SAMPLES:
                    window.samples.append(details)
                self._schedule(window.started + self.window_seconds - now)
                return
            ended = self._windows.pop(key, None)
            self._windows[key] = _Window(actor, now, _utc_now())
        if ended is not None:
            self._write_summary(key, ended)
        self._write(actor, action, details)

    def flush(self, everything: bool = False) -> None:
        """Record the counts of the windows that have ended (all of them: `everything`)."""
        now = self.clock()
        with self._lock:
            self._timer = None
            due = [
                (key, window)
                for key, window in self._windows.items()
                if everything or now - window.started >= self.window_seconds
            ]
            for key, _ in due:
                del self._windows[key]
            if self._windows and not everything:
                oldest = min(w.started for w in self._windows.values())
                self._schedule(oldest + self.window_seconds - now)
        for key, window in due:
            self._write_summary(key, window)

    def _schedule(self, delay: float) -> None:
        """One timer at a time (under the lock) that flushes when a window ends."""
        if self._timer is None:
            self._timer = threading.Timer(max(0.0, delay) + 0.01, self.flush)
            self._timer.daemon = True
            self._timer.start()

    def _write_summary(self, key: Key, window: _Window) -> None:
        if window.repeats:
            summary = {"repeats": window.repeats, "from": window.first_at, "until": _utc_now()}
            self._write(window.actor, key[2], {**summary, "samples": window.samples})

    def _write(self, actor: Principal, action: str, details: dict[str, Any]) -> None:
        try:
            self.audit(actor, action, details)
        except AuditError as exc:
            logger.error("could not audit a refusal (%s): %s", action, exc)
