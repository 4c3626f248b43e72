"""Fitting the "not found" calibrator on `eval qa` reports: each question's signals, labelled
right when the model's answer (shown or withheld) holds at least half the gold answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from assistant.answering.calibration import fit, probability, risk_coverage
from assistant.errors import InvalidInput
from assistant.evaluation.qa import RIGHT


def labelled(reports: Sequence[Path], route: str) -> tuple[list[dict[str, Any]], list[bool]]:
    """The signals and right/wrong label of every question `route` wrote an answer for."""
    rows: list[dict[str, Any]] = []
    labels: list[bool] = []
    for path in reports:
        try:
            questions = json.loads(path.read_text())["questions"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"{path}: not an `eval qa` report ({exc})") from None
        for row in questions:
            signals, candidate = row.get("signals"), row.get("candidate")
            recall = "candidate_recall"
            if route == "small" and row.get("routed"):  # the draft the large model replaced
                signals, candidate = (signals or {}).get("small"), row.get("small_candidate")
                recall = "small_candidate_recall"
            elif row.get("route") != route:
                continue
            if not signals or not candidate:
                continue
            rows.append(signals)
            labels.append(bool(row["answerable"]) and row.get(recall, 0) >= RIGHT)
    return rows, labels


def calibrate(reports: Sequence[Path], route: str, max_wrong: float = 0.15) -> dict[str, Any]:
    """Fitted weights for `route`, the in-sample risk-coverage table, and the lowest
    threshold whose answers are wrong at most `max_wrong` of the time."""
    rows, labels = labelled(reports, route)
    try:
        intercept, weights = fit(rows, labels)
    except ValueError as exc:
        raise InvalidInput(f"route {route}: {exc}") from None
    confidences = [probability(r, weights, intercept) for r in rows]
    table = risk_coverage(confidences, [not right for right in labels], points=20)
    safe = [row for row in table if row["wrong_answer_rate"] <= max_wrong]
    return {
        "route": route,
        "answers": len(rows),
        "right": sum(labels),
        "calibration": {"intercept": round(intercept, 5), "weights": weights},
        "threshold_for_max_wrong": safe[-1]["threshold"] if safe else None,
        "max_wrong": max_wrong,
        "risk_coverage": table,
    }
