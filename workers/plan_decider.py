"""The billing decider's plans, operators and re-drives: the state it decides their
requests on, kept in memory and folded from the log, and the decisions it records
(``plan_decisions``).

- **Every version of every plan**, which any tenant's assignment may name, and **every
  operator's name** (an operator is keyed by its id, its request by its name): tables
  every instance keeps whole. They start from the billing read model and follow every
  partition of the billing topic from the billing projection's positions.
- **Each tenant's plans** (``TenantPlans``), for the tenants of the partitions this
  instance owns (billing facts are keyed by tenant, so a tenant is one partition's):
  on assignment, the read model's rows at the billing projection's position (the
  snapshot), then the partition's tail folded from there to the log's end; then every
  record as it comes.
- **The dead letters re-driven** (``DeadLetterRedriven``): all of them from the read
  model (a small set), then folded from the tails like the plans. Re-drive requests are
  keyed by the dead letter's place, so the requests for one dead letter are decided one
  after another by one owner. It writes an accepted one's record back to its topic (at
  least once: a crash before its outcome is written writes it again when the request is
  decided again, and consumers drop a record they have seen).

No decision reads Postgres; the snapshot is read once per assignment. Requests are
decided in log order by the one owner of their partition, so two racing requests for one
tenant are decided one after the other. A request whose outcome is already in the log
(a previous owner decided it before a crash) is not decided again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import TopicPartition

from projections import snapshots
from projections.database import Database
from projections.ops import BILLING
from projections.tenant_plans import TenantPlans, evolve
from projections.waiter import next_offset
from schemas import billing, billing_requests
from schemas.base import Fact
from schemas.billing import PricePlan
from schemas.envelope import Envelope, EnvelopeError, from_kafka
from schemas.errors import ErrorCode
from streams.catalog import Catalog
from streams.dead_letters import DeadLetterNotFoundError, read_dead_letter, redrive
from streams.dedupe import SeenIds
from streams.follow import Follower
from streams.handler import Item
from streams.partitions import LogReader, Record, is_wanted
from streams.publisher import Publisher

from . import plan_decisions as decide

SOURCE = "/workers/billing-decider"
# How long a decision on a plan it does not know waits for the plans table to reach the
# log's end (a plan published a moment ago on another partition).
CATCH_UP_S = 5.0
# A load's reads of the log take at most this long: past it, it is an outage, retried.
LOAD_TIMEOUT_S = 30.0

REQUESTS = (
    billing_requests.PricePlanPublishRequested,
    billing_requests.TenantPlanAssignRequested,
    billing_requests.TenantPlanWithdrawRequested,
    billing.DeadLetterRedriveRequested,
    billing_requests.OperatorCreateRequested,
)
# The facts its state follows, whoever recorded them.
STATE_FACTS = (
    billing.PricePlanPublished,
    billing.OperatorCreated,
    billing.TenantPlanAssigned,
    billing.TenantPlanWithdrawn,
    billing.InvoiceDrafted,
    billing.DeadLetterRedriven,
    billing_requests.BillingCommandRejected,
)
TYPES = frozenset(t.ce_type() for t in (*REQUESTS, *STATE_FACTS))
# The facts of the tables every instance keeps whole.
REFERENCE_FACTS = (billing.PricePlanPublished, billing.OperatorCreated)
_REFERENCE_TYPES = frozenset(t.ce_type() for t in REFERENCE_FACTS)


class ReferenceTables:
    """Every version of every plan and every operator's name, followed on every
    partition of the billing topic."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.topic = topic
        self.versions: dict[tuple[str, int], PricePlan] = {}
        self.operators: dict[str, str] = {}  # name -> operator id
        self._bootstrap = bootstrap_servers
        self._follower = Follower(bootstrap_servers, self._fold_records)

    async def start(self, db: Database) -> None:
        """Load the read model's versions and operators, then follow the topic from the
        positions the billing projection had reached before they were read; again if the follower
        stopped (its reads failed while the broker was away)."""
        if self._follower.running:
            return
        async with asyncio.timeout(LOAD_TIMEOUT_S), LogReader(self._bootstrap) as reader:
            tps = await reader.partitions(self.topic)
        starts = {tp: await next_offset(db, tp.topic, tp.partition, BILLING) for tp in tps}
        for key, plan in (await snapshots.plan_versions(db)).items():
            self.add(key[0], key[1], plan)
        for name, operator_id in (await snapshots.operator_names(db)).items():
            self.operators.setdefault(name, operator_id)
        await self._follower.start(starts)

    def add(self, plan_id: str, version: int, plan: PricePlan) -> None:
        self.versions.setdefault((plan_id, version), plan)  # a version never changes

    def fold(self, fact: Fact) -> None:
        if isinstance(fact, billing.PricePlanPublished):
            self.add(fact.plan_id, fact.version, fact.plan)
        elif isinstance(fact, billing.OperatorCreated):
            self.operators.setdefault(fact.display_name, fact.operator_id)  # the first

    def latest(self, plan_id: str) -> int:
        return max((v for (p, v) in self.versions if p == plan_id), default=0)

    async def caught_up(self, db: Database, timeout: float = CATCH_UP_S) -> None:
        """Wait (at most ``timeout`` seconds) until the tables have followed every
        partition to its end as of now, starting its follower again if it stopped."""
        await self.start(db)
        await self._follower.caught_up(timeout)

    def _fold_records(self, records: list[Record]) -> None:
        for record in records:
            if is_wanted(record, _REFERENCE_TYPES):
                with contextlib.suppress(EnvelopeError):
                    self.fold(from_kafka(record.key, record.value, list(record.headers)).data)

    async def stop(self) -> None:
        await self._follower.stop()


