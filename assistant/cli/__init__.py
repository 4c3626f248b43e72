"""The `assistant` command: a thin click layer over the library.

Every command reads the same settings (ASSISTANT_* variables), so commands compose on one
data directory. Errors from the core become ClickExceptions with a readable message. The
commands live in modules named after what they own; the helpers they share, in `common`.
"""

from __future__ import annotations

import logging

import click

from assistant.cli.accounts import collections, groups, users
from assistant.cli.audit import audit_group
from assistant.cli.common import core_errors, current_settings
from assistant.cli.conversations import conversations
from assistant.cli.database import migrate
from assistant.cli.documents import ask, ingest, reindex, status
from assistant.cli.evaluation import eval_group
from assistant.cli.service import serve, worker
from assistant.errors import AssistantError
from assistant.settings import load_settings

__all__ = ["core_errors", "current_settings", "main"]


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


main.add_command(ingest)
main.add_command(reindex)
main.add_command(ask)
main.add_command(status)
main.add_command(eval_group)
main.add_command(serve)
main.add_command(worker)
main.add_command(migrate)
main.add_command(users)
main.add_command(groups)
main.add_command(collections)
main.add_command(audit_group)
main.add_command(conversations)
