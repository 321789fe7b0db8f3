"""The group coordinator's state machine, driven directly (no network): the error codes
Kafka returns at each step."""

from __future__ import annotations

import asyncio

from kio.schema.errors import ErrorCode

from streams.broker.groups import GroupCoordinator, GroupState, JoinResult
from tests.eventually import eventually_async

PROTOCOLS = [("range", b"meta")]


def coordinator() -> GroupCoordinator:
    return GroupCoordinator(min_session_timeout_ms=10)


async def join(
    c: GroupCoordinator, member_id: str = "", *, session_ms: int = 5000, rebalance_ms: int = 5000
) -> JoinResult:
    return await c.join(
        "g",
        member_id,
        group_instance_id=None,
        protocol_type="consumer",
        protocols=PROTOCOLS,
        session_timeout_ms=session_ms,
        rebalance_timeout_ms=rebalance_ms,
        client_id="c",
        client_host="/127.0.0.1",
        require_known_member_id=True,
    )


async def join_new(
    c: GroupCoordinator, *, session_ms: int = 5000, rebalance_ms: int = 5000
) -> JoinResult:
    first = await join(c, session_ms=session_ms, rebalance_ms=rebalance_ms)
    assert first.error is ErrorCode.member_id_required
    assert first.member_id
    return await join(c, first.member_id, session_ms=session_ms, rebalance_ms=rebalance_ms)


async def test_member_id_handshake_forms_a_generation_with_a_leader() -> None:
    c = coordinator()
    result = await join_new(c)
    assert result.error is ErrorCode.none
    assert (result.generation, result.leader) == (1, result.member_id)
    assert [m[0] for m in result.members] == [result.member_id]
    sync = await c.sync("g", result.member_id, 1, {result.member_id: b"all"})
    assert (sync.error, sync.assignment) == (ErrorCode.none, b"all")
    assert c.groups["g"].state is GroupState.STABLE


async def test_unknown_member_and_stale_generation_are_refused() -> None:
    c = coordinator()
    result = await join_new(c)
    await c.sync("g", result.member_id, 1, {})
    assert (await join(c, "nobody")).error is ErrorCode.unknown_member_id
    assert c.heartbeat("g", "nobody", 1) is ErrorCode.unknown_member_id
    assert c.heartbeat("g", result.member_id, 0) is ErrorCode.illegal_generation
    assert c.check_commit("g", result.member_id, 0) is ErrorCode.illegal_generation
    assert c.check_commit("g", result.member_id, 1) is ErrorCode.none
    assert (await c.sync("g", result.member_id, 7, {})).error is ErrorCode.illegal_generation


async def test_a_joining_member_rebalances_the_group_and_only_the_leader_gets_members() -> None:
    c = coordinator()
    leader = await join_new(c)
    await c.sync("g", leader.member_id, 1, {leader.member_id: b"a"})

    newcomer = asyncio.create_task(join_new(c))

    async def preparing() -> GroupState:
        state = c.groups["g"].state
        assert state is GroupState.PREPARING, state
        return state

    await eventually_async(preparing, "the newcomer's join to start a rebalance")
    # The old member learns of the rebalance from its heartbeat, then rejoins.
    assert c.heartbeat("g", leader.member_id, 1) is ErrorCode.rebalance_in_progress
    assert c.check_commit("g", leader.member_id, 1) is ErrorCode.none
    rejoined = await join(c, leader.member_id)
    follower = await newcomer

    assert rejoined.generation == follower.generation == 2
    assert rejoined.leader == leader.member_id
    assert len(rejoined.members) == 2
    assert follower.members == ()
    assert c.check_commit("g", leader.member_id, 2) is ErrorCode.rebalance_in_progress

    follower_sync = asyncio.create_task(c.sync("g", follower.member_id, 2, {}))
    await asyncio.sleep(0.01)  # the point: a chance to finish, which it must not take
    assert not follower_sync.done(), "a follower waits for the leader's assignment"
    await c.sync("g", leader.member_id, 2, {leader.member_id: b"a", follower.member_id: b"b"})
    assert (await follower_sync).assignment == b"b"


async def test_session_expiry_and_leave_trigger_rebalances() -> None:
    c = coordinator()
    short = await join_new(c, session_ms=50)
    await c.sync("g", short.member_id, 1, {})
    await asyncio.sleep(0.2)  # the point: its 50 ms session runs out, with no heartbeat
    group = c.groups["g"]
    assert short.member_id not in group.members
    assert group.state is GroupState.EMPTY

    stayer = await join_new(c)
    await c.sync("g", stayer.member_id, stayer.generation, {})
    assert c.leave("g", [stayer.member_id, "ghost"]) == [
        ErrorCode.none,
        ErrorCode.unknown_member_id,
    ]
    assert group.state is GroupState.EMPTY
    assert group.generation == stayer.generation + 1


async def test_members_that_do_not_rejoin_in_time_are_dropped() -> None:
    c = coordinator()
    slow = await join_new(c, rebalance_ms=100)
    await c.sync("g", slow.member_id, 1, {})
    fast = await join_new(c, rebalance_ms=100)  # slow never rejoins
    assert fast.generation == 2
    assert [m[0] for m in fast.members] == [fast.member_id]
    assert c.heartbeat("g", slow.member_id, 1) is ErrorCode.unknown_member_id
