"""Effect workers: the only places that do slow I/O (model calls, HTTP tools). This is
their common part; ``model_worker`` and ``tool_worker`` are the two.

Each reads its work topic, the copies of the requests it performs (the events topic
has every fact of every turn, and a worker wants one or two of them), and records
results on the events topic, keyed like the request. Exactly-once effect rests on one
rule: never perform a request whose result is already in the log. On partition
assignment the worker reads its work partition from the committed offset to its end:
the requests it may be handed again. Their results, if any, are on the events partition
of the same number (same key, as many partitions), written after the requests: it reads
that partition from the oldest of those requests' times (less ``CLOCK_SKEW_S``, for
writers on other hosts) to its end. Then it learns from what it performs.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar, Literal

from aiokafka import TopicPartition

from schemas.base import Fact
from schemas.envelope import Envelope, trace_id
from schemas.usage import Unit, UsageRecorded
from streams.catalog import Catalog
from streams.dedupe import SeenIds
from streams.handler import Closes, Item
from streams.partitions import LogReader, paired

# How far a result's timestamp (its writer's clock) may lag its request's (another
# host's): the read-ahead for results starts this much before the oldest request.
CLOCK_SKEW_S = 30.0
# A test-only fault: with it, requests whose result is in the log are performed again
# (tests/e2e/test_crash_safety.py shows that its checks catch such a double-perform).
_PERFORM_TWICE = os.environ.get("AGENTLOG_TEST_FAULT") == "perform-twice"


class EffectWorker(Closes):
    """The base of the model and tool workers: what to perform, and when not to."""

    name: ClassVar[Literal["model", "tool"]]  # also what its usage records name
    request_type: ClassVar[type[Fact]]
    result_types: ClassVar[tuple[type[Fact], ...]]
    source: ClassVar[str]

    def __init__(self, bootstrap_servers: str, catalog: Catalog) -> None:
        self.topics = (catalog.work_topic(self.request_type),)
        self.events = catalog.events
        self.types = frozenset({self.request_type.ce_type()})
        self._results = frozenset(t.ce_type() for t in self.result_types)
        self.done = SeenIds()  # ids of requests whose result is in the log
        self._performed: dict[str, list[Envelope[Any]]] = {}
        self._log = LogReader(bootstrap_servers, group_id=catalog.group_id(self.name))
        self._started = False
        self._paired = False

    async def perform(self, env: Envelope[Any]) -> list[Envelope[Any]]:
        raise NotImplementedError

    def recorded(
        self,
        env: Envelope[Any],
        result: Fact,
        call_id: str,
        resource: str,
        quantities: dict[Unit, int],
    ) -> list[Envelope[Any]]:
        """What a performed request records: its result, and what it used (billable
        whether it succeeded or not), both caused by the request. A usage recorded again
        after a crash is the same event: its id derives from the request's, and its time
        of use is the request's time, not this worker's clock."""
        req = env.data
        usage = UsageRecorded(
            tenant_id=env.tenant_id,
            kind=self.name,
            resource=resource,
            quantities=quantities,
            used_at=env.time,
            agent_id=req.agent_id,
            agent_version=req.agent_version,
            session_id=req.session_id,
            turn_id=req.turn_id,
            step=req.step,
            call_id=call_id,
            trace_id=trace_id(env.traceparent),
        )
        return [
            env.follow(result, step="result", source=self.source),
            env.follow(usage, step="usage", source=self.source),
        ]

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if not self._started:
            await self._log.start()
            self._started = True
        if not self._paired:  # checked until it passes: an outage retries the assignment
            await paired(
                self._log,
                self.topics[0],
                self.events,
                "a request's result is on the events partition of its number",
            )
            self._paired = True
        ends = await self._log.ends(partitions)
        for tp in partitions:
            start = await self._log.committed(tp)
            requests = await self._log.envelopes(tp, start, ends[tp], self.types)
            if not requests:
                continue
            since = min(env.time for env in requests).timestamp() - CLOCK_SKEW_S
            results = TopicPartition(self.events, tp.partition)
            first = await self._log.offset_at(results, int(since * 1000))
            (end,) = (await self._log.ends([results])).values()
            for env in await self._log.envelopes(results, first, end, self._results):
                self.done.add(env.causation_id)  # a result names its request as its cause
        return {}

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        work: dict[str, Envelope[Any]] = {}  # by request event id: a repeated one runs once
        for env, _position in items:
            done = env.id in self.done and not _PERFORM_TWICE  # the test-only fault
            if isinstance(env.data, self.request_type) and not done:
                work.setdefault(env.id, env)
        results = await asyncio.gather(
            *(self._perform_once(env) for env in work.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result  # the batch is handled again; what succeeded is kept
        outputs = []
        for request_id, result in zip(work, results, strict=True):
            assert not isinstance(result, BaseException)
            outputs.extend(result)
            self.done.add(request_id)
            del self._performed[request_id]
        return outputs

    async def _perform_once(self, env: Envelope[Any]) -> list[Envelope[Any]]:
        """Perform a request, or return its result from an attempt whose batch failed
        for another request's sake: a call that succeeded is not made again."""
        if env.id not in self._performed:
            self._performed[env.id] = await self.perform(env)
        return self._performed[env.id]

    async def close(self) -> None:
        if self._started:
            await self._log.stop()
