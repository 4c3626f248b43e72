"""Follow-up questions: "And its governing law?" is resolved from the conversation before it
is searched. A question that leans on an earlier one (a pronoun, a leading "and", "what
about", or hardly any words of its own) is searched together with the earlier question it
follows, and the model sees the earlier turns before the sources, so it can tell what "it"
is. The evidence sentences are still chosen for what is asked now (answering.engine).

No model call is spent on rewriting: on 2 cores a rewrite costs seconds on every follow-up,
and the earlier question already names what the follow-up leaves out."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from assistant.answering.evidence import content_words

# Words that point back to something said before. General English, not fitted to any set;
# "that" and "there" are left out: most questions use them without pointing back.
_POINTING = frozenset(
    {"it", "its", "they", "them", "their", "theirs", "this", "these", "those", "he", "him"}
    | {"his", "she", "her", "hers", "former", "latter", "aforementioned"}
)
_LEADS = ("and ", "but ", "also ", "what about", "how about", "then ", "so ", "or ")
_WORD = re.compile(r"[A-Za-z']+")
MAX_OWN_WORDS = 2  # a question with this few content words of its own needs its context
HISTORY_TURNS = 2  # earlier exchanges shown to the model
MAX_CONTEXT_CHARS = 600  # of the earlier question, itself perhaps resolved from another


@dataclass(frozen=True)
class Exchange:
    """An earlier turn of the conversation: the question as resolved, and the answer shown
    (empty when it was declined or may no longer be shown to this reader)."""

    question: str
    answer: str = ""


@dataclass(frozen=True)
class Asked:
    """The question as the user typed it, what retrieval searches for, and the earlier turns
    the model sees."""

    question: str
    resolved: str
    history: tuple[Exchange, ...] = ()

    @property
    def follows(self) -> bool:
        return self.resolved != self.question


def is_follow_up(question: str) -> bool:
    lowered = question.strip().lower()
    words = {w.strip("'") for w in _WORD.findall(lowered)}
    return (
        bool(words & _POINTING)
        or lowered.startswith(_LEADS)
        or len(content_words(question)) <= MAX_OWN_WORDS
    )


def resolve(question: str, history: Sequence[Exchange]) -> Asked:
    """The question with what it leaves out: the most recent earlier question, itself as
    resolved. A question that stands on its own is searched as it is, without history."""
    if not history or not is_follow_up(question):
        return Asked(question, question)
    previous = history[-1].question[:MAX_CONTEXT_CHARS]
    return Asked(question, f"{question} ({previous})", tuple(history[-HISTORY_TURNS:]))
