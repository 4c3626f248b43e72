"""Retrieval quality of the product retriever on a BEIR-layout set (corpus.jsonl,
queries.jsonl, qrels/test.tsv)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from assistant.errors import InvalidInput
from assistant.evaluation.datasets import read_jsonl, read_qrels
from assistant.evaluation.metrics import K, mean, mrr_at_k, ndcg_at_k, percentile, recall_at_k
from assistant.evaluation.scratch import (
    ServicesFactory,
    ingest,
    scratch_services,
    settings_summary,
    warm_up,
)
from assistant.settings import Settings

# Chunks fetched per query before they are merged into at most K distinct documents.
CANDIDATE_CHUNKS = 30


def corpus_uploads(corpus: list[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
    """(document key, file name, bytes) per corpus row: the title, a blank line, the text."""
    uploads = []
    for row in corpus:
        title, body = str(row.get("title") or "").strip(), str(row["text"])
        text = f"{title}\n\n{body}" if title else body
        uploads.append((str(row["_id"]), f"{row['_id']}.txt", text.encode("utf-8")))
    return uploads


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
    uploads = corpus_uploads(corpus)
    with scratch_services(settings, services_factory) as services:
        load_seconds = warm_up(services)
        keys, index_seconds = ingest(services, uploads)
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
        summary = settings_summary(services)
        chunks = services.store.count()
    return {
        "ndcg_at_10": mean(scores["ndcg"]),
        "recall_at_10": mean(scores["recall"]),
        "mrr_at_10": mean(scores["mrr"]),
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
