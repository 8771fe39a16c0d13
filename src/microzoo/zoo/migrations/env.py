"""Alembic's entry point: migrate the connection that :func:`microzoo.zoo.db.migrate_to` hands over."""

from __future__ import annotations

from alembic import context


def run_migrations() -> None:
    """Run the pending migrations on ``config.attributes["connection"]`` (online mode only)."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("the zoo's migrations run through microzoo.zoo.db.upgrade_to_head(url)")
    context.configure(connection=connection, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


# Alembic imports this file inside its environment; importing it elsewhere (doctest collection) does nothing.
if getattr(context, "_proxy", None) is not None:
    run_migrations()
