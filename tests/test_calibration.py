"""The calibrator: logistic fitting and the risk-coverage table, on synthetic signals."""

from __future__ import annotations

import random

import pytest

from assistant.answering.calibration import FEATURES, fit, probability, risk_coverage


def test_fitting_finds_the_signal_that_separates_right_from_wrong() -> None:
    rng = random.Random(0)
    rows, labels = [], []
    for _ in range(400):
        right = rng.random() < 0.5
        rows.append(
            {
                "support": rng.gauss(0.9 if right else 0.5, 0.1),
                "similarity": rng.gauss(0.5, 0.1),  # noise
                "judge": None,  # missing counts as 0
            }
        )
        labels.append(right)
    intercept, weights = fit(rows, labels)
    assert set(weights) == set(FEATURES)
    assert weights["support"] > 5 and abs(weights["similarity"]) < 2
    high = probability({"support": 0.95, "similarity": 0.5}, weights, intercept)
    low = probability({"support": 0.45, "similarity": 0.5}, weights, intercept)
    assert high > 0.9 and low < 0.1


def test_fitting_refuses_too_few_or_one_sided_answers() -> None:
    with pytest.raises(ValueError, match="at least 10"):
        fit([{"support": 1.0}] * 20, [True] * 20)


def test_risk_coverage_ranks_by_confidence() -> None:
    table = risk_coverage([0.9, 0.8, 0.3, 0.2], [False, False, True, True], points=2)
    assert table == [
        {"coverage": 0.5, "threshold": 0.8, "wrong_answer_rate": 0.0},
        {"coverage": 1.0, "threshold": 0.2, "wrong_answer_rate": 0.5},
    ]
