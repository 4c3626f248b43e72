"""Small display helpers shared by the templates and the error messages."""

from __future__ import annotations

from datetime import datetime


def human_size(size: int | None) -> str:
    """'812 bytes', '1.5 KB', '50 MB'."""
    if size is None:
        return ""
    if size < 1024:
        return f"{size} bytes"
    value, unit = size / 1024, "KB"
    if value >= 1024:
        value, unit = value / 1024, "MB"
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def short_time(moment: datetime | str | None) -> str:
    """'2025-01-31 14:05 UTC' from a naive UTC datetime or its ISO string."""
    if moment is None:
        return ""
    text = moment.isoformat() if isinstance(moment, datetime) else moment
    return text[:16].replace("T", " ") + " UTC"
