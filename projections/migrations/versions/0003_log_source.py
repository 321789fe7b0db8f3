"""Which log the read models are a fold of: the Kafka cluster id and the topic prefix.

Read models folded from one log are wrong for another (their stored positions would
pass every offset fence at once), so start-up checks this row against the log it is
about to read.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade(schema: str) -> None:
    op.execute(
        f'CREATE TABLE "{schema}".log_source ('
        " singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),"
        " cluster_id text NOT NULL,"
        " topic_prefix text NOT NULL)"
    )


def downgrade(schema: str) -> None:
    op.execute(f'DROP TABLE "{schema}".log_source')
