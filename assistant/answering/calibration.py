"""The calibrated "not found": one logistic model over every signal of an answer (retrieval,
evidence, support of the answer by its sources, the model's own probabilities and its
judgement of its answer) gives the probability that the answer is right. Its weights are
fitted on evaluation runs (`assistant eval calibrate`) and live in the settings."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from assistant.answering.evidence import Evidence, keyword_overlap
from assistant.answering.verification import Checked

# The signals, as the answerer records them in Answer.signals. A missing one counts as 0.
FEATURES = (
    "similarity",  # cosine of the best retrieved passage to the question
    "evidence",  # score of the best evidence sentence (cosine + keyword share)
    "coverage",  # share of the question's content words in the cited evidence
    "support",  # lowest share of an answer sentence's new words found in its cited sentence
    "decline_logprob",  # log p(the model starts "NOT FOUND"), before it was forbidden
    "mean_logprob",  # mean log-probability of the answer's tokens
    "min_logprob",  # lowest log-probability of an answer token
    "judge",  # log p(yes) - log p(no): the model says its answer is in the sources
    "answer_words",  # log(1 + words in the answer)
)


def features(signals: Mapping[str, Any]) -> np.ndarray:
    values = []
    for name in FEATURES:
        value = signals.get(name)
        finite = isinstance(value, int | float) and math.isfinite(value)
        values.append(float(value) if finite else 0.0)
    return np.asarray(values)


def probability(
    signals: Mapping[str, Any], weights: Mapping[str, float], intercept: float
) -> float:
    """P(the answer is right) under the logistic model."""
    x = features(signals)
    w = np.asarray([weights.get(name, 0.0) for name in FEATURES])
    z = float(intercept + x @ w)
    return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


def fit(
    rows: Sequence[Mapping[str, Any]], labels: Sequence[bool], l2: float = 1.0
) -> tuple[float, dict[str, float]]:
    """Logistic regression by Newton's method with an L2 penalty (not on the intercept), on
    standardised features; returns the intercept and weights on the raw features."""
    x = np.asarray([features(r) for r in rows])
    y = np.asarray(labels, dtype=float)
    if len(x) < 10 or y.min() == y.max():
        raise ValueError("calibration needs at least 10 answers, both right and wrong ones")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    beta = np.zeros(z.shape[1])
    penalty = np.eye(z.shape[1]) * l2
    penalty[0, 0] = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -50, 50)))
        gradient = z.T @ (y - p) - penalty @ beta
        hessian = z.T @ (z * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hessian, gradient)
        beta += step
        if np.abs(step).max() < 1e-8:
            break
    weights = beta[1:] / scale
    intercept = float(beta[0] - weights @ mean)
    return intercept, {name: round(float(w), 5) for name, w in zip(FEATURES, weights, strict=True)}


def risk_coverage(
    confidences: Sequence[float], wrong: Sequence[bool], points: int = 10
) -> list[dict[str, float]]:
    """Answering only above a threshold: for each share of questions answered (coverage),
    the wrong-answer rate among those answered, best-confidence first."""
    order = sorted(range(len(confidences)), key=lambda i: -confidences[i])
    table = []
    for step in range(1, points + 1):
        count = max(1, round(len(order) * step / points))
        chosen = order[:count]
        table.append(
            {
                "coverage": round(count / len(order), 3),
                "threshold": round(confidences[chosen[-1]], 4),
                "wrong_answer_rate": round(sum(wrong[i] for i in chosen) / count, 3),
            }
        )
    return table


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    return value


def signals(
    base: dict[str, float],
    trace: Any,
    checked: list[Checked],
    evidence: list[Evidence],
    question: str,
) -> dict[str, Any]:
    """The calibrator's inputs (see FEATURES) for an answer so far."""
    logprobs = [p for p in trace.logprobs if math.isfinite(p)]
    cited = {s.passage for c in checked for s in c.supports}
    cited_text = " ".join(e.text for e in evidence if e.passage in cited)
    words = sum(len(c.text.split()) for c in checked)
    return {
        **base,
        "coverage": keyword_overlap(question, cited_text),
        "support": min((c.share for c in checked), default=0.0),
        "decline_logprob": trace.decline_logprob,
        "mean_logprob": sum(logprobs) / len(logprobs) if logprobs else None,
        "min_logprob": min(logprobs) if logprobs else None,
        "answer_words": math.log1p(words),
    }
