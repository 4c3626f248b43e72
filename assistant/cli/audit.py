"""`assistant audit verify|export`: the tamper-evident audit log, checked and exported
(both are audited themselves)."""

from __future__ import annotations

import os
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from assistant.accounts import Principal
from assistant.audit_search import AuditFilters
from assistant.cli.common import core_errors, open_services

if TYPE_CHECKING:
    from assistant.audit import AuditLog


@click.group(name="audit")
def audit_group() -> None:
    """Verify and export the tamper-evident audit log (both are audited themselves)."""


def _audit_log() -> AuditLog:
    return open_services().audit_log


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
        log.export(sys.stdout, fmt, AuditFilters(since=start, until=end))
        return
    try:  # the export holds personal data: readable by the owner only
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from exc
    with open(fd, "w", encoding="utf-8", newline="") as out:
        _audit_cli_action(log, "audit.export", details)
        count = log.export(out, fmt, AuditFilters(since=start, until=end))
    click.echo(f"exported {count} records to {output}", err=True)
