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
from datetime import UTC, date, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from assistant.accounts import ROLES, AccountService, Principal
from assistant.errors import AssistantError
from assistant.settings import Settings, load_settings

if TYPE_CHECKING:
    from assistant.audit import AuditLog

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
            document = services.documents.add_path(path)
            services.audit(None, "document.upload", document.described())
            added.append(document)
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

    services = build_services(_settings())
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


# -- users, groups and collections --------------------------------------------------------
def _accounts() -> tuple[AccountService, Principal]:
    """The account service (its changes are audited) and the CLI's operator principal."""
    from assistant.services import build_services

    return build_services(_settings()).accounts, Principal.operator()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@main.group()
def users() -> None:
    """Manage user accounts (roles: staff, admin, auditor)."""


@users.command(name="add")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--group", "groups", multiple=True, help="A group to join (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@core_errors
def users_add(username: str, role: str, groups: tuple[str, ...], password_stdin: bool) -> None:
    """Add a user; the password is prompted for (or read from stdin)."""
    accounts, operator = _accounts()
    accounts.add_user(username, _read_password(password_stdin), role, groups, actor=operator)
    click.echo(f"added user {username} ({role})")


@users.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the users as JSON.")
@core_errors
def users_list(as_json: bool) -> None:
    """List the users, their roles and groups."""
    accounts, _ = _accounts()
    found = accounts.list_users()
    if as_json:
        click.echo(json.dumps([user.to_dict() for user in found], indent=2))
        return
    for user in found:
        state = "disabled" if user.disabled else "active"
        groups = ",".join(user.groups) or "-"
        click.echo(f"{user.username:<24} {user.role:<8} {state:<8} {groups}")


@users.command(name="disable")
@click.argument("username")
@core_errors
def users_disable(username: str) -> None:
    """Disable a user: no login, and their API tokens stop working."""
    accounts, operator = _accounts()
    accounts.disable_user(username, actor=operator)
    click.echo(f"disabled user {username}")


@users.command(name="enable")
@click.argument("username")
@core_errors
def users_enable(username: str) -> None:
    """Enable a disabled user again."""
    accounts, operator = _accounts()
    accounts.enable_user(username, actor=operator)
    click.echo(f"enabled user {username}")


@users.command(name="set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@core_errors
def users_set_password(username: str, password_stdin: bool) -> None:
    """Set a user's password."""
    accounts, operator = _accounts()
    accounts.get_user(username)  # fail before prompting for a password
    accounts.set_password(username, _read_password(password_stdin), actor=operator)
    click.echo(f"password changed for {username}")


@users.command(name="set-role")
@click.argument("username")
@click.argument("role", type=click.Choice(ROLES))
@core_errors
def users_set_role(username: str, role: str) -> None:
    """Change a user's role."""
    accounts, operator = _accounts()
    accounts.set_role(username, role, actor=operator)
    click.echo(f"{username} is now {role}")


@users.command(name="token")
@click.argument("username")
@click.option("--name", required=True, help="What the token is for, e.g. a script's name.")
@core_errors
def users_token(username: str, name: str) -> None:
    """Issue an API token for a user; it is printed once and cannot be shown again."""
    accounts, operator = _accounts()
    click.echo(accounts.issue_token(username, name, actor=operator))


@users.command(name="tokens")
@click.argument("username")
@core_errors
def users_tokens(username: str) -> None:
    """List a user's API tokens (never the tokens themselves)."""
    accounts, _ = _accounts()
    for token in accounts.list_tokens(username):
        used = token.last_used_at.isoformat() + "Z" if token.last_used_at else "never used"
        state = "revoked" if token.revoked else "active"
        click.echo(f"{token.id:<6} {token.name:<24} {state:<8} {used}")


@users.command(name="revoke-token")
@click.argument("token_id", type=int)
@core_errors
def users_revoke_token(token_id: int) -> None:
    """Revoke an API token by its id (see `users tokens`)."""
    accounts, operator = _accounts()
    accounts.revoke_token(token_id, actor=operator)
    click.echo(f"revoked token {token_id}")


@main.group()
def groups() -> None:
    """Manage groups; collections grant read access to groups."""


@groups.command(name="create")
@click.argument("name")
@core_errors
def groups_create(name: str) -> None:
    """Create a group."""
    accounts, operator = _accounts()
    accounts.create_group(name, actor=operator)
    click.echo(f"created group {name}")


@groups.command(name="delete")
@click.argument("name")
@core_errors
def groups_delete(name: str) -> None:
    """Delete a group, its memberships and its read grants."""
    accounts, operator = _accounts()
    accounts.delete_group(name, actor=operator)
    click.echo(f"deleted group {name}")


@groups.command(name="list")
@core_errors
def groups_list() -> None:
    """List the groups and their members."""
    accounts, _ = _accounts()
    for group in accounts.list_groups():
        members = ",".join(group.members) or "-"
        click.echo(f"{group.name:<24} {members}")


@groups.command(name="add-member")
@click.argument("group")
@click.argument("username")
@core_errors
def groups_add_member(group: str, username: str) -> None:
    """Add a user to a group."""
    accounts, operator = _accounts()
    accounts.add_member(group, username, actor=operator)
    click.echo(f"{username} is in group {group}")


@groups.command(name="remove-member")
@click.argument("group")
@click.argument("username")
@core_errors
def groups_remove_member(group: str, username: str) -> None:
    """Remove a user from a group."""
    accounts, operator = _accounts()
    accounts.remove_member(group, username, actor=operator)
    click.echo(f"{username} left group {group}")


@main.group()
def collections() -> None:
    """Manage collections: every document belongs to one; groups are granted reading."""


@collections.command(name="create")
@click.argument("name")
@click.option("--reader", "readers", multiple=True, help="A group that may read it (repeatable).")
@click.option("--description", default="", help="What the collection holds.")
@core_errors
def collections_create(name: str, readers: tuple[str, ...], description: str) -> None:
    """Create a collection."""
    accounts, operator = _accounts()
    accounts.create_collection(name, readers, description, actor=operator)
    click.echo(f"created collection {name}")


@collections.command(name="list")
@core_errors
def collections_list() -> None:
    """List the collections and the groups that may read them."""
    accounts, _ = _accounts()
    for collection in accounts.list_collections():
        readers = ",".join(collection.readers) or "-"
        click.echo(f"{collection.name:<24} readers: {readers:<32} {collection.description}")


@collections.command(name="set-readers")
@click.argument("name")
@click.argument("groups", nargs=-1)
@core_errors
def collections_set_readers(name: str, groups: tuple[str, ...]) -> None:
    """Replace the groups that may read a collection (none: only admins)."""
    accounts, operator = _accounts()
    accounts.set_readers(name, groups, actor=operator)
    click.echo(f"{name} readers: {', '.join(sorted(set(groups))) or 'none (admins only)'}")


# -- audit log ----------------------------------------------------------------------------
@main.group(name="audit")
def audit_group() -> None:
    """Verify and export the tamper-evident audit log (both are audited themselves)."""


def _audit_log() -> AuditLog:
    from assistant.services import build_services

    return build_services(_settings()).audit_log


def _audit_cli_action(log: AuditLog, action: str, details: dict[str, Any]) -> None:
    """Record what the local operator did, as `cli:<os user>`."""
    operator = Principal.operator()
    log.record(actor_id=operator.actor, actor_role=operator.role, action=action, details=details)


def _utc_time(context: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """YYYY-MM-DD (a bare --to day is included whole) or an ISO time, UTC unless it says."""
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise click.BadParameter("use YYYY-MM-DD or an ISO date-time") from None
        return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    start_of_day = datetime(day.year, day.month, day.day)
    return start_of_day + timedelta(days=1) if param.name == "end" else start_of_day


@audit_group.command(name="verify")
@core_errors
def audit_verify() -> None:
    """Check the hash chain and the signed checkpoints; exit 1 naming the first bad record."""
    log = _audit_log()
    result = log.verify()
    details = {"ok": result.ok, "records": result.records_checked}
    _audit_cli_action(log, "audit.verify", {**details, "first_bad_seq": result.first_bad_seq})
    click.echo(result.summary(), err=not result.ok)
    if not result.ok:
        raise SystemExit(1)


@audit_group.command(name="export")
@click.option(
    "--from", "start", metavar="DATE", callback=_utc_time, help="YYYY-MM-DD or ISO time, UTC."
)
@click.option(
    "--to", "end", metavar="DATE", callback=_utc_time, help="Last day, included; or ISO time."
)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout.")
@core_errors
def audit_export(
    start: datetime | None, end: datetime | None, fmt: Literal["jsonl", "csv"], output: Path | None
) -> None:
    """Export the records in a time range (UTC) as JSON lines or CSV."""
    if start and end and start >= end:
        raise click.BadParameter("--from must be before --to", param_hint="--from/--to")
    log = _audit_log()
    span = {"from": start and start.isoformat(), "to": end and end.isoformat()}
    details = {**span, "format": fmt, "output": str(output or "-")}
    if output is None:
        _audit_cli_action(log, "audit.export", details)  # before any record is shown
        log.export(sys.stdout, fmt, start, end)
        return
    try:  # the export holds personal data: readable by the owner only
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from exc
    with open(fd, "w", encoding="utf-8", newline="") as out:
        _audit_cli_action(log, "audit.export", details)
        count = log.export(out, fmt, start, end)
    click.echo(f"exported {count} records to {output}", err=True)


if __name__ == "__main__":
    main()
