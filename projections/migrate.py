"""Schema migrations of the read models (Alembic), for the live schema or a rebuild."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

_SCRIPTS = Path(__file__).parent / "migrations"


def sqlalchemy_url(database_url: str) -> str:
    return database_url.replace("postgresql://", "postgresql+psycopg://", 1)


def upgrade(database_url: str, schema: str) -> None:
    """Bring ``schema`` to the newest revision, creating it if needed."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["schema"] = schema
    config.attributes["url"] = sqlalchemy_url(database_url)
    command.upgrade(config, "head")
