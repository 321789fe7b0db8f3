"""What the CLI's writes share: record facts on the log, then wait until a projection
shows what they did, so that what the command prints (a key) works at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from projections.database import Database
from projections.ops import PROJECTION
from projections.waiter import Waiter
from schemas.envelope import Envelope
from streams.catalog import Catalog
from streams.publisher import Publisher
from streams.settings import Settings

SOURCE = "/cli"
APPLIED_WAIT_S = 30.0
T = TypeVar("T")


async def record_and_wait(
    settings: Settings,
    envs: list[Envelope[Any]],
    key: str,
    applied: Callable[[Database], Awaitable[T | None]],
    *,
    schema: str | None = None,
    projection: str = PROJECTION,
) -> T:
    """Publish ``envs``, then wait (notified on ``key``) until ``applied(db)`` answers,
    ``db`` being the read models in ``schema`` (the core ones by default) of
    ``projection``; exit with an error if the projection never applies them."""
    publisher = Publisher(settings.kafka_bootstrap_servers, Catalog.from_settings(settings))
    await publisher.start()
    try:
        await publisher.publish_all(envs)
    finally:
        await publisher.stop()
    db = Database(settings.database_url, schema or settings.database_schema, pool_size=1)
    waiter = Waiter(db, projection=projection)
    waiter.start()
    try:
        found = await waiter.until(key, lambda: applied(db), APPLIED_WAIT_S)
    finally:
        await waiter.close()
        await db.close()
    if found is None:
        raise SystemExit(f"the {projection} projector did not apply it: is it running?")
    return found
