"""What the model is asked: a fixed system prompt (its KV cache is reused from one question to
the next), then numbered sources and the question. Base models get a few-shot completion
prompt instead. The examples are our own, never evaluation data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

PROMPT_VERSION = "v4-sources-fewshot-exact"
DECLINE_MARKER = "NOT FOUND"
SYSTEM = (
    "You answer questions about the user's documents using only the numbered sources given "
    "with the question.\n"
    "Be brief. If the question asks for a name, date, number, place or other single fact, "
    "reply with just that fact. Otherwise reply in one to three short sentences.\n"
    "Copy names, dates, numbers and terms exactly as the source writes them.\n"
    f"If the sources do not contain the answer, reply: {DECLINE_MARKER}"
)
JUDGE_QUESTION = "Is that answer stated in the sources? Reply yes or no."
# Worked examples, as earlier turns of the chat: they show the answer forms (a bare fact, a
# how-to sentence, a yes/no sentence, the decline) and cost nothing per question, since they
# are part of the fixed prefix whose KV cache is reused.
_CHAT_EXAMPLES = (
    (
        [("Harlow Canal history", "The Harlow Canal was completed in 1794 to carry coal from "
          "the northern pits to the river port at Elmsbury. It closed to traffic in 1931.")],
        "When was the Harlow Canal completed?",
        "1794",
    ),
    (
        [("Library guide — Rooms", "Study rooms are booked in the library calendar at least "
          "one day ahead. The front desk confirms each booking by email.")],
        "How do I book a study room?",
        "Book it in the library calendar at least one day ahead; the front desk confirms the "
        "booking by email.",
    ),
    (
        [("Library guide — Visitors", "Dogs are not allowed in the reading room, except "
          "assistance dogs. Bicycles are parked in the rack by the east door.")],
        "Can I bring my dog into the reading room?",
        "No. Dogs are not allowed in the reading room, except assistance dogs.",
    ),
    (
        [("Dorn works", "The company's first factory, in Dorn, made bicycle frames. A second "
          "plant opened in Vallis in 1962.")],
        "When did the first factory in Dorn close?",
        DECLINE_MARKER,
    ),
)  # fmt: skip
# Base (completion) models: worked examples, then the question's context.
_EXAMPLES = (
    (
        "The Harlow Canal was completed in 1794 to carry coal from the northern pits to the "
        "river port at Elmsbury.",
        "What did the Harlow Canal carry?",
        "coal",
    ),
    (
        "The company's first factory, in Dorn, made bicycle frames. A second plant opened in "
        "Vallis in 1962.",
        "When did the first factory in Dorn close?",
        DECLINE_MARKER,
    ),
    (
        "Annual leave is requested through the HR portal at least two weeks in advance.",
        "How do I request leave?",
        "Request it through the HR portal at least two weeks in advance.",
    ),
)
_COMPLETION_PREFIX = (
    "Answer the question from the context. If the context does not answer it, answer "
    f"{DECLINE_MARKER}.\n\n"
    + "".join(f"Context: {c}\nQuestion: {q}\nAnswer: {a}\n\n" for c, q, a in _EXAMPLES)
)


def user_message(
    sources: Sequence[tuple[str, str]],
    question: str,
    history: Sequence[tuple[str, str]] = (),
) -> str:
    """The earlier turns a follow-up leans on, numbered sources, each with its label
    (document title and section), then the question."""
    lines = [
        f"[{n}] ({label}) {text}" if label else f"[{n}] {text}"
        for n, (label, text) in enumerate(sources, 1)
    ]
    earlier = "".join(
        f"Earlier question: {asked}\n" + (f"Earlier answer: {said}\n" if said else "")
        for asked, said in history
    )
    return (
        (earlier and earlier + "\n")
        + "Sources:\n"
        + "\n".join(lines)
        + (f"\n\nQuestion: {question}")
    )


FEW_SHOT = [
    message
    for sources, question, answer in _CHAT_EXAMPLES
    for message in (
        {"role": "user", "content": user_message(sources, question)},
        {"role": "assistant", "content": answer},
    )
]


@dataclass
class Trace:
    """What the generator observed while answering, for the confidence estimate."""

    logprobs: list[float] = field(default_factory=list)  # the model's own, per token
    decline_logprob: float | None = None  # log p(first token of DECLINE_MARKER), first step
    prompt_tokens: int = 0


@dataclass(frozen=True)
class Prompt:
    sources: list[str]  # the evidence, numbered from 1 in this order
    labels: list[str]  # each source's context (document title, section), may be empty
    question: str
    max_tokens: int
    # The decline marker cannot start the answer: the model gives its best answer, and the
    # calibrated confidence (which sees log p(marker)) decides whether it is shown.
    suppress_decline: bool = True
    # A follow-up's earlier turns: (question, answer shown or "").
    history: tuple[tuple[str, str], ...] = ()
    trace: Trace = field(default_factory=Trace, compare=False)

    def user_message(self) -> str:
        sources = list(zip(self.labels, self.sources, strict=True))
        return user_message(sources, self.question, self.history)

    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": SYSTEM},
            *FEW_SHOT,
            {"role": "user", "content": self.user_message()},
        ]

    def completion_text(self) -> str:
        context = " ".join(text.strip() for text in self.sources)
        earlier = " ".join(asked for asked, _ in self.history)
        question = f"{self.question} ({earlier})" if earlier else self.question
        return f"{_COMPLETION_PREFIX}Context: {context}\nQuestion: {question}\nAnswer:"


def build_prompt(
    question: str,
    sources: Sequence[str],
    labels: Sequence[str],
    max_tokens: int,
    history: Sequence[tuple[str, str]] = (),
) -> Prompt:
    return Prompt(list(sources), list(labels), question, max_tokens, history=tuple(history))
