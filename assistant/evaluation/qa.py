"""Answer quality of the product answerer on documents/ + questions.jsonl: SQuAD F1 and exact
match, answer recall and the wrong-answer rate, decline behaviour, citations, routing and
latency, with a per-category breakdown and a risk-coverage table of the confidence."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from assistant.answering import Answer, Text
from assistant.answering.calibration import risk_coverage
from assistant.answering.followup import Exchange
from assistant.answering.prompts import PROMPT_VERSION
from assistant.errors import InvalidInput
from assistant.evaluation.datasets import load_questions
from assistant.evaluation.followups import compare, derive_pairs, exchange
from assistant.evaluation.metrics import (
    answer_recall,
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
from assistant.services import Services
from assistant.settings import Settings

logger = logging.getLogger(__name__)
RIGHT = 0.5  # answer recall at which an answer to an answerable question counts as right


def sample_questions(
    rows: Sequence[dict[str, Any]], limit: int, seed: int, path: Path
) -> list[dict[str, Any]]:
    """limit//2 answerable and the rest unanswerable, drawn with random.Random(seed); every
    question (in a seeded order) when the limit covers the whole file."""
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    if not answerable:
        raise InvalidInput(f"{path}: the file has no answerable questions")
    if not unanswerable:
        raise InvalidInput(f"{path}: the file has no unanswerable questions")
    rng = random.Random(seed)
    if limit >= len(rows):
        everything = list(rows)
        rng.shuffle(everything)
        return everything
    chosen = rng.sample(answerable, min(limit // 2, len(answerable)))
    chosen += rng.sample(unanswerable, min(limit - limit // 2, len(unanswerable)))
    rng.shuffle(chosen)
    return chosen


def _ask(
    services: Services, question: str, history: Sequence[Exchange] = ()
) -> tuple[Answer, float, float]:
    """The final answer, the time to its first verified text (or to the decline), and the
    total time."""
    started = time.perf_counter()
    first: float | None = None
    answer: Answer | None = None
    for event in services.answerer.stream(question, history=history):
        if isinstance(event, Answer):
            answer = event
        elif isinstance(event, Text) and first is None:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    if answer is None:
        raise RuntimeError("the answer stream ended without an answer")
    return answer, (first if first is not None else total), total


def _score(
    services: Services, row: dict[str, Any], history: Sequence[Exchange] = ()
) -> dict[str, Any]:
    answer, ttft, total = _ask(services, str(row["question"]), history)
    golds = [str(a) for a in row["answers"]]
    shown = "" if answer.declined else strip_citations(answer.text)
    record: dict[str, Any] = {
        "id": row["id"],
        "question": row["question"],
        "resolved_question": answer.resolved_question,
        "answerable": row["answerable"],
        "category": row.get("category"),
        "answer": answer.text,
        "declined": answer.declined,
        "decline_reason": answer.decline_reason,
        "dropped": answer.dropped,
        "route": answer.route,
        "routed": answer.routed,
        "confidence": answer.confidence,
        "signals": answer.signals,
        "ttft_s": round(ttft, 4),
        "total_s": round(total, 4),
    }
    if row["answerable"]:
        record["f1"] = best_score(token_f1, shown, golds)
        record["em"] = best_score(exact_match, shown, golds)
        record["answer_recall"] = best_score(answer_recall, shown, golds)
        in_top = [p for p in answer.retrieved if contains_answer(p.text, golds)]
        if row.get("document"):
            in_top = [p for p in in_top if p.filename == row["document"]]
        record["gold_passage_in_top_k"] = bool(in_top)
        if not answer.declined:
            cited = answer.citations
            record["citation_hit"] = any(contains_answer(c.passage.text, golds) for c in cited)
            record["sentence_hit"] = any(contains_answer(c.sentence, golds) for c in cited)
    if not answer.declined:
        record["wrong"] = not row["answerable"] or record["answer_recall"] < RIGHT
    # What the model wrote, shown or withheld: the calibrator is judged on it.
    record["candidate"] = strip_citations(answer.text) if not answer.declined else answer.draft
    if row["answerable"]:
        record["candidate_recall"] = best_score(answer_recall, record["candidate"], golds)
    small = answer.signals.get("small") if answer.routed else None
    if isinstance(small, dict):  # the small model's overruled draft, for its calibrator
        record["small_candidate"] = small.get("draft", "")
        if row["answerable"]:
            record["small_candidate_recall"] = best_score(
                answer_recall, record["small_candidate"], golds
            )
    if row.get("document"):
        found = {p.filename for p in answer.retrieved}
        record["gold_document_retrieved"] = row["document"] in found
    return record


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The headline figures of a set of scored questions."""
    answerable = [r for r in records if r["answerable"]]
    unanswerable = [r for r in records if not r["answerable"]]
    given = [r for r in records if not r["declined"]]
    cited = [r for r in answerable if not r["declined"]]
    routes = sorted({r["route"] for r in records})
    summary: dict[str, Any] = {
        "answer_f1": mean([r["f1"] for r in answerable]),
        "exact_match": mean([r["em"] for r in answerable]),
        "answer_recall": mean([r["answer_recall"] for r in answerable]),
        "correct_decline_rate": mean([float(r["declined"]) for r in unanswerable]),
        "false_decline_rate": mean([float(r["declined"]) for r in answerable]),
        "citation_hit_rate": mean([float(r["citation_hit"]) for r in cited]),
        "sentence_hit_rate": mean([float(r["sentence_hit"]) for r in cited]),
        "wrong_answer_rate": mean([float(r["wrong"]) for r in given]),
        "answer_rate": mean([float(not r["declined"]) for r in records]),
        "routed_rate": mean([float(r["routed"]) for r in records]),
        "ttft_p50_s": percentile([r["ttft_s"] for r in records], 0.5),
        "ttft_p95_s": percentile([r["ttft_s"] for r in records], 0.95),
        "total_p50_s": percentile([r["total_s"] for r in records], 0.5),
        "total_p95_s": percentile([r["total_s"] for r in records], 0.95),
    }
    for route in routes:
        mine = [r for r in records if r["route"] == route]
        summary[f"ttft_p50_s_{route}"] = percentile([r["ttft_s"] for r in mine], 0.5)
        summary[f"total_p50_s_{route}"] = percentile([r["total_s"] for r in mine], 0.5)
        summary[f"answered_by_{route}"] = len(mine)
    summary["n_answerable"] = len(answerable)
    summary["n_unanswerable"] = len(unanswerable)
    return summary


