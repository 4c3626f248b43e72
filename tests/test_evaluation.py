"""Evaluation: metric arithmetic on hand-computed cases, input validation, and both runners
on tiny sets written here (never the benchmark data). The fakes check the logic; one slow
test runs the real `assistant eval qa` with the real models."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from assistant.answering.generation import ExtractiveFakeGenerator
from assistant.cli import main
from assistant.embedding import HashingEmbedder
from assistant.errors import InvalidInput
from assistant.evaluation.datasets import load_questions, read_jsonl, read_qrels
from assistant.evaluation.metrics import (
    contains_answer,
    exact_match,
    mrr_at_k,
    ndcg_at_k,
    normalize_answer,
    percentile,
    recall_at_k,
    strip_citations,
    token_f1,
)
from assistant.evaluation.qa import evaluate_qa, sample_questions
from assistant.evaluation.report import format_report
from assistant.evaluation.retrieval import evaluate_retrieval
from assistant.services import Services, build_services
from assistant.settings import Settings, load_settings

# Evaluations run in a scratch SQLite data directory of their own (evaluation/scratch.py).
pytestmark = pytest.mark.sqlite("evaluations use a scratch SQLite database by design")

RETRIEVAL_KEYS = {"ndcg_at_10", "recall_at_10", "mrr_at_10", "index_seconds", "query_p50_s",
                  "query_p95_s"}  # fmt: skip
QA_KEYS = {"answer_f1", "exact_match", "correct_decline_rate", "false_decline_rate",
           "citation_hit_rate", "ttft_p50_s", "ttft_p95_s", "total_p50_s", "total_p95_s",
           "n_answerable", "n_unanswerable", "model", "answer_recall", "wrong_answer_rate",
           "routed_rate", "risk_coverage"}  # fmt: skip

DOCS = {
    "lighthouse.txt": "The Kestrel Point lighthouse was automated in 1987. "
    "Its lamp is inspected every March by two licensed technicians.",
    "canteen.txt": "The staff canteen opens at half past seven. "
    "Vegetarian meals carry a green leaf on the menu board.",
    "parking.txt": "Visitor parking permits are issued at the north gate. "
    "A permit is valid for one day only.",
}
QUESTIONS = [
    # Answered with exactly the gold sentence: F1 1, EM 1.
    {"id": "a1", "question": "When was the Kestrel Point lighthouse automated?",
     "answerable": True,
     "answers": ["in 1987", "The Kestrel Point lighthouse was automated in 1987"],
     "document": "lighthouse.txt", "paragraph": 0},
    # The fake answers "The staff canteen opens at half past seven": 7 words after
    # normalisation, 3 of them gold, so precision 3/7, recall 1, F1 0.6.
    {"id": "a2", "question": "When does the staff canteen open? The canteen opens at",
     "answerable": True, "answers": ["half past seven"], "document": "canteen.txt", "paragraph": 0},
    # Nothing is retrieved above min_score: declined, so F1 0 and a false decline.
    {"id": "a3", "question": "Who chairs the quarterly compliance review?",
     "answerable": True, "answers": ["Dr. Okafor"], "document": "review.txt", "paragraph": 0},
    {"id": "u1", "question": "Who painted the Mona Lisa?", "answerable": False, "answers": []},
    # Retrieval matches strongly, so the fake answers it: not a correct decline.
    {"id": "u2", "question": "Why was the Kestrel Point lighthouse automated in 1987?",
     "answerable": False, "answers": []},
]  # fmt: skip


def fakes(settings: Settings) -> Services:
    return build_services(settings, embedder=HashingEmbedder(), generator=ExtractiveFakeGenerator())


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def qa_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "qa"
    (directory / "documents").mkdir(parents=True)
    for name, text in DOCS.items():
        (directory / "documents" / name).write_text(text)
    write_jsonl(directory / "questions.jsonl", QUESTIONS)
    return directory


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "beir"
    corpus = [{"_id": name.split(".")[0], "title": "", "text": text} for name, text in DOCS.items()]
    write_jsonl(directory / "corpus.jsonl", corpus)
    write_jsonl(
        directory / "queries.jsonl",
        [
            {"_id": "q1", "text": "lighthouse lamp inspected by technicians"},
            {"_id": "q2", "text": "visitor parking permit north gate"},
            {"_id": "q3", "text": "a query without judgements is not evaluated"},
        ],
    )
    (directory / "qrels").mkdir()
    (directory / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\tlighthouse\t1\nq2\tparking\t2\nq2\tcanteen\t0\n"
    )
    return directory


# -- metrics --------------------------------------------------------------------------------
def test_ndcg_binary_and_graded() -> None:
    # One of two relevant documents, at rank 2: (1/log2 3) / (1 + 1/log2 3).
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "b", "y"], {"b": 1, "d": 1}) == pytest.approx(expected)
    # Graded, linear gains: ranked b(1), a(2) against the ideal a(2), b(1).
    graded = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(["b", "a"], {"a": 2, "b": 1}) == pytest.approx(graded)
    assert ndcg_at_k(["a", "b"], {"a": 2, "b": 1}) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "a"], {"a": 1}, k=1) == 0.0
    assert ndcg_at_k(["a"], {"a": 0}) == 0.0


def test_recall_and_mrr() -> None:
    relevance = {"b": 1, "d": 1, "z": 0}
    assert recall_at_k(["x", "b", "y"], relevance) == 0.5
    assert recall_at_k(["d", "b"], relevance) == 1.0
    assert recall_at_k(["x", "b"], relevance, k=1) == 0.0
    assert mrr_at_k(["x", "z", "b"], relevance) == pytest.approx(1 / 3)
    assert mrr_at_k(["x", "y", "b"], relevance, k=2) == 0.0
    assert mrr_at_k(["d"], relevance) == 1.0


def test_percentile_interpolates() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.95) == pytest.approx(3.85)
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([], 0.5) is None


def test_squad_normalisation_f1_and_exact_match() -> None:
    assert normalize_answer("The  Cat's, hat!") == "cats hat"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("Theatre") == "theatre"
    # "cat sat" against "cat sat down": precision 1, recall 2/3, F1 0.8.
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("the", "a") == 1.0  # both normalise to nothing
    assert exact_match("The Cat.", "cat") == 1.0
    assert exact_match("cat sat", "cat") == 0.0
    assert normalize_answer(strip_citations("Paris [1][12].")) == "paris"


def test_contains_answer_uses_whole_normalised_words() -> None:
    assert contains_answer("It opened in the year 1987, in March.", ["year 1987"])
    assert not contains_answer("It opened in 19870.", ["1987"])
    assert not contains_answer("anything", ["the"])  # an answer that normalises to nothing


# -- input validation -----------------------------------------------------------------------
def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_text('{"_id": "1", "text": "ok"}\n\n{"_id": "2", "text": \n')
    with pytest.raises(InvalidInput, match=r"queries\.jsonl:3: malformed JSON"):
        read_jsonl(path)
    path.write_text('{"_id": "1"}\n')
    with pytest.raises(InvalidInput, match=r"queries\.jsonl:1: missing field\(s\) text"):
        read_jsonl(path, required=("_id", "text"))
    path.write_text("[1, 2]\n")
    with pytest.raises(InvalidInput, match=r":1: expected a JSON object"):
        read_jsonl(path)


def test_missing_files_and_bad_qrels(tmp_path: Path, beir_dir: Path, settings: Settings) -> None:
    with pytest.raises(InvalidInput, match=r"nothing\.jsonl: missing"):
        read_jsonl(tmp_path / "nothing.jsonl")
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1 lighthouse 1\n")
    with pytest.raises(InvalidInput, match=r"test\.tsv:2: expected"):
        read_qrels(beir_dir / "qrels" / "test.tsv")
    (beir_dir / "qrels" / "test.tsv").unlink()
    with pytest.raises(InvalidInput, match=r"test\.tsv: missing qrels file"):
        evaluate_retrieval(settings, beir_dir, services_factory=fakes)


def test_question_file_validation(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [*QUESTIONS[:1], {**QUESTIONS[0], "answers": []}])
    with pytest.raises(InvalidInput, match=r"q\.jsonl:2: an answerable question needs"):
        load_questions(path)
    path = write_jsonl(tmp_path / "q.jsonl", [{**QUESTIONS[0], "answerable": "yes"}])
    with pytest.raises(InvalidInput, match=r"q\.jsonl:1: 'answerable' must be"):
        load_questions(path)
    only_answerable = load_questions(write_jsonl(tmp_path / "q.jsonl", QUESTIONS[:3]))
    with pytest.raises(InvalidInput, match=r"q\.jsonl: the file has no unanswerable"):
        sample_questions(only_answerable, 10, 0, tmp_path / "q.jsonl")
    only_unanswerable = load_questions(write_jsonl(tmp_path / "q.jsonl", QUESTIONS[3:]))
    with pytest.raises(InvalidInput, match="no answerable"):
        sample_questions(only_unanswerable, 10, 0, tmp_path / "q.jsonl")


def test_sampling_is_seeded_and_balanced() -> None:
    rows = [{"id": f"a{i}", "answerable": True} for i in range(10)]
    rows += [{"id": f"u{i}", "answerable": False} for i in range(3)]
    first = sample_questions(rows, 6, 7, Path("q.jsonl"))
    assert first == sample_questions(rows, 6, 7, Path("q.jsonl"))
    assert sum(r["answerable"] for r in first) == 3
    assert sum(not r["answerable"] for r in first) == 3
    # Fewer unanswerable than asked for: all of them are taken.
    assert sum(not r["answerable"] for r in sample_questions(rows, 10, 0, Path("q.jsonl"))) == 3
    # A limit that covers the file takes every question (cuad-dev's "all 188").
    every = sample_questions(rows, 13, 0, Path("q.jsonl"))
    assert sorted(r["id"] for r in every) == sorted(r["id"] for r in rows)


def test_cli_reports_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(
        main, ["eval", "retrieval", str(tmp_path / "empty")],
        env={"ASSISTANT_DATA_DIR": str(tmp_path / "var")},
    )  # fmt: skip
    assert result.exit_code == 1
    assert "corpus.jsonl: missing" in result.output


# -- the runners, with the fast fakes -------------------------------------------------------
def test_evaluate_retrieval_with_fakes(beir_dir: Path, settings: Settings) -> None:
    report = evaluate_retrieval(settings, beir_dir, services_factory=fakes)
    assert report.keys() >= RETRIEVAL_KEYS
    assert report["n_queries"] == 2  # q3 has no judgement
    assert report["n_documents"] == 3
    assert report["ndcg_at_10"] == pytest.approx(1.0)
    assert report["recall_at_10"] == pytest.approx(1.0)
    assert report["mrr_at_10"] == pytest.approx(1.0)
    assert report["embedder"] == "hashing-test-embedder"
    assert 0 < report["query_p50_s"] <= report["query_p95_s"]
    # The user's data directory is never created or touched.
    assert not settings.resolved_data_dir.exists()
    limited = evaluate_retrieval(settings, beir_dir, limit=1, services_factory=fakes)
    assert limited["n_queries"] == 1
    assert "ndcg_at_10" in format_report(report)


def test_evaluate_qa_with_fakes(qa_dir: Path, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "var", retrieval={"min_score": 0.3})
    report = evaluate_qa(settings, qa_dir, limit=6, seed=0, services_factory=fakes)
    assert report.keys() >= QA_KEYS
    assert (report["n_answerable"], report["n_unanswerable"]) == (3, 2)
    assert report["answer_f1"] == pytest.approx((1 + 0.6 + 0) / 3)
    assert report["exact_match"] == pytest.approx(1 / 3)
    assert report["false_decline_rate"] == pytest.approx(1 / 3)
    assert report["correct_decline_rate"] == pytest.approx(0.5)
    assert report["citation_hit_rate"] == pytest.approx(1.0)
    assert report["model"] == "extractive-fake"
    assert report["declined_by_no-passage"] == 2
    # The fake copies whole sentences: every answer holds its gold answer, and the one
    # unanswerable question it answers is the one wrong answer of three given.
    assert report["answer_recall"] == pytest.approx(2 / 3)
    assert report["wrong_answer_rate"] == pytest.approx(1 / 3)
    assert report["routed_rate"] == 0.0
    assert report["ttft_p50_s_small"] is not None
    records = {r["id"]: r for r in report["questions"]}
    assert records["a2"]["answer_recall"] == 1.0 and records["a2"]["f1"] == pytest.approx(0.6)
    assert records["a3"]["declined"] and records["a3"]["f1"] == 0.0
    assert records["u1"]["declined"] and not records["u2"]["declined"]
    assert all(0 < r["ttft_s"] <= r["total_s"] for r in records.values())
    assert not settings.resolved_data_dir.exists()
    table = format_report(report)
    assert "answer_f1" in table and "0.533" in table and "questions" not in table


# -- the real thing -------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_eval_qa_with_real_models(qa_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "qa.json"
    result = CliRunner().invoke(
        main, ["eval", "qa", str(qa_dir), "--limit", "4", "--json", str(out)],
        env={"ASSISTANT_DATA_DIR": str(tmp_path / "var")},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report.keys() >= QA_KEYS
    assert (report["n_answerable"], report["n_unanswerable"]) == (2, 2)
    for key in ("answer_f1", "exact_match", "correct_decline_rate", "false_decline_rate"):
        assert 0.0 <= report[key] <= 1.0
    assert report["citation_hit_rate"] is None or 0.0 <= report["citation_hit_rate"] <= 1.0
    assert 0 < report["ttft_p50_s"] <= report["total_p95_s"] < 120
    assert report["model"].endswith(".gguf")
    assert len(report["questions"]) == 4
    assert "answer_f1" in result.output
    assert not (tmp_path / "var").exists()


@pytest.mark.slow
def test_cli_eval_ingest_times_a_real_worker(
    beir_dir: Path, tmp_path: Path, model_cache: Path
) -> None:
    out = tmp_path / "ingest.json"
    env = {
        "ASSISTANT_DATA_DIR": str(tmp_path / "var"),
        "ASSISTANT_MODEL_CACHE_DIR": str(model_cache),
    }
    result = CliRunner().invoke(
        main, ["eval", "ingest", str(beir_dir), "--json", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert (report["n_documents"], report["n_indexed"], report["n_failed"]) == (3, 3, 0)
    assert report["n_chunks"] == 3  # one short text each
    assert report["chunks_per_second"] > 0 and report["documents_per_minute"] > 0
    largest = report["worker_peak_rss_mib_largest_process"]
    assert (
        report["worker_peak_rss_mib_all_processes"] >= largest >= report["worker_idle_rss_mib"] / 4
    )
    assert "Ingestion speed" in result.output and "chunks_per_second" in result.output


def test_cli_eval_ingest_refuses_bad_input(tmp_path: Path, beir_dir: Path) -> None:
    env = {"ASSISTANT_DATA_DIR": str(tmp_path / "var")}
    (tmp_path / "empty").mkdir()
    missing = CliRunner().invoke(main, ["eval", "ingest", str(tmp_path / "empty")], env=env)
    assert missing.exit_code == 1 and "corpus.jsonl: missing" in missing.output
    zero = CliRunner().invoke(
        main, ["eval", "ingest", str(beir_dir), "--concurrency", "0"], env=env
    )
    assert zero.exit_code == 2 and "must be at least 1" in zero.output


def test_evaluate_qa_follow_ups_with_fakes(tmp_path: Path) -> None:
    directory = tmp_path / "conversation"
    (directory / "documents").mkdir(parents=True)
    (directory / "documents" / "kestrel.txt").write_text(
        "The lighthouse at Kestrel Point was built in 1871. The lamp at Kestrel Point is "
        "inspected every March by two technicians.\n"
    )
    place = {"document": "kestrel.txt", "paragraph": 0}
    write_jsonl(directory / "questions.jsonl", [
        {"id": "f1", "question": "When was the lighthouse at Kestrel Point built?",
         "answerable": True, "answers": ["1871"], **place},
        {"id": "f2", "question": "When is the lamp at Kestrel Point inspected?",
         "answerable": True, "answers": ["every March"], **place},
        {"id": "f3", "question": "Who painted the lighthouse at Kestrel Point?",
         "answerable": False, "answers": [], **place},
    ])  # fmt: skip
    settings = load_settings(data_dir=tmp_path / "var", retrieval={"min_score": 0.1})
    report = evaluate_qa(settings, directory, limit=2, follow_ups=True, services_factory=fakes)
    compared = report["follow_ups"]
    assert compared["pairs"] == 2
    assert compared.keys() >= {"follow_up", "standalone", "f1_gap", "examples"}
    assert compared["follow_up"].keys() >= {
        "answer_f1",
        "correct_decline_rate",
        "wrong_answer_rate",
    }
    asked = {r["question"]: r for r in report["questions"]}
    assert len(asked) == 2 and all(q.startswith("And ") and "Kestrel" not in q for q in asked)
    for question, record in asked.items():
        # Searched with the question it follows, which names the place.
        assert record["resolved_question"].startswith(question + " (")
        assert "Kestrel Point" in record["resolved_question"]
    assert (report["n_answerable"], report["n_unanswerable"]) == (1, 1)


def test_follow_ups_need_questions_that_share_a_name(qa_dir: Path, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "var")
    with pytest.raises(InvalidInput, match="no follow-up can be derived"):
        evaluate_qa(settings, qa_dir, limit=4, follow_ups=True, services_factory=fakes)
