"""`assistant conversations purge`: delete the conversations past the retention period now
(the worker also does it periodically). Audited as the local operator."""

from __future__ import annotations

import click

from assistant.accounts import Principal
from assistant.cli.common import core_errors, open_services


@click.group()
def conversations() -> None:
    """Users' conversations."""


@conversations.command(name="purge")
@click.option(
    "--days",
    type=click.IntRange(min=0),
    default=None,
    help="Delete those untouched this many days; 0 keeps all. "
    "Default: ASSISTANT_CONVERSATIONS__RETENTION_DAYS.",
)
@core_errors
def purge(days: int | None) -> None:
    services = open_services()
    days = services.settings.conversations.retention_days if days is None else days
    deleted = services.conversations.purge(Principal.operator(), days)
    kept = "retention is off (0 days): nothing deleted" if days == 0 else None
    click.echo(kept or f"deleted {deleted} conversations untouched for {days} days")
