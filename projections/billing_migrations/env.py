"""Alembic environment of the billing read models (``projections.migrate.run_environment``)."""

from projections.migrate import run_environment

run_environment()
