"""`assistant eval`: retrieval and answer quality on a benchmark or a site's own golden set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from assistant.cli.common import core_errors, current_settings


@click.group(name="eval")
def eval_group() -> None:
    """Measure retrieval and answer quality on a benchmark or a site's own golden set."""


def _report(report: dict[str, Any], json_path: Path | None) -> None:
    from assistant.evaluation.report import format_report

    click.echo(format_report(report))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"wrote {json_path}")


@eval_group.command(name="retrieval")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write figures here.")
@click.option("--limit", type=int, default=None, help="Evaluate only the first N queries.")
@core_errors
def eval_retrieval(directory: Path, json_path: Path | None, limit: int | None) -> None:
    """Retrieval quality on a BEIR-layout set (corpus.jsonl, queries.jsonl, qrels/test.tsv)."""
    from assistant.evaluation.retrieval import evaluate_retrieval

    _report(evaluate_retrieval(current_settings(), directory, limit=limit), json_path)


@eval_group.command(name="qa")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--limit", default=200, show_default=True, help="Questions, half unanswerable.")
@click.option("--seed", default=0, show_default=True, help="Sampling seed.")
@click.option(
    "--questions",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A question file in the same JSONL layout (default: DIRECTORY/questions.jsonl).",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write figures here.")
@core_errors
def eval_qa(
    directory: Path, limit: int, seed: int, questions: Path | None, json_path: Path | None
) -> None:
    """Answer quality on documents/ + questions.jsonl (SQuAD-style scoring)."""
    from assistant.evaluation.qa import evaluate_qa

    settings = current_settings()
    report = evaluate_qa(settings, directory, limit=limit, seed=seed, questions_file=questions)
    _report(report, json_path)


@eval_group.command(name="ingest")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--limit", type=int, default=None, help="Ingest only the first N documents.")
@click.option("--concurrency", default=1, show_default=True, help="Worker processes.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write figures here.")
@core_errors
def eval_ingest(
    directory: Path, limit: int | None, concurrency: int, json_path: Path | None
) -> None:
    """Ingestion speed and worker memory: a BEIR-layout set's corpus.jsonl uploaded as .txt
    files into a scratch data directory and indexed by a real `assistant worker`."""
    from assistant.cli.common import Workers
    from assistant.evaluation.ingest_speed import measure_ingestion

    if concurrency < 1:
        raise click.BadParameter("must be at least 1", param_hint="'--concurrency'")
    report = measure_ingestion(
        current_settings(),
        directory,
        lambda settings: Workers(settings).send,
        limit=limit,
        concurrency=concurrency,
    )
    _report(report, json_path)
