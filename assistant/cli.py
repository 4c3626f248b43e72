"""The `assistant` command: a thin click layer over the library.

Every command reads the same settings (ASSISTANT_* variables), so commands compose on one
data directory. Errors from the core become ClickExceptions with a readable message.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from assistant.errors import AssistantError
from assistant.settings import Settings, load_settings

logger = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def _settings() -> Settings:
    return click.get_current_context().find_object(Settings)  # type: ignore[return-value]


def core_errors(command: F) -> F:
    """Show core errors as one clear line and exit 1, instead of a traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AssistantError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@click.pass_context
def main(context: click.Context, verbose: bool) -> None:
    """Private, on-premises document assistant."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        context.obj = load_settings()
    except AssistantError as exc:
        raise click.ClickException(str(exc)) from exc


# -- documents ----------------------------------------------------------------------------
@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--queue", is_flag=True, help="Hand the files to running workers and return.")
@core_errors
def ingest(paths: tuple[Path, ...], queue: bool) -> None:
    """Ingest files and return once they are indexed (or failed)."""
    from assistant.services import build_services

    services = build_services(_settings())
    added, failures = [], 0
    for path in paths:
        try:
            if not path.is_file():
                raise click.ClickException(f"{path}: no such file")
            added.append(services.documents.add_path(path))
        except (AssistantError, click.ClickException) as exc:
            failures += 1
            click.echo(f"rejected  {path}: {exc}", err=True)
    if queue:
        from worker.app import app as celery_app

        for document in added:
            celery_app.send_task("ingest_document", args=[document.id])
            click.echo(f"queued    {document.filename}  id={document.id}")
    else:
        for document in added:
            done = services.documents.ingest(document.id)
            if done.status == "indexed":
                click.echo(f"indexed   {done.filename}  id={done.id}  chunks={done.chunk_count}")
            else:
                failures += 1
                click.echo(f"failed    {done.filename}  id={done.id}: {done.error}", err=True)
    if failures:
        raise SystemExit(1)


@main.command()
@click.argument("question")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@core_errors
def ask(question: str, as_json: bool) -> None:
    """Answer a question from the indexed documents, with numbered sources."""
    from assistant.answering import Answer
    from assistant.services import build_services

    answerer = build_services(_settings()).answerer
    answer: Answer | None = None
    for event in answerer.stream(question):
        if isinstance(event, Answer):
            answer = event
        elif not as_json:
            click.echo(event, nl=False)
    assert answer is not None
    if as_json:
        click.echo(json.dumps(answer.to_dict(), indent=2))
        return
    click.echo()
    if answer.declined:
        click.echo(f"\n{answer.text}")
        if answer.suggestions:
            click.echo("You may want to look at:")
            for passage in answer.suggestions:
                click.echo(f"  - {_where(passage.filename, passage.page)}")
        return
    click.echo(f"\nAnswer: {answer.text}\n\nSources:")
    for citation in answer.citations:
        passage = citation.passage
        excerpt = " ".join(passage.text.split())[:160]
        click.echo(f"  [{citation.number}] {_where(passage.filename, passage.page)}: {excerpt}")


def _where(filename: str, page: int | None) -> str:
    return f"{filename}, page {page}" if page else filename


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@core_errors
def status(as_json: bool) -> None:
    """Show the documents and their ingestion status."""
    from assistant.services import build_services

    services = build_services(_settings())
    documents = services.documents.list()
    if as_json:
        payload = {
            "counts": services.documents.counts(),
            "documents": [d.to_dict() for d in documents],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    settings = _settings()
    click.echo(f"data directory: {settings.resolved_data_dir}")
    counts = services.documents.counts()
    click.echo("documents: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    for document in documents:
        line = f"  {document.status:<10} {document.filename}  id={document.id}"
        if document.error:
            line += f"  ({document.error})"
        click.echo(line)


# -- evaluation ---------------------------------------------------------------------------
@main.group(name="eval")
def eval_group() -> None:
    """Measure retrieval and answer quality on a benchmark or a site's own golden set."""


def _report(report: dict[str, Any], json_path: Path | None) -> None:
    from assistant.evaluation import format_report

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
    from assistant.evaluation import evaluate_retrieval

    _report(evaluate_retrieval(_settings(), directory, limit=limit), json_path)


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
    from assistant.evaluation import evaluate_qa

    report = evaluate_qa(_settings(), directory, limit=limit, seed=seed, questions_file=questions)
    _report(report, json_path)


# -- processes ----------------------------------------------------------------------------
def _worker_command(settings: Settings, concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "worker.app", "worker",
        "--loglevel", "INFO", "--concurrency", str(concurrency), "--without-gossip",
        "--without-mingle", "--hostname", f"assistant-{os.getpid()}@%h",
    ]  # fmt: skip


def _web_command(settings: Settings, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--threads", "8",
        "--workers", str(workers), "--bind", f"{settings.host}:{settings.port}",
        "--timeout", "300", "--access-logfile", "-", "--no-control-socket", "web:create_app()",
    ]  # fmt: skip


@main.command()
@click.option("--concurrency", default=1, show_default=True, help="Worker processes.")
def worker(concurrency: int) -> None:
    """Run a Celery ingestion worker in the foreground."""
    settings = _settings()
    settings.ensure_dirs()
    raise SystemExit(subprocess.call(_worker_command(settings, concurrency)))


@contextmanager
def _running(commands: list[list[str]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes = [subprocess.Popen(command, start_new_session=True) for command in commands]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@main.command()
@click.option("--web-workers", default=1, show_default=True, help="Gunicorn worker processes.")
@click.option("--concurrency", default=1, show_default=True, help="Ingestion worker processes.")
@core_errors
def serve(web_workers: int, concurrency: int) -> None:
    """Run the web server and an ingestion worker; stop both with Ctrl-C."""
    from assistant.services import build_services

    settings = _settings()
    build_services(settings)  # creates the data directory and the database tables
    commands = [_web_command(settings, web_workers), _worker_command(settings, concurrency)]
    stop = {"requested": False}

    def request_stop(*_: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with _running(commands) as processes:
        click.echo(f"Document assistant running at http://{settings.host}:{settings.port}/")
        click.echo(f"Data directory: {settings.resolved_data_dir}. Press Ctrl-C to stop.")
        while not stop["requested"]:
            exited = [p for p in processes if p.poll() is not None]
            if exited:
                click.echo(f"a process exited with code {exited[0].returncode}; stopping", err=True)
                break
            time.sleep(0.5)
        click.echo("Stopping...")
    if not stop["requested"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
