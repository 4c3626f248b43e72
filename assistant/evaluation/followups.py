"""`eval qa --follow-ups`: questions asked as follow-ups in a conversation, against the same
questions asked on their own.

Pairs are derived at run time, never stored: two questions about the same paragraph (or the
same document when the set has no paragraphs). The second is rewritten as a follow-up by
putting "it" in place of the longest run of words it shares with the first (the thing the
first already named) and leading with "And": "How long is the warranty period under the
Supply Agreement between A and B?" after "What law governs the Supply Agreement between A and
B?" becomes "And how long is the warranty period under it?". A pair whose questions share no
content word is not used. The first question is answered, then the follow-up with that turn
as history, as the web does; the second question is also asked alone and both are scored."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from typing import Any

from assistant.answering.evidence import STOPWORDS
from assistant.answering.followup import Exchange
from assistant.evaluation.metrics import mean, strip_citations

logger = logging.getLogger(__name__)
_TOKEN = re.compile(r"[\w.-]+|['\u2019]s\b|[^\w\s]")  # "Canal's": "Canal", "'s"
MIN_SHARED_CONTENT_WORDS = 1


def _tokens(text: str) -> list[tuple[str, int, int]]:
    return [(m.group().lower().strip(".?"), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _named(text: str, tokens: Sequence[tuple[str, int, int]]) -> bool:
    """Every content word of the run is capitalised (or a number): a name, which is what a
    follow-up leaves out, not a verb or a common noun the two questions happen to share."""
    words = [text[s:e] for w, s, e in tokens if _content(w)]
    return bool(words) and all(w[0].isupper() or w[0].isdigit() for w in words)


def _content(word: str) -> bool:
    return any(c.isalnum() for c in word) and word not in STOPWORDS


def _whole_name(
    text: str, tokens: Sequence[tuple[str, int, int]], run: Sequence[tuple[str, int, int]]
) -> bool:
    """A name, and all of it: no capitalised word right before or after the run ("Yesun
    Temur" is not replaced by "Yesun it")."""
    if not _named(text, run):
        return False
    at = tokens.index(run[0])
    neighbours = [tokens[i] for i in (at - 1, at + len(run)) if 0 < i < len(tokens)]
    return not any(_content(w) and text[s].isupper() for w, s, _ in neighbours)


def as_follow_up(first: str, second: str) -> str | None:
    """`second` with the longest name it shares with `first` replaced by "it", led by
    "And"; None when they share no name."""
    a, b = _tokens(first), _tokens(second)
    best: tuple[int, int, int] = (0, 0, 0)  # content words, start, end (token indexes in b)
    for i in range(len(b)):
        for j in range(len(a)):
            k = 0
            while i + k < len(b) and j + k < len(a) and b[i + k][0] == a[j + k][0] and b[i + k][0]:
                k += 1
            run = b[i : i + k]
            content = sum(1 for w, _, _ in run if _content(w))
            if content and not _whole_name(second, b, _trimmed(run)):
                continue
            if content > best[0] or (content == best[0] and content and k > best[2] - best[1]):
                best = (content, i, i + k)
    content, start, end = best
    if content < MIN_SHARED_CONTENT_WORDS:
        return None
    trimmed = _trimmed(b[start:end])
    start = next(i for i in range(start, end) if b[i] == trimmed[0])
    end = start + len(trimmed)
    if start > 0 and b[start - 1][0] in {"the", "a", "an", "this", "that"}:
        start -= 1  # "the Supply Agreement" → "it", not "the it"
    head, tail = second[: b[start][1]], second[b[end - 1][2] :]
    if tail.startswith(("'s", "\u2019s")):
        replaced, tail = "its", tail[2:]
    else:
        replaced = "it"
    text = f"{head}{replaced}{tail}".strip()
    if not text:
        return None
    lead = text[0].lower() if text[1:2].islower() else text[0]  # "DEC" stays
    return f"And {lead}{text[1:]}"


def _trimmed(run: Sequence[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """The run without leading or trailing stopwords and punctuation ("the", "of", ",")."""
    keep = [i for i, (w, _, _) in enumerate(run) if _content(w)]
    return list(run[keep[0] : keep[-1] + 1]) if keep else []


def derive_pairs(
    rows: Sequence[dict[str, Any]], limit: int, seed: int
) -> list[tuple[dict[str, Any], dict[str, Any], str]]:
    """Up to `limit` (first question, second question, follow-up text), half of the second
    questions answerable, drawn with random.Random(seed)."""
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row.get("document"), row.get("paragraph")), []).append(row)
    rng = random.Random(seed)
    candidates = {True: [], False: []}  # type: dict[bool, list[tuple[dict, dict, str]]]
    for group in groups.values():
        for second in group:
            firsts = [r for r in group if r["id"] != second["id"] and r["answerable"]]
            rng.shuffle(firsts)
            # The first question that lets the follow-up leave out the most.
            made = [(as_follow_up(str(f["question"]), str(second["question"])), f) for f in firsts]
            usable = [(len(text), n, text, f) for n, (text, f) in enumerate(made) if text]
            if usable:
                _, _, text, first = min(usable)
                candidates[bool(second["answerable"])].append((first, second, text))
    chosen = []
    for answerable, share in ((True, limit - limit // 2), (False, limit // 2)):
        pool = candidates[answerable]
        chosen += rng.sample(pool, min(share, len(pool)))
    rng.shuffle(chosen)
    return chosen


def exchange(record: dict[str, Any], resolved: str) -> Exchange:
    """The first turn as the conversation keeps it for the next question."""
    answer = "" if record["declined"] else strip_citations(record["answer"]).strip()
    return Exchange(resolved, " ".join(answer.split()))


def compare(
    pairs: Sequence[tuple[dict[str, Any], dict[str, Any], str]],
    follow_ups: Sequence[dict[str, Any]],
    alone: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """The headline: follow-up against standalone on the same second questions."""

    def figures(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        answerable = [r for r in records if r["answerable"]]
        unanswerable = [r for r in records if not r["answerable"]]
        given = [r for r in records if not r["declined"]]
        return {
            "answer_f1": mean([r["f1"] for r in answerable]),
            "answer_recall": mean([r["answer_recall"] for r in answerable]),
            "correct_decline_rate": mean([float(r["declined"]) for r in unanswerable]),
            "false_decline_rate": mean([float(r["declined"]) for r in answerable]),
            "wrong_answer_rate": mean([float(r["wrong"]) for r in given]),
            "citation_hit_rate": mean(
                [float(r["citation_hit"]) for r in answerable if not r["declined"]]
            ),
        }

    follow, standalone = figures(follow_ups), figures(alone)
    return {
        "pairs": len(pairs),
        "follow_up": follow,
        "standalone": standalone,
        "f1_gap": round(standalone["answer_f1"] - follow["answer_f1"], 4),
        "examples": [
            {"first": first["question"], "second": second["question"], "follow_up": text}
            for first, second, text in list(pairs)[:8]
        ],
    }
