"""`assistant eval`: retrieval and answer quality on a benchmark or a site's own golden set."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from assistant.cli.common import core_errors, current_settings, open_services


@click.group(name="eval")
def eval_group() -> None:
    """Measure retrieval and answer quality on a benchmark or a site's own golden set."""


def question_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--limit, --seed and --questions: which questions a QA or load run asks."""
    for option in reversed(
        [
            click.option(
                "--limit", default=200, show_default=True, help="Questions, half unanswerable."
            ),
            click.option("--seed", default=0, show_default=True, help="Sampling seed."),
            click.option(
                "--questions",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="A question file in the qa layout (default: DIRECTORY/questions.jsonl).",
            ),
        ]
    ):
        command = option(command)
    return command


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
@question_options
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write figures here.")
@click.option(
    "--follow-ups", is_flag=True,
    help="Ask LIMIT questions as follow-ups in a conversation (pairs derived at run time from "
    "questions about the same paragraph or document), and the same questions alone.",
)  # fmt: skip
@core_errors
def eval_qa(
    directory: Path,
    limit: int,
    seed: int,
    questions: Path | None,
    json_path: Path | None,
    follow_ups: bool,
) -> None:
    """Answer quality on documents/ + questions.jsonl (SQuAD-style scoring)."""
    from assistant.evaluation.qa import evaluate_qa

    settings = current_settings()
    report = evaluate_qa(
        settings, directory, limit=limit, seed=seed, questions_file=questions,
        follow_ups=follow_ups,
    )  # fmt: skip
    _report(report, json_path)


@eval_group.command(name="calibrate")
@click.argument(
    "reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--route", type=click.Choice(["small", "large"]), default="small", show_default=True,
    help="Which model's answers to fit (run `eval qa` with ASSISTANT_ROUTING__MODE=off for "
    "the small one, =always for the large one, and ASSISTANT_ANSWERING__ANSWER_THRESHOLD=0).",
)  # fmt: skip
@click.option("--max-wrong", type=click.FloatRange(0, 1), default=0.15, show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write figures here.")
@core_errors
def eval_calibrate(
    reports: tuple[Path, ...], route: str, max_wrong: float, json_path: Path | None
) -> None:
    """Fit the "not found" calibrator on `eval qa` reports (their --json files)."""
    from assistant.evaluation.calibrate import calibrate

    result = calibrate(reports, route, max_wrong)
    click.echo(f"route {route}: {result['answers']} answers, {result['right']} right")
    for row in result["risk_coverage"]:
        click.echo(
            f"  confidence >= {row['threshold']:.3f}: answers {row['coverage']:.2f} of them, "
            f"{row['wrong_answer_rate']:.2f} wrong"
        )
    click.echo(f"lowest threshold with at most {max_wrong:.0%} wrong: "
               f"{result['threshold_for_max_wrong']}")  # fmt: skip
    click.echo("weights (the calibration entry for this route):")
    click.echo(json.dumps(result["calibration"]))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_path}")


def _levels(_: click.Context, __: click.Parameter, value: str) -> list[tuple[int, bool]]:
    from assistant.evaluation.load import parse_levels

    try:
        return parse_levels(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@eval_group.command(name="load")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The server.")
@click.option("--token", envvar="ASSISTANT_EVAL_TOKEN", help="An admin's API token.")
@click.option(
    "--user-tokens",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="API tokens for the simulated users, one per line (default: --setup's users, "
    "else --token for all).",
)
@click.option(
    "--setup",
    is_flag=True,
    help="Create the users, tokens and collections of the load in this data directory, "
    "which must be the server's; the tokens are revoked at the end.",
)
@click.option(
    "--prepare", is_flag=True, help="Upload DIRECTORY/documents first, and wait until indexed."
)
@click.option("--collection", help="For --prepare (default: loadtest with --setup, else default).")
@click.option(
    "--users",
    "levels",
    default="5,10,20,2x",
    show_default=True,
    callback=_levels,
    help="Concurrent users per level; Nx is N times the server's answer capacity.",
)
@click.option(
    "--duration", type=click.FloatRange(min=1), default=60.0, show_default=True,
    help="Seconds per level.",
)  # fmt: skip
@click.option(
    "--ingest",
    type=click.Path(exists=True, path_type=Path),
    help="Upload these files (a folder, or a BEIR corpus.jsonl) during each level.",
)
@question_options
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write figures here.")
@core_errors
def eval_load(
    directory: Path, levels: list[tuple[int, bool]], duration: float, json_path: Path | None,
    **options: Any,
) -> None:  # fmt: skip
    """Latency, errors and throughput of a running server under concurrent users asking
    DIRECTORY's questions (documents/ + questions.jsonl), optionally with ingestion."""
    from assistant.evaluation.load import LoadOptions, evaluate_load, format_markdown

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    settings = current_settings()
    chosen = LoadOptions(levels=levels, seconds=duration, **options)
    services = open_services() if chosen.setup else None
    report = evaluate_load(settings, directory, chosen, services)
    click.echo(format_markdown(report))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"wrote {json_path}")


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
