"""Billing replays started over HTTP (``POST /v1/admin/replays``): run in the gateway
process that took the request, their progress kept in Redis so that any gateway answers
``GET /v1/admin/replays/{id}``. One replay runs at a time per deployment: they rebuild
into the same schema beside the live one."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
import uuid
from typing import Any

import redis.asyncio as redis

from projections.rebuild import Pace, RebuildMismatchError
from projections.verify import replay_billing
from schemas.errors import ErrorCode
from streams.settings import Settings

from .billing_models import ReplayStatus
from .problems import ProblemError

log = logging.getLogger(__name__)
KEEP_S = 7 * 24 * 3600  # how long a replay's report is kept
RUNNING_S = 3600  # a replay whose gateway died stops blocking others after this
PROGRESS_EVERY_S = 0.5


class Replays:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self._prefix = f"{settings.topic_prefix}agentlog:replay:"
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, swap: bool, operator_id: str) -> dict[str, Any]:
        replay_id = str(uuid.uuid4())
        if not await self.redis.set(f"{self._prefix}running", replay_id, nx=True, ex=RUNNING_S):
            running = await self.redis.get(f"{self._prefix}running")
            which = running.decode() if isinstance(running, bytes) else str(running)
            raise ProblemError(ErrorCode.REPLAY_RUNNING, f"replay {which} is running")
        report = {
            "replay_id": replay_id,
            "name": "billing",
            "swap": swap,
            "status": ReplayStatus.RUNNING,
            "records_read": 0,
            "records_total": None,
            "records_per_second": None,
            "seconds_left": None,
            "events_applied": None,
            "seconds": None,
            "swapped_to": None,
            "differences": None,
            "set_aside": None,
            "lines": [],
            "started_by": operator_id,
            "started_at": datetime.datetime.now(datetime.UTC).isoformat(),
        }
        await self._save(report)
        task = asyncio.create_task(self._run(report))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return report

    async def status(self, replay_id: str) -> dict[str, Any]:
        found = await self.redis.get(f"{self._prefix}{replay_id}")
        if found is None:
            raise ProblemError(ErrorCode.REPLAY_NOT_FOUND, f"no replay {replay_id}")
        report: dict[str, Any] = json.loads(found)
        return report

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _save(self, report: dict[str, Any]) -> None:
        key = f"{self._prefix}{report['replay_id']}"
        await self.redis.set(key, json.dumps(report), ex=KEEP_S)

    async def _run(self, report: dict[str, Any]) -> None:
        last = [0.0]
        pending: set[asyncio.Task[None]] = set()

        started = time.monotonic()

        def on_progress(read: int, total: int) -> None:
            report["records_read"], report["records_total"] = read, total
            now = time.monotonic()
            pace = Pace.of(read, total, now - started)
            report["records_per_second"] = round(pace.per_second, 1)
            report["seconds_left"] = (
                None if pace.seconds_left is None else round(pace.seconds_left, 1)
            )
            if now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                saving = asyncio.create_task(self._save(dict(report)))
                pending.add(saving)
                saving.add_done_callback(pending.discard)

        try:
            done = await replay_billing(
                self.settings,
                swap=report["swap"],
                out=report["lines"].append,
                on_progress=on_progress,
            )
        except RebuildMismatchError as exc:
            report.update(status=ReplayStatus.DIFFERS, differences=str(exc).splitlines())
        except asyncio.CancelledError:
            report["status"] = ReplayStatus.CANCELLED
            raise
        except Exception as exc:
            log.exception("replay failed", extra={"replay_id": report["replay_id"]})
            report.update(status=ReplayStatus.FAILED, differences=[type(exc).__name__])
        else:
            report.update(
                status=ReplayStatus.SUCCEEDED,
                events_applied=done.events,
                seconds=round(done.seconds, 3),
                swapped_to=done.swapped_to,
                set_aside=[str(aside) for aside in done.set_aside],
            )
        finally:
            await asyncio.gather(*pending, return_exceptions=True)
            report["finished_at"] = datetime.datetime.now(datetime.UTC).isoformat()
            await asyncio.shield(self._save(report))
            await self.redis.delete(f"{self._prefix}running")
