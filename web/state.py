"""Where the views find the services and the task queue that `create_app` was given."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from assistant.services import Services
from web.tasks import IngestQueue

EXTENSION = "assistant"


@dataclass(frozen=True)
class WebState:
    services: Services
    tasks: IngestQueue


def services() -> Services:
    state: WebState = current_app.extensions[EXTENSION]
    return state.services


def tasks() -> IngestQueue:
    state: WebState = current_app.extensions[EXTENSION]
    return state.tasks
