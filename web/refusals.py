"""Auditing what the web refuses: denied accesses (401, 403, 404), CSRF failures, throttled
sign-ins and questions refused for the rate limit or capacity, through one `RefusalLog` per
process (repeats within a minute become one record; see `assistant.refusals`)."""

from __future__ import annotations

import atexit
import weakref
from typing import Any

from flask import Flask, current_app, g, request

from assistant.accounts import Principal
from assistant.refusals import Audit, RefusalLog

EXTENSION = "assistant.refusals"
ANONYMOUS = Principal(user_id=None, username="anonymous", role="anonymous")


def init_refusals(app: Flask, audit: Audit) -> None:
    log = RefusalLog(audit)
    app.extensions[EXTENSION] = log
    atexit.register(_flush_at_exit, weakref.ref(log))  # what was counted, at the end


def _flush_at_exit(log: weakref.ref[RefusalLog]) -> None:
    alive = log()
    if alive is not None:
        alive.flush(everything=True)


def refusal_log() -> RefusalLog:
    log: RefusalLog = current_app.extensions[EXTENSION]
    return log


def refuse(action: str, details: dict[str, Any], kind: str = "") -> None:
    actor = g.get("principal") or ANONYMOUS
    refusal_log().refuse(actor, request.remote_addr, action, details, kind)


def deny(status: int, reason: str) -> None:
    """An access refused (401, 403, 404): who, what and why; never the content."""
    if request.endpoint == "static":
        return
    path = request.path[:512]
    details = {"status": status, "method": request.method, "path": path}
    # Each path refused is recorded; only repeats of the same one are counted.
    refuse("access.denied", {**details, "reason": reason[:300]}, kind=f"{status} {path}")
