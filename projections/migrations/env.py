"""Alembic environment: migrates one schema, named in ``config.attributes["schema"]``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

config = context.config
schema = config.attributes["schema"]
engine = create_engine(config.attributes["url"])
with engine.begin() as connection:
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    context.configure(connection=connection, version_table_schema=schema)
    with context.begin_transaction():
        context.run_migrations(schema=schema)
engine.dispose()
