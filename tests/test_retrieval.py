"""Hybrid retrieval: the fusion rule, the keyword index, and both kept in step with ingest,
re-ingest and delete. Real Chroma and SQLite FTS5 in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.keyword_index import KeywordIndex, query_terms
from assistant.retrieval import reciprocal_rank_fusion
from assistant.services import Services

FACTS = {
    "boilers.md": "The boiler room on level B2 is inspected by Hendricks Engineering every May.",
    "library.md": "The staff library lends books for three weeks; renewals are made online.",
    "fleet.md": "Pool cars are booked through the fleet desk and returned with a full tank.",
}


def test_rrf_rewards_items_ranked_well_by_both_lists() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d", "a"]], [1.0, 1.0], k=60)
    assert [item for item, _ in fused] == ["b", "a", "d", "c"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_rrf_weights_and_ties() -> None:
    dense_only = reciprocal_rank_fusion([["a", "b"], ["b", "a"]], [1.0, 0.0], k=60)
    assert [item for item, _ in dense_only] == ["a", "b"]
    tie = reciprocal_rank_fusion([["x"], ["y"]], [1.0, 1.0], k=10)
    assert [item for item, _ in tie] == ["x", "y"]  # first appearance wins a tie
    assert tie[0][1] == pytest.approx(1 / 11)


def test_query_terms_drop_stopwords_and_repeats() -> None:
    assert query_terms("What is the boiler, THE Boiler room?") == ["boiler", "room"]
    assert query_terms("what is it") == []


def test_keyword_index_filters_by_collection_inside_the_query(tmp_path: Path) -> None:
    index = KeywordIndex(tmp_path / "k.sqlite3")
    index.upsert(
        [
            ("d1:1:0", "d1", "finance", "quarterly budget review for the finance team"),
            ("d2:1:0", "d2", "hr", "budget for staff training in the hr team"),
        ]
    )
    assert {h.chunk_id for h in index.search("budget", 10)} == {"d1:1:0", "d2:1:0"}
    assert [h.chunk_id for h in index.search("budget", 10, ["hr"])] == ["d2:1:0"]
    assert index.search("budget", 10, []) == []
    assert index.search("reviews", 10)[0].chunk_id == "d1:1:0"  # stemmed: review(s)
    index.delete_document("d1")
    assert [h.chunk_id for h in index.search("budget", 10)] == ["d2:1:0"]


@pytest.mark.slow
def test_exact_names_are_found_by_keywords_and_indexes_stay_in_step(services: Services) -> None:
    ids = {}
    for name, text in FACTS.items():
        ids[name] = services.documents.ingest(services.documents.add(name, text.encode()).id).id
    assert services.keywords.count() == services.store.count() == 3
    best = services.retriever.search("Hendricks Engineering", 3)[0]
    assert best.document_id == ids["boilers.md"]
    assert 0 < best.similarity <= 1
    # Re-ingest replaces, delete removes: from both indexes.
    services.documents.ingest(ids["boilers.md"], force=True)
    assert services.keywords.count() == services.store.count() == 3
    services.documents.delete(ids["boilers.md"])
    assert services.keywords.count() == services.store.count() == 2
    found = services.retriever.search("Hendricks Engineering boiler room", 3)
    assert ids["boilers.md"] not in {p.document_id for p in found}


@pytest.mark.slow
def test_collection_filter_applies_to_both_searches(services: Services) -> None:
    document = services.documents.add("boilers.md", FACTS["boilers.md"].encode())
    services.documents.ingest(document.id)
    assert services.retriever.search("Hendricks boiler inspection", 3, ["default"])
    assert services.retriever.search("Hendricks boiler inspection", 3, ["other"]) == []
    assert services.retriever.search("Hendricks boiler inspection", 3, []) == []
