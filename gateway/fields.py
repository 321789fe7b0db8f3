"""What the API takes as an id, a time or a log position, wherever it takes one: a
path, a query, a body or a cursor. Each is checked here, once, as the request is read,
so nothing a client chose reaches Postgres, psycopg or datetime arithmetic in a shape
they cannot hold (a 500, and a dropped connection, otherwise).
"""

from __future__ import annotations

import datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints

from schemas.usage import USED_FROM, USED_UNTIL

MAX_ID = 200
# No C0 or C1 control character: Postgres refuses NUL in text, and the others have no
# place in an id (they make logs, headers and terminals lie).
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]+$"

# Every id a client names: an agent, a session, a turn, a tenant, an invoice, a key…
Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID, pattern=PRINTABLE)]

# Text a read model holds, echoed back in a cursor (a usage group's resource): any
# character Postgres stores, so every cursor a page gave is read back.
StoredText = Annotated[str, StringConstraints(max_length=1024, pattern=r"^[^\x00]*$")]

# The times billing counts (``schemas.usage``): a plan assigned, or usage used, outside
# them could never be priced, and psycopg reads every one of them back.
EARLIEST, LATEST = USED_FROM, USED_UNTIL


def _within(value: datetime.datetime) -> datetime.datetime:
    # Compared as instants: 0001-01-01T00:00+01:00 is in year 0 in UTC, which psycopg
    # cannot read back from Postgres.
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"a time from {EARLIEST:%Y-%m-%d} until {LATEST:%Y-%m-%d} (UTC)")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_within)]

# Positions and versions as Postgres stores them (bigint, integer).
LogPosition = Annotated[int, Field(ge=0, le=2**63 - 1)]
Version = Annotated[int, Field(ge=1, le=2**31 - 1)]
