"""Server-sent events of a session's output, read straight from its output partition.

Event ids are log positions (``partition:offset``): a client that reconnects with
``Last-Event-ID`` resumes exactly after the last event it received, however long ago,
since the log is the buffer and nothing expires while a client is away. Each stream
holds a Kafka consumer of its own; ``Streams`` bounds how many a tenant may hold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable

from aiokafka import TopicPartition

from schemas.errors import ErrorCode
from streams.partitions import LogReader

from .problems import ProblemError


class Streams:
    def __init__(self, bootstrap_servers: str, per_tenant: int) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.per_tenant = per_tenant
        self._open: Counter[str] = Counter()  # open streams per tenant
        self._ranges = LogReader(bootstrap_servers)  # where partitions begin and end

    async def start(self) -> None:
        await self._ranges.start()

    async def close(self) -> None:
        await self._ranges.stop()

    def open(self, tenant_id: str) -> Callable[[], None]:
        """Count a stream of the tenant, refusing one past the limit; returns what to
        call when the stream ends."""
        if self._open[tenant_id] >= self.per_tenant:
            raise ProblemError(
                ErrorCode.TOO_MANY_STREAMS,
                f"{self._open[tenant_id]} streams are open; close one first",
                headers={"Retry-After": "1"},
            )
        self._open[tenant_id] += 1

        def release() -> None:
            self._open[tenant_id] -= 1
            if not self._open[tenant_id]:
                del self._open[tenant_id]

        return release

    async def resume_offset(self, tp: TopicPartition, partition: int, offset: int) -> int:
        """Where to resume after the event at ``partition:offset`` (a ``Last-Event-ID``),
        if that event is one of this partition's, within its log."""
        if partition != tp.partition:
            raise ProblemError(
                ErrorCode.INVALID_CURSOR, f"this session's events are in partition {tp.partition}"
            )
        first = (await self._ranges.beginnings([tp]))[tp]
        end = (await self._ranges.ends([tp]))[tp]
        resume = offset + 1
        if not first <= resume <= end:
            raise ProblemError(
                ErrorCode.INVALID_CURSOR,
                f"Last-Event-ID names no event of this partition's log ({first}..{end - 1})",
            )
        return resume

    async def events(
        self, tp: TopicPartition, session_id: str, resume: int | None, *, from_beginning: bool
    ) -> AsyncIterator[dict[str, str]]:
        """The session's records of its output partition as server-sent events, from
        ``resume`` (an offset), the beginning, or now."""
        async with LogReader(self.bootstrap_servers) as reader:
            if resume is None:
                edges = reader.beginnings if from_beginning else reader.ends
                resume = (await edges([tp]))[tp]
            # A comment (ignored by EventSource clients) once the start is fixed: what
            # the session outputs from here on is in the stream.
            yield {"comment": f"streaming from {tp.partition}:{resume}"}
            key = session_id.encode()
            async for batch in reader.batches({tp: resume}, poll_ms=1000):
                for record in batch:
                    if record.key != key:
                        continue
                    kind = dict(record.headers).get("ce_type", b"").decode().split(".")[2]
                    yield {
                        "id": f"{tp.partition}:{record.offset}",
                        "event": kind,
                        "data": (record.value or b"{}").decode(),
                    }
