"""Answer quality of the product answerer on documents/ + questions.jsonl: SQuAD F1 and exact
match, decline behaviour, citations and latency."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from assistant.answering import Answer
from assistant.errors import InvalidInput
from assistant.evaluation.datasets import load_questions
from assistant.evaluation.metrics import (
    best_score,
    contains_answer,
    exact_match,
    mean,
    percentile,
    strip_citations,
    token_f1,
)
from assistant.evaluation.scratch import (
    ServicesFactory,
    ingest,
    scratch_services,
    settings_summary,
    warm_up,
)
from assistant.generation import PROMPT_VERSION
from assistant.services import Services
from assistant.settings import Settings

logger = logging.getLogger(__name__)


def sample_questions(
    rows: Sequence[dict[str, Any]], limit: int, seed: int, path: Path
) -> list[dict[str, Any]]:
    """limit//2 answerable and the rest unanswerable, drawn with random.Random(seed)."""
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    if not answerable:
        raise InvalidInput(f"{path}: the file has no answerable questions")
    if not unanswerable:
        raise InvalidInput(f"{path}: the file has no unanswerable questions")
    rng = random.Random(seed)
    chosen = rng.sample(answerable, min(limit // 2, len(answerable)))
    chosen += rng.sample(unanswerable, min(limit - limit // 2, len(unanswerable)))
    rng.shuffle(chosen)
    return chosen


def _ask(services: Services, question: str) -> tuple[Answer, float, float]:
    """The final answer, the time to its first token (or to a decline) and the total time."""
    started = time.perf_counter()
    first: float | None = None
    answer: Answer | None = None
    for event in services.answerer.stream(question):
        if isinstance(event, Answer):
            answer = event
        elif first is None:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    if answer is None:
        raise RuntimeError("the answer stream ended without an answer")
    return answer, (first if first is not None else total), total


def _score(services: Services, row: dict[str, Any]) -> dict[str, Any]:
    answer, ttft, total = _ask(services, str(row["question"]))
    golds = [str(a) for a in row["answers"]]
    # Outside the timed path: the same passages again, to study the decline threshold.
    passages = services.retriever.search(str(row["question"]), services.settings.retrieval.top_k)
    similarity = max((p.similarity for p in passages), default=None)
    # The answerer's own reason when it gives one; else before generation (no passage
    # reached min_score) or after it (the model said it did not know).
    below = similarity is None or similarity < services.settings.retrieval.min_score
    reason = getattr(answer, "decline_reason", None) or ("similarity" if below else "model")
    record: dict[str, Any] = {
        "id": row["id"],
        "answerable": row["answerable"],
        "answer": answer.text,
        "declined": answer.declined,
        "decline_reason": reason if answer.declined else None,
        "top_similarity": None if similarity is None else round(similarity, 4),
        "ttft_s": round(ttft, 4),
        "total_s": round(total, 4),
    }
    if row["answerable"]:
        prediction = "" if answer.declined else strip_citations(answer.text)
        record["f1"] = best_score(token_f1, prediction, golds)
        record["em"] = best_score(exact_match, prediction, golds)
        if not answer.declined:
            record["citation_hit"] = any(
                contains_answer(c.passage.text, golds) for c in answer.citations
            )
    if row.get("document"):
        record["gold_document_retrieved"] = any(p.filename == row["document"] for p in passages)
    return record


def evaluate_qa(
    settings: Settings,
    directory: Path,
    limit: int = 200,
    seed: int = 0,
    questions_file: Path | None = None,
    *,
    services_factory: ServicesFactory | None = None,
) -> dict[str, Any]:
    """Answer F1/EM, decline behaviour, citations and latency of the product answerer."""
    documents_dir = directory / "documents"
    if not documents_dir.is_dir():
        raise InvalidInput(f"{documents_dir}: missing documents directory")
    files = sorted(p for p in documents_dir.iterdir() if p.is_file())
    if not files:
        raise InvalidInput(f"{documents_dir}: no documents")
    path = questions_file or directory / "questions.jsonl"
    chosen = sample_questions(load_questions(path), limit, seed, path)
    with scratch_services(settings, services_factory) as services:
        load_seconds = warm_up(services, generator=True)
        keys, index_seconds = ingest(services, [(p.name, p.name, p.read_bytes()) for p in files])
        records = []
        for number, row in enumerate(chosen, start=1):
            records.append(_score(services, row))
            if number % 20 == 0:
                logger.info("answered %s of %s questions", number, len(chosen))
        model = services.generator.name
        summary = {
            **settings_summary(services),
            "prompt_style": getattr(services.generator, "prompt_style", None),
            "prompt_version": PROMPT_VERSION,
            **{f"generator.{k}": v for k, v in settings.generator.model_dump(mode="json").items()},
        }
    answerable = [r for r in records if r["answerable"]]
    unanswerable = [r for r in records if not r["answerable"]]
    answered = [r for r in answerable if not r["declined"]]
    retrieved = [r["gold_document_retrieved"] for r in answerable if "gold_document_retrieved" in r]
    return {
        "answer_f1": mean([r["f1"] for r in answerable]),
        "exact_match": mean([r["em"] for r in answerable]),
        "correct_decline_rate": mean([float(r["declined"]) for r in unanswerable]),
        "false_decline_rate": mean([float(r["declined"]) for r in answerable]),
        "citation_hit_rate": mean([float(r["citation_hit"]) for r in answered]),
        "ttft_p50_s": percentile([r["ttft_s"] for r in records], 0.5),
        "ttft_p95_s": percentile([r["ttft_s"] for r in records], 0.95),
        "total_p50_s": percentile([r["total_s"] for r in records], 0.5),
        "total_p95_s": percentile([r["total_s"] for r in records], 0.95),
        "n_answerable": len(answerable),
        "n_unanswerable": len(unanswerable),
        "model": model,
        "answered_f1": mean([r["f1"] for r in answered]),
        **{
            f"declined_by_{reason}": sum(r["decline_reason"] == reason for r in records)
            for reason in sorted({r["decline_reason"] for r in records} - {None})
        },
        "gold_document_in_top_k": mean([float(x) for x in retrieved]),
        "index_seconds": index_seconds,
        "model_load_seconds": load_seconds,
        "n_documents": len(keys),
        "seed": seed,
        "limit": limit,
        **summary,
        "questions": records,
    }
