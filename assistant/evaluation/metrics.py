"""Scoring: ranking metrics as trec_eval and BEIR compute them, SQuAD answer metrics, and the
mean and percentile used to summarise them."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

K = 10
_CITATION_MARK = re.compile(r"\[\d{1,3}\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


# -- ranking --------------------------------------------------------------------------------
def ndcg_at_k(ranked: Sequence[str], relevance: dict[str, int], k: int = K) -> float:
    """nDCG@k with linear gains and log2(rank + 1) discounts, as trec_eval and BEIR."""
    dcg = sum(relevance.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevance.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: Sequence[str], relevance: dict[str, int], k: int = K) -> float:
    relevant = {d for d, g in relevance.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at_k(ranked: Sequence[str], relevance: dict[str, int], k: int = K) -> float:
    for rank, document in enumerate(ranked[:k], start=1):
        if relevance.get(document, 0) > 0:
            return 1.0 / rank
    return 0.0


# -- answers --------------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """SQuAD: lower-case, drop punctuation and the articles a/an/the, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def strip_citations(text: str) -> str:
    return _CITATION_MARK.sub(" ", text)


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def answer_recall(prediction: str, gold: str) -> float:
    """The share of the gold answer's tokens the prediction contains (a right answer given
    as a whole sentence scores 1)."""
    predicted, expected = set(normalize_answer(prediction).split()), normalize_answer(gold).split()
    if not expected:
        return float(not predicted)
    return sum(token in predicted for token in expected) / len(expected)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def best_score(metric: Callable[[str, str], float], prediction: str, golds: Sequence[str]) -> float:
    return max((metric(prediction, gold) for gold in golds), default=0.0)


def contains_answer(passage: str, golds: Sequence[str]) -> bool:
    """Normalised containment, on word boundaries."""
    text = f" {normalize_answer(passage)} "
    return any(g and f" {g} " in text for g in map(normalize_answer, golds))


# -- summaries ------------------------------------------------------------------------------
def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
