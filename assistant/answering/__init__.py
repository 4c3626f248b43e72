"""Answering: evidence, generation with the packaged instruct models, verification of each
sentence against its source, the calibrated "not found", and routing to the larger model."""

from assistant.answering.answers import (
    DECLINE_TEXT,
    Answer,
    Citation,
    Event,
    Retrieved,
    Status,
    Text,
    validate_question,
)
from assistant.answering.engine import Answerer

__all__ = [
    "DECLINE_TEXT",
    "Answer",
    "Answerer",
    "Citation",
    "Event",
    "Retrieved",
    "Status",
    "Text",
    "validate_question",
]