def evaluate_qa(
    settings: Settings,
    directory: Path,
    limit: int = 200,
    seed: int = 0,
    questions_file: Path | None = None,
    *,
    follow_ups: bool = False,
    services_factory: ServicesFactory | None = None,
) -> dict[str, Any]:
    """Answer quality, declines, citations, routing and latency of the product answerer.
    `follow_ups`: `limit` questions asked as follow-ups, against the same asked alone."""
    documents_dir = directory / "documents"
    if not documents_dir.is_dir():
        raise InvalidInput(f"{documents_dir}: missing documents directory")
    files = sorted(p for p in documents_dir.iterdir() if p.is_file())
    if not files:
        raise InvalidInput(f"{documents_dir}: no documents")
    path = questions_file or directory / "questions.jsonl"
    pairs = derive_pairs(load_questions(path), limit, seed) if follow_ups else []
    if follow_ups and not pairs:
        raise InvalidInput(
            f"{path}: no two questions about the same paragraph or document share a name, "
            "so no follow-up can be derived"
        )
    chosen = sample_questions(load_questions(path), limit, seed, path) if not follow_ups else []
    with scratch_services(settings, services_factory) as services:
        load_seconds = warm_up(services, generator=True)
        keys, index_seconds = ingest(services, [(p.name, p.name, p.read_bytes()) for p in files])
        records, alone = [], []
        for number, row in enumerate(chosen, start=1):
            records.append(_score(services, row))
            if number % 20 == 0:
                logger.info("answered %s of %s questions", number, len(chosen))
        for number, (first, second, text) in enumerate(pairs, start=1):
            earlier = _score(services, first)
            turn = exchange(earlier, str(first["question"]))
            records.append(_score(services, {**second, "question": text}, [turn]))
            alone.append(_score(services, second))
            if number % 10 == 0:
                logger.info("asked %s of %s follow-ups", number, len(pairs))
        summary = {
            "model": services.generator.name,
            "large_model": getattr(services.large_generator, "name", None),
            **settings_summary(services),
            "prompt_version": PROMPT_VERSION,
            **{f"generator.{k}": v for k, v in settings.generator.model_dump(mode="json").items()},
            "routing.mode": settings.routing.mode,
        }
    answerable = [r for r in records if r["answerable"]]
    retrieved = [r["gold_document_retrieved"] for r in answerable if "gold_document_retrieved" in r]
    categories = sorted({r["category"] for r in records if r["category"]})
    return {
        **summarise(records),
        "gold_passage_in_top_k": mean([float(r["gold_passage_in_top_k"]) for r in answerable]),
        "gold_document_in_top_k": mean([float(x) for x in retrieved]),
        **{
            f"declined_by_{reason}": sum(r["decline_reason"] == reason for r in records)
            for reason in sorted({r["decline_reason"] for r in records} - {None})
        },
        "index_seconds": index_seconds,
        "model_load_seconds": load_seconds,
        "n_documents": len(keys),
        "seed": seed,
        "limit": limit,
        **summary,
        **({"follow_ups": compare(pairs, records, alone)} if follow_ups else {}),
        "risk_coverage": _risk_coverage(records),
        "per_category": {
            category: summarise([r for r in records if r["category"] == category])
            for category in categories
        },
        "questions": records,
    }


def _risk_coverage(records: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Wrong-answer rate against answer rate if only the most confident answers were shown:
    every question the model wrote an answer for, shown or withheld, ranked by confidence."""
    scored = [r for r in records if r["confidence"] is not None and r["candidate"]]
    if not scored:
        return []
    wrong = [not r["answerable"] or r["candidate_recall"] < RIGHT for r in scored]
    table = risk_coverage([r["confidence"] for r in scored], wrong)
    share = len(scored) / len(records)
    return [{**row, "coverage": round(row["coverage"] * share, 3)} for row in table]
