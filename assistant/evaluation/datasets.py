"""The evaluation set files: JSONL rows, BEIR qrels and SQuAD-style question files. Every
error names the file and, where there is one, the line."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from assistant.errors import InvalidInput


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InvalidInput(f"{path}: missing {what}")
    return path


def _jsonl(path: Path, required: Sequence[str] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line names `file:line`."""
    with _require(path, "JSONL file").open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path}:{number}: malformed JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise InvalidInput(f"{path}:{number}: expected a JSON object")
            missing = [key for key in required if key not in row]
            if missing:
                raise InvalidInput(f"{path}:{number}: missing field(s) {', '.join(missing)}")
            yield number, row


def read_jsonl(path: Path, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    return [row for _, row in _jsonl(path, required)]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels: a header line, then `query-id <TAB> corpus-id <TAB> score`."""
    qrels: dict[str, dict[str, int]] = {}
    with _require(path, "qrels file").open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if number == 1 and fields[0].strip() == "query-id":
                continue
            if not line.strip():
                continue
            try:
                query_id, corpus_id, score = fields
                qrels.setdefault(query_id.strip(), {})[corpus_id.strip()] = int(score)
            except ValueError:
                raise InvalidInput(
                    f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>integer score'"
                ) from None
    return qrels


def load_questions(path: Path) -> list[dict[str, Any]]:
    """Question rows `{id, question, answerable, answers[, document]}`, each checked."""
    rows = []
    for number, row in _jsonl(path, required=("id", "question", "answerable", "answers")):
        answers, where = row["answers"], f"{path}:{number}"
        if not isinstance(row["answerable"], bool):
            raise InvalidInput(f"{where}: 'answerable' must be true or false")
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise InvalidInput(f"{where}: 'answers' must be a list of strings")
        if row["answerable"] and not answers:
            raise InvalidInput(f"{where}: an answerable question needs at least one answer")
        if not isinstance(row["question"], str) or not row["question"].strip():
            raise InvalidInput(f"{where}: 'question' must be a non-empty string")
        rows.append(row)
    return rows
