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
    if settings:
        lines += ["", *section("Settings", settings)]
    return "\n".join(lines)
