"""Alembic's environment, run by `assistant.db.upgrade_database` (and `assistant migrate`).

There is no alembic.ini: `assistant.db.migration_config` builds the configuration and passes
the open connection, already inside the transaction that holds the migration lock, in
`config.attributes["connection"]`. Batch mode lets ALTERs work on SQLite too (table copy).

A new revision, after changing a model: on a scratch database brought to head, write it with
    from alembic import command
    from assistant.db import make_engine, migration_config, model_metadata, upgrade_database
    engine = make_engine("sqlite:////tmp/scratch.db"); upgrade_database(engine)
    with engine.begin() as connection:
        config = migration_config(connection)
        config.attributes["metadata"] = model_metadata()
        command.revision(config, "what changed", autogenerate=True, rev_id="0002")
then review it, and check both databases with `assistant migrate --check` (and the tests).
"""

from alembic import context

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=context.config.attributes.get("metadata"),
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
