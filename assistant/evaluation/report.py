"""The evaluation report as an aligned text table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _format_value(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if key.endswith(("_s", "_seconds")):
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    return f"{value:.3f}"


def format_report(report: dict[str, Any]) -> str:
    """Aligned figures in the report's order (headline first), then the settings (dotted
    keys); per-question details stay in the JSON file."""
    scalars = [k for k, v in report.items() if not isinstance(v, list | dict)]
    figures = [k for k in scalars if "." not in k]
    settings = [k for k in scalars if "." in k]
    width = max((len(k) for k in scalars), default=0)

    def section(title: str, keys: Sequence[str]) -> list[str]:
        rule = "-" * (width + 12)
        return [title, rule, *(f"{k.ljust(width)}  {_format_value(k, report[k])}" for k in keys)]

    if "answer_f1" in report:
        title = "Answer quality"
    elif "chunks_per_second" in report:
        title = "Ingestion speed"
    else:
        title = "Retrieval quality"
    lines = section(title, figures)
    if report.get("per_category"):
        lines += ["", *_per_category(report["per_category"])]
    if report.get("risk_coverage"):
        lines += ["", *_risk_coverage(report["risk_coverage"])]
    if settings:
        lines += ["", *section("Settings", settings)]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _per_category(categories: dict[str, dict[str, Any]]) -> list[str]:
    columns = ("answer_f1", "answer_recall", "correct_decline_rate", "false_decline_rate",
               "wrong_answer_rate", "routed_rate")  # fmt: skip
    width = max(len(name) for name in categories)
    header = "category".ljust(width) + "".join(f"  {c[:14]:>14}" for c in columns)
    rows = [
        name.ljust(width) + "".join(f"  {_cell(figures.get(c)):>14}" for c in columns)
        for name, figures in categories.items()
    ]
    return ["Per category", "-" * len(header), header, *rows]


def _risk_coverage(table: list[dict[str, float]]) -> list[str]:
    """Answer rate against wrong-answer rate, if only answers above a confidence were shown."""
    rows = [
        f"{row['threshold']:>10.3f}  {row['coverage']:>11.2f}  {row['wrong_answer_rate']:>17.2f}"
        for row in table
    ]
    header = "confidence  answer rate  wrong-answer rate"
    return ["Risk and coverage", "-" * len(header), header, *rows]