class PlanDecider:
    """Decides plan, operator and re-drive requests; ``handle`` takes the billing topic's records in
    log order."""

    def __init__(
        self, bootstrap_servers: str, catalog: Catalog, db: Database, *, group_id: str
    ) -> None:
        """``group_id``: the consumer group whose commits say where its consumer starts."""
        self.db = db
        self.topic = catalog.billing
        self.dead_letter_topic = catalog.dead_letter
        self.table = ReferenceTables(bootstrap_servers, catalog.billing)
        self.tenants: dict[str, TenantPlans] = {}
        self.redriven: set[str] = set()
        # Reads the group's commits and the tails of new partitions, and the dead
        # letters to re-drive.
        self._reader = LogReader(bootstrap_servers, group_id=group_id)
        # Writes a re-driven record back; started by the first re-drive.
        self._writer = Publisher(bootstrap_servers, catalog, timeout_s=LOAD_TIMEOUT_S)
        self._writing = False
        # Request ids whose outcome is in the log, and the ids of facts already folded.
        self._decided = SeenIds()
        self._folded = SeenIds()

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """For each new partition: the snapshot of its tenants at the billing
        projection's position, and its tail to the log's end folded. The consumer
        starts at the group's commits, or at that position if it is before them, so
        that requests with no outcome yet are decided now (in order), and the rest are
        passed over. The projection may be past requests never decided (it ran while
        the decider was down): the ids of what lies between the commits and the
        snapshot are read, not folded again, to tell which."""
        await self.table.start(self.db)
        # Partitions are assigned whole (eager rebalancing): the state is built again
        # for them alone. What this instance folded before may lie past the projection's
        # position, in the tail it reads again.
        self.tenants = {}
        self._decided = SeenIds()
        self._folded = SeenIds()
        seeks = {}
        reader = await self._reader.start()
        starts = {
            tp: await next_offset(self.db, tp.topic, tp.partition, BILLING)
            for tp in partitions
            if tp.topic == self.topic
        }
        # Read after the positions, so at or past them: the tails fold the rest again.
        self.redriven = await snapshots.redriven(self.db)
        for tp, start in starts.items():
            snapshot = await snapshots.tenant_plans(self.db, tp.partition)
            self.tenants.update(snapshot)
            begin = min(start, await reader.committed(tp))
            (end,) = (await reader.ends([tp])).values()
            async for batch in reader.batches({tp: begin}, {tp: end}):
                for record in batch:
                    with contextlib.suppress(EnvelopeError):
                        env = from_kafka(record.key, record.value, list(record.headers))
                        if record.offset < start:
                            self._known(env)  # in the snapshot
                        else:
                            self._fold(env, record.offset)
            seeks[tp] = begin
        return seeks

    async def handle(self, item: Item) -> Envelope[Any] | None:
        """The outcome to record for a request, if it is one still to decide; a fact
        is folded into the state."""
        env, position = item
        if not isinstance(env.data, REQUESTS):
            self._fold(env, position.offset)  # once: the tail's facts were on assignment
            return None
        if env.id in self._decided:
            return None  # its outcome is in the log: decided before a crash or rebalance
        outcome = env.follow(await self._decide(env), step="outcome", source=SOURCE)
        self._decided.add(env.id)
        # Later requests see this outcome at once; read back from the log, it is
        # passed over (its id is folded). Its offset is not known yet: it comes after
        # everything read so far, which is all the order ``evolve`` needs.
        self._fold(outcome, position.offset + 1)
        return outcome

    def fold_own(self, env: Envelope[Any], offset: int) -> None:
        """A fact another part of the role recorded (a draft): folded at once."""
        self._fold(env, offset)

    def _known(self, env: Envelope[Any]) -> bool:
        """Note ``env`` as folded, and the request it decides as decided; False if it
        was noted before."""
        if env.id in self._folded:
            return False
        self._folded.add(env.id)
        if env.causation_id != env.id:
            self._decided.add(env.causation_id)
        return True

    def decided(self, request_id: str) -> bool:
        """Whether the request's outcome is in the log (or decided by this instance)."""
        return request_id in self._decided

    def _fold(self, env: Envelope[Any], offset: int) -> None:
        if not self._known(env):
            return
        data = env.data
        if isinstance(data, REFERENCE_FACTS):
            self.table.fold(data)
        elif isinstance(data, billing.DeadLetterRedriven):
            self.redriven.add(data.dead_letter)
        elif isinstance(
            data, billing.TenantPlanAssigned | billing.TenantPlanWithdrawn | billing.InvoiceDrafted
        ):
            self._evolve(data.tenant_id, data, offset)

    def _evolve(
        self,
        tenant_id: str,
        fact: billing.TenantPlanAssigned | billing.TenantPlanWithdrawn | billing.InvoiceDrafted,
        offset: int,
    ) -> None:
        state = self.tenants.get(tenant_id) or TenantPlans(tenant_id)
        self.tenants[tenant_id] = evolve(state, fact, offset)

    async def _decide(self, env: Envelope[Any]) -> Any:
        cmd = env.data
        if isinstance(cmd, billing.DeadLetterRedriveRequested):
            fact = decide.redrive(cmd, self.redriven) or await self._redrive(cmd)
        elif isinstance(cmd, billing_requests.OperatorCreateRequested):
            if cmd.display_name not in self.table.operators:
                await self.table.caught_up(self.db)  # created before this owner had it?
            fact = decide.create_operator(cmd, self.table.operators)
        elif isinstance(cmd, billing_requests.PricePlanPublishRequested):
            fact = decide.publish_plan(cmd, self.table.latest(cmd.plan_id))
        elif isinstance(cmd, billing_requests.TenantPlanAssignRequested):
            if (cmd.plan_id, cmd.version) not in self.table.versions:
                await self.table.caught_up(self.db)  # published a moment ago, elsewhere?
            tenant = self.tenants.get(cmd.tenant_id) or TenantPlans(cmd.tenant_id)
            fact = decide.assign_plan(cmd, tenant, self.table.versions)
        else:
            tenant = self.tenants.get(cmd.tenant_id) or TenantPlans(cmd.tenant_id)
            fact = decide.withdraw_plan(cmd, tenant)
        if isinstance(fact, billing_requests.BillingCommandRejected):
            fact = fact.model_copy(update={"command_id": env.id})
        return fact

    async def _redrive(self, cmd: billing.DeadLetterRedriveRequested) -> Any:
        """Write the dead letter back to its topic; where it went, or why it could not."""
        if not self._writing:
            await self._writer.start()
            self._writing = True
        partition, offset = (int(part) for part in cmd.dead_letter.split(":"))
        try:
            async with asyncio.timeout(LOAD_TIMEOUT_S):
                reader = await self._reader.start()
                record = await read_dead_letter(reader, self.dead_letter_topic, partition, offset)
        except DeadLetterNotFoundError:
            detail = f"no dead letter {cmd.dead_letter}"
            return decide.rejected(cmd.dead_letter, ErrorCode.DEAD_LETTER_NOT_FOUND, detail)
        topic, to_partition, to_offset = await redrive(self._writer, record)
        return billing.DeadLetterRedriven(
            dead_letter=cmd.dead_letter,
            operator_id=cmd.operator_id,
            topic=topic,
            partition=to_partition,
            offset=to_offset,
        )

    async def close(self) -> None:
        await self.table.stop()
        await self._reader.stop()
        if self._writing:
            await self._writer.stop()


def unprocessable(env: Envelope[Any], reason: str) -> list[Envelope[Any]]:
    """The rejection of a plan request that could not be decided on (it went to the
    dead-letter topic), so that the operator waiting on it gets an answer; nothing for a
    fact."""
    cmd = env.data
    if not isinstance(cmd, REQUESTS):
        return []
    if isinstance(cmd, billing_requests.PricePlanPublishRequested):
        aggregate = cmd.plan_id
    elif isinstance(cmd, billing.DeadLetterRedriveRequested):
        aggregate = cmd.dead_letter
    elif isinstance(cmd, billing_requests.OperatorCreateRequested):
        aggregate = cmd.display_name
    else:
        aggregate = cmd.tenant_id
    fact = billing_requests.BillingCommandRejected(
        aggregate_id=aggregate,
        command_id=env.id,
        code=ErrorCode.STEP_UNPROCESSABLE,
        detail=f"the request could not be processed ({reason})",
    )
    return [env.follow(fact, step="outcome", source=SOURCE)]
