"""`assistant migrate`: the database schema (Alembic migrations in assistant/migrations/)."""

from __future__ import annotations

import click

from assistant.cli.common import core_errors, current_settings
from assistant.db import make_engine, schema_differences, upgrade_database


@click.command()
@click.option(
    "--check",
    is_flag=True,
    help="Change nothing; exit 1 if the models differ from the migrations (database at head).",
)
@core_errors
def migrate(check: bool) -> None:
    """Bring the database schema to the newest revision. Web and workers do it on start too;
    run it once before them when several start together."""
    settings = current_settings()
    settings.ensure_dirs()
    engine = make_engine(settings.sqlalchemy_url)
    try:
        if not check:
            click.echo(f"database at revision {upgrade_database(engine)} (head)")
            return
        differences = schema_differences(engine)
    finally:
        engine.dispose()
    if differences:
        for difference in differences:
            click.echo(f"  {difference}", err=True)
        raise click.ClickException(
            f"the models differ from the migrations in {len(differences)} ways: "
            "add a revision in assistant/migrations/versions/"
        )
    click.echo("the models match the migrations")
