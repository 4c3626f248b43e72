"""Evaluation: retrieval on a BEIR-layout set, answers on a SQuAD-style question set.

Both run the product's own pipeline (upload, ingest, retrieve, answer) in a fresh temporary
data directory, so the user's documents, index and database are never touched.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import shutil
import string
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from assistant.answering import Answer
from assistant.errors import InvalidInput
from assistant.generation import PROMPT_VERSION
from assistant.services import Services, build_services
from assistant.settings import Settings

logger = logging.getLogger(__name__)

ServicesFactory = Callable[[Settings], Services]
K = 10
# Chunks fetched per query before they are merged into at most K distinct documents.
CANDIDATE_CHUNKS = 30
_CITATION_MARK = re.compile(r"\[\d{1,3}\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


# -- input files ----------------------------------------------------------------------------
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


# -- metrics --------------------------------------------------------------------------------
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


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


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


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def best_score(metric: Callable[[str, str], float], prediction: str, golds: Sequence[str]) -> float:
    return max((metric(prediction, gold) for gold in golds), default=0.0)


def contains_answer(passage: str, golds: Sequence[str]) -> bool:
    """Normalised containment, on word boundaries."""
    text = f" {normalize_answer(passage)} "
    return any(g and f" {g} " in text for g in map(normalize_answer, golds))


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# -- running the product --------------------------------------------------------------------
def _scratch_settings(settings: Settings, data_dir: Path) -> Settings:
    """The same settings on a new data directory, with its own SQLite database."""
    scratch = settings.model_copy(update={"data_dir": data_dir, "database_url": None})
    scratch.__dict__.pop("resolved_data_dir", None)  # a cached_property copied from settings
    return scratch


@contextmanager
def _scratch_services(settings: Settings, factory: ServicesFactory | None) -> Iterator[Services]:
    directory = Path(tempfile.mkdtemp(prefix="assistant-eval-"))
    try:
        logger.info("evaluating in the scratch data directory %s", directory)
        yield (factory or build_services)(_scratch_settings(settings, directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _ingest(services: Services, uploads: Sequence[tuple[str, str, bytes]]) -> dict[str, str]:
    """Upload and ingest (key, filename, bytes) items; returns document id -> key."""
    keys: dict[str, str] = {}
    for number, (key, filename, data) in enumerate(uploads, start=1):
        document = services.documents.ingest(services.documents.add(filename, data).id)
        if document.status != "indexed":
            logger.warning("%s was not indexed: %s", filename, document.error)
            continue
        keys[document.id] = key
        if number % 200 == 0:
            logger.info("ingested %s of %s documents", number, len(uploads))
    return keys


def _warm_up(services: Services, generator: bool = False) -> float:
    """Load the models before anything is timed; returns the seconds it took."""
    started = time.perf_counter()
    services.embedder.embed(["warm-up"])
    load = getattr(services.generator, "load", None)
    if generator and callable(load):
        load()
    return time.perf_counter() - started


def _settings_summary(services: Services) -> dict[str, Any]:
    """The settings that shape the figures, flattened (non-finite floats as text for JSON)."""
    summary: dict[str, Any] = {"embedder": services.embedder.name}
    for section in ("retrieval", "grounding", "chunking"):
        values = getattr(services.settings, section, None)
        for key, value in (values.model_dump() if values is not None else {}).items():
            finite = not isinstance(value, float) or math.isfinite(value)
            summary[f"{section}.{key}"] = value if finite else str(value)
    return summary


# -- retrieval ------------------------------------------------------------------------------
def evaluate_retrieval(
    settings: Settings,
    directory: Path,
    limit: int | None = None,
    *,
    services_factory: ServicesFactory | None = None,
) -> dict[str, Any]:
    """nDCG@10, Recall@10 and MRR@10 of the product retriever on a BEIR-layout set, with
    chunks merged into documents (a document scores as its best chunk)."""
    corpus = read_jsonl(directory / "corpus.jsonl", required=("_id", "text"))
    queries = read_jsonl(directory / "queries.jsonl", required=("_id", "text"))
    qrels = read_qrels(directory / "qrels" / "test.tsv")
    judged = [q for q in queries if any(g > 0 for g in qrels.get(str(q["_id"]), {}).values())]
    if limit is not None:
        judged = judged[: max(limit, 0)]
    if not judged:
        raise InvalidInput(f"{directory / 'queries.jsonl'}: no query has a relevance judgement")
    uploads = []
    for row in corpus:
        title, body = str(row.get("title") or "").strip(), str(row["text"])
        text = f"{title}\n\n{body}" if title else body
        uploads.append((str(row["_id"]), f"{row['_id']}.txt", text.encode("utf-8")))
    with _scratch_services(settings, services_factory) as services:
        load_seconds = _warm_up(services)
        started = time.perf_counter()
        keys = _ingest(services, uploads)
        index_seconds = time.perf_counter() - started
        logger.info("indexed %s documents in %.1f s", len(keys), index_seconds)
        latencies: list[float] = []
        scores: dict[str, list[float]] = {"ndcg": [], "recall": [], "mrr": []}
        for query in judged:
            started = time.perf_counter()
            passages = services.retriever.search(str(query["text"]), CANDIDATE_CHUNKS)
            latencies.append(time.perf_counter() - started)
            found = (keys[p.document_id] for p in passages if p.document_id in keys)
            ranked = list(dict.fromkeys(found))[:K]
            relevance = qrels[str(query["_id"])]
            scores["ndcg"].append(ndcg_at_k(ranked, relevance))
            scores["recall"].append(recall_at_k(ranked, relevance))
            scores["mrr"].append(mrr_at_k(ranked, relevance))
        summary = _settings_summary(services)
        chunks = services.store.count()
    return {
        "ndcg_at_10": _mean(scores["ndcg"]),
        "recall_at_10": _mean(scores["recall"]),
        "mrr_at_10": _mean(scores["mrr"]),
        "index_seconds": index_seconds,
        "query_p50_s": percentile(latencies, 0.5),
        "query_p95_s": percentile(latencies, 0.95),
        "n_queries": len(judged),
        "n_documents": len(keys),
        "n_failed_documents": len(corpus) - len(keys),
        "n_chunks": chunks,
        "candidate_chunks": CANDIDATE_CHUNKS,
        "model_load_seconds": load_seconds,
        **summary,
    }


# -- question answering ---------------------------------------------------------------------
def load_questions(path: Path) -> list[dict[str, Any]]:
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
    with _scratch_services(settings, services_factory) as services:
        load_seconds = _warm_up(services, generator=True)
        started = time.perf_counter()
        keys = _ingest(services, [(p.name, p.name, p.read_bytes()) for p in files])
        index_seconds = time.perf_counter() - started
        logger.info("indexed %s documents in %.1f s", len(keys), index_seconds)
        records = []
        for number, row in enumerate(chosen, start=1):
            records.append(_score(services, row))
            if number % 20 == 0:
                logger.info("answered %s of %s questions", number, len(chosen))
        model = services.generator.name
        summary = {
            **_settings_summary(services),
            "prompt_style": getattr(services.generator, "prompt_style", None),
            "prompt_version": PROMPT_VERSION,
            **{f"generator.{k}": v for k, v in settings.generator.model_dump(mode="json").items()},
        }
    answerable = [r for r in records if r["answerable"]]
    unanswerable = [r for r in records if not r["answerable"]]
    answered = [r for r in answerable if not r["declined"]]
    retrieved = [r["gold_document_retrieved"] for r in answerable if "gold_document_retrieved" in r]
    return {
        "answer_f1": _mean([r["f1"] for r in answerable]),
        "exact_match": _mean([r["em"] for r in answerable]),
        "correct_decline_rate": _mean([float(r["declined"]) for r in unanswerable]),
        "false_decline_rate": _mean([float(r["declined"]) for r in answerable]),
        "citation_hit_rate": _mean([float(r["citation_hit"]) for r in answered]),
        "ttft_p50_s": percentile([r["ttft_s"] for r in records], 0.5),
        "ttft_p95_s": percentile([r["ttft_s"] for r in records], 0.95),
        "total_p50_s": percentile([r["total_s"] for r in records], 0.5),
        "total_p95_s": percentile([r["total_s"] for r in records], 0.95),
        "n_answerable": len(answerable),
        "n_unanswerable": len(unanswerable),
        "model": model,
        "answered_f1": _mean([r["f1"] for r in answered]),
        **{
            f"declined_by_{reason}": sum(r["decline_reason"] == reason for r in records)
            for reason in sorted({r["decline_reason"] for r in records} - {None})
        },
        "gold_document_in_top_k": _mean([float(x) for x in retrieved]),
        "index_seconds": index_seconds,
        "model_load_seconds": load_seconds,
        "n_documents": len(keys),
        "seed": seed,
        "limit": limit,
        **summary,
        "questions": records,
    }


# -- report ---------------------------------------------------------------------------------
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
    title = "Answer quality" if "answer_f1" in report else "Retrieval quality"
    lines = [title, "-" * (width + 12)]
    lines += [f"{k.ljust(width)}  {_format_value(k, report[k])}" for k in figures]
    if settings:
        lines += ["", "Settings", "-" * (width + 12)]
        lines += [f"{k.ljust(width)}  {_format_value(k, report[k])}" for k in settings]
    return "\n".join(lines)
