"""Document commands: ingest files and folders, re-ingest or rebuild and verify the
indexes, ask a question, and show the ingestion status."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from assistant.access import DEFAULT_COLLECTION
from assistant.cli.common import Progress, Workers, core_errors, current_settings, open_services
from assistant.db import DocumentStatus
from assistant.errors import AssistantError, AuditError, DuplicateDocument, UnsupportedFileType
from assistant.index_check import index_settings
from assistant.parsing import check_extension

if TYPE_CHECKING:
    from assistant.index_check import IndexReport
    from assistant.services import Services

FAILED = ("rejected", "failed")  # outcomes that make the command exit 1


# -- ingest -------------------------------------------------------------------------------
@dataclass
class Found:
    """The files named or found in folders, and what the folder walk left out."""

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unsupported types
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # folders


def find_files(paths: Sequence[Path]) -> Found:
    """Named files are kept as they are (the core says whether it can take them); folders
    are walked recursively, in name order, skipping hidden files and folders."""
    found = Found()
    files: dict[Path, None] = {}  # ordered, without repeats

    def unreadable(error: OSError) -> None:
        found.unreadable.append((Path(str(error.filename)), error.strerror or str(error)))

    for path in paths:
        if not path.is_dir():
            files[path] = None
            continue
        for root, folders, names in os.walk(path, onerror=unreadable):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue
                try:
                    check_extension(name)
                except UnsupportedFileType as exc:
                    found.skipped.append((Path(root, name), str(exc)))
                    continue
                files[Path(root, name)] = None
    found.files = list(files)
    return found


def check_collection(services: Services, name: str) -> None:
    names = services.access.collection_names()
    if name not in names:
        raise click.BadParameter(
            f"no collection {name!r}; there are: {', '.join(names)} "
            "(add one with `assistant collections create NAME`)",
            param_hint="'--collection'",
        )


def _processed(
    services: Services, document_id: str, workers: Workers | None, force: bool = False
) -> tuple[str, str]:
    """Ingest one stored document inline, or hand it to the workers: (outcome, line)."""
    if workers is not None:
        workers.send(document_id, force=force)
        document = services.documents.get(document_id)
        return "queued", f"queued    {document.filename}  id={document.id}"
    done = services.documents.ingest(document_id, force=force)
    if done.status == DocumentStatus.INDEXED:
        return "indexed", f"indexed   {done.filename}  id={done.id}  chunks={done.chunk_count}"
    return "failed", f"failed    {done.filename}  id={done.id}: {done.error}"


def _ingest_file(
    services: Services, path: Path, collection: str, workers: Workers | None
) -> tuple[str, str]:
    """Store one file (audited), then ingest or queue it: (outcome, line)."""
    try:
        if not path.is_file():
            return "rejected", f"rejected  {path}: no such file"
        # Stored and audited together; an audit failure stops the command (fail closed).
        document = services.upload(None, path.name, path.read_bytes(), collection)
    except AuditError:
        raise
    except DuplicateDocument as exc:
        return "duplicate", f"duplicate {path}: {exc}"
    except OSError as exc:
        return "rejected", f"rejected  {path}: {exc.strerror or exc}"
    except AssistantError as exc:
        return "rejected", f"rejected  {path}: {exc}"
    return _processed(services, document.id, workers)


def _summary(tally: Counter[str]) -> None:
    counts = ", ".join(f"{number} {outcome}" for outcome, number in tally.items() if number)
    click.echo(f"done: {counts or 'nothing to do'}", err=True)
    if any(tally[outcome] for outcome in FAILED):
        raise SystemExit(1)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--collection", default=DEFAULT_COLLECTION, show_default=True, help="The collection to add to."
)
@click.option("--queue", is_flag=True, help="Hand the files to running workers and return.")
@core_errors
def ingest(paths: tuple[Path, ...], collection: str, queue: bool) -> None:
    """Ingest files and folders (recursively; hidden entries are skipped) and return once
    they are indexed (or failed). Duplicates and unsupported files in folders are reported
    and passed over; exit 1 if any file was rejected or failed."""
    services = open_services()
    check_collection(services, collection)
    workers = Workers() if queue else None
    found = find_files(paths)
    tally: Counter[str] = Counter()
    for path, reason in found.unreadable:
        tally["rejected"] += 1
        click.echo(f"rejected  {path}: cannot read the folder: {reason}", err=True)
    for path, reason in found.skipped:
        tally["skipped"] += 1
        click.echo(f"skipped   {path}: {reason}")
    progress = Progress(found.files, "queueing" if queue else "ingesting", lambda p: p.name)
    for path in progress:
        outcome, line = _ingest_file(services, path, collection, workers)
        tally[outcome] += 1
        progress.echo(line, err=outcome in FAILED)
    _summary(tally)


# -- reindex ------------------------------------------------------------------------------
def _reingest(services: Services, document_ids: Sequence[str]) -> dict[str, str]:
    """Check every id first, then audit each re-ingest before it happens: id → filename."""
    documents = [services.documents.get(document_id) for document_id in dict.fromkeys(document_ids)]
    for document in documents:
        if not document.current:
            raise click.ClickException(
                f"document {document.id} is an older version of {document.filename}; "
                "re-ingest the current version instead"
            )
    for document in documents:
        services.audit(None, "document.reingest", document.described())
    return {document.id: document.filename for document in documents}


def _rebuild(services: Services, queue: bool) -> dict[str, str]:
    """Empty the indexes, record the settings they are rebuilt with, and queue every current
    document again: id → filename, oldest first."""
    wanted = index_settings(services.embedder.name, services.settings.chunking)
    names = {document.id: document.filename for document in reversed(services.documents.list())}
    details = {"settings": wanted, "documents": len(names), "queued": queue}
    services.audit(None, "index.rebuild", details)  # before anything is cleared
    services.index.clear(wanted)
    requeued = set(services.documents.requeue_all())
    added_meanwhile = {document_id: document_id for document_id in requeued - names.keys()}
    return {i: name for i, name in names.items() if i in requeued} | added_meanwhile


def _differences(report: IndexReport) -> str:
    found = [
        ("missing vectors", report.missing_vectors),
        ("extra vectors", report.extra_vectors),
        ("missing keyword rows", report.missing_keywords),
        ("extra keyword rows", report.extra_keywords),
        ("vectors no search finds", report.unreachable_vectors),
    ]
    return ", ".join(f"{what}: {number}" for what, number in found if number)


def _verify(services: Services, as_json: bool) -> int:
    """Compare the indexes with the database and repair them; 1 if still inconsistent."""
    found = services.index.verify(repair=True)
    after = services.index.verify(repair=False) if found.repaired else None
    consistent = (after or found).consistent
    report = {
        "found": found.to_dict(),
        "after_repair": after.to_dict() if after else None,
        "consistent": consistent,
    }
    services.audit(None, "index.verify", report)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return 0 if consistent else 1
    for key, value in found.to_dict().items():
        if key not in ("repaired", "consistent"):
            click.echo(f"{key.replace('_', ' '):<20} {value}")
    if found.consistent:
        click.echo("index consistent with the database")
    elif consistent:
        click.echo(f"repaired ({_differences(found)}); the index is now consistent")
    else:
        click.echo(f"still inconsistent after repair: {_differences(after or found)}", err=True)
    return 0 if consistent else 1


@click.command()
@click.argument("document_ids", nargs=-1)
@click.option("--all", "rebuild", is_flag=True, help="Clear the indexes and re-ingest everything.")
@click.option("--verify", is_flag=True, help="Compare the indexes with the database; repair.")
@click.option("--queue", is_flag=True, help="Hand the documents to running workers and return.")
@click.option("--json", "as_json", is_flag=True, help="With --verify: print the report as JSON.")
@core_errors
def reindex(
    document_ids: tuple[str, ...], rebuild: bool, verify: bool, queue: bool, as_json: bool
) -> None:
    """Re-ingest the given documents; or rebuild the indexes after a change of embedding
    model or chunking (--all); or compare them with the database and repair them (--verify,
    exit 1 only if they are still inconsistent after the repair)."""
    if (bool(document_ids), rebuild, verify).count(True) != 1:
        raise click.UsageError("give document ids, --all or --verify: exactly one of them")
    if as_json and not verify:
        raise click.UsageError("--json goes with --verify")
    if queue and verify:
        raise click.UsageError("--queue goes with document ids or --all")
    services = open_services()
    if verify:
        raise SystemExit(_verify(services, as_json))
    workers = Workers() if queue else None
    names = _rebuild(services, queue) if rebuild else _reingest(services, document_ids)
    tally: Counter[str] = Counter()
    progress = Progress(list(names), "queueing" if queue else "ingesting", names.__getitem__)
    for document_id in progress:
        # After --all the documents are queued; by id they are re-ingested whatever they are.
        outcome, line = _processed(services, document_id, workers, force=not rebuild)
        tally[outcome] += 1
        progress.echo(line, err=outcome in FAILED)
    _summary(tally)


# -- ask and status -----------------------------------------------------------------------
@click.command()
@click.argument("question")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@core_errors
def ask(question: str, as_json: bool) -> None:
    """Answer a question from the indexed documents, with numbered sources."""
    from assistant.answering import Answer

    services = open_services()
    answer: Answer = services.answerer.ask(question)
    # Fail closed: nothing is printed unless the question and answer are in the audit log.
    services.audit(None, "question", services.answerer.audit_details(answer, None))
    if as_json:
        click.echo(json.dumps(answer.to_dict(), indent=2))
        return
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
        excerpt = " ".join(citation.sentence.split())[:240]
        click.echo(f"  [{citation.number}] {_where(passage.filename, passage.page)}: {excerpt}")
    if answer.routed:
        click.echo(f"(answered by the larger model, {answer.model})")


def _where(filename: str, page: int | None) -> str:
    return f"{filename}, page {page}" if page else filename


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@core_errors
def status(as_json: bool) -> None:
    """Show the documents and their ingestion status."""
    services = open_services()
    documents = services.documents.list()
    if as_json:
        payload = {
            "counts": services.documents.counts(),
            "documents": [d.to_dict() for d in documents],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(f"data directory: {current_settings().resolved_data_dir}")
    counts = services.documents.counts()
    click.echo("documents: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    for document in documents:
        line = f"  {document.status:<10} {document.filename}  id={document.id}"
        if document.error:
            line += f"  ({document.error})"
        click.echo(line)
