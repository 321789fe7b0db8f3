"""The consumer-group coordinator: Kafka's classic group protocol as a state machine.

States follow Kafka: Empty -> PreparingRebalance -> CompletingRebalance -> Stable. A
rebalance waits for every known member to rejoin (or for the rebalance timeout), then
hands the member list to the leader only; followers' SyncGroup waits for the leader's
assignment. Members that stop heartbeating are expired after their session timeout.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from kio.schema.errors import ErrorCode

from .membership import Group, GroupState, JoinResult, Member, SyncResult

# The coordinator's results and the states it reports are part of its interface.
__all__ = ["GroupCoordinator", "GroupState", "JoinResult", "SyncResult"]

log = logging.getLogger(__name__)


class GroupCoordinator:
    def __init__(
        self,
        *,
        initial_rebalance_delay_ms: int = 0,
        min_session_timeout_ms: int = 6000,
        max_session_timeout_ms: int = 1_800_000,
    ) -> None:
        self.groups: dict[str, Group] = {}
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms

    # -- JoinGroup -------------------------------------------------------------------

    async def join(
        self,
        group_id: str,
        member_id: str,
        *,
        group_instance_id: str | None,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        require_known_member_id: bool,
    ) -> JoinResult:
        if not group_id:
            return JoinResult(ErrorCode.invalid_group_id, member_id=member_id)
        if not self.min_session_timeout_ms <= session_timeout_ms <= self.max_session_timeout_ms:
            return JoinResult(ErrorCode.invalid_session_timeout, member_id=member_id)
        group = self.groups.setdefault(group_id, Group(group_id))
        if group.state is GroupState.DEAD:
            return JoinResult(ErrorCode.coordinator_not_available, member_id=member_id)
        if not protocols or not group.supports(protocol_type, protocols):
            return JoinResult(ErrorCode.inconsistent_group_protocol, member_id=member_id)

        loop = asyncio.get_running_loop()
        new_member = not member_id
        if new_member:
            member_id = f"{client_id or 'member'}-{uuid.uuid4()}"
            if require_known_member_id:
                group.pending[member_id] = loop.call_later(
                    session_timeout_ms / 1000, self._expire_pending, group, member_id
                )
                return JoinResult(ErrorCode.member_id_required, member_id=member_id)
        member = group.members.get(member_id)
        if member is None:
            timer = group.pending.pop(member_id, None)
            if timer is None and not new_member:
                return JoinResult(ErrorCode.unknown_member_id, member_id=member_id)
            if timer is not None:
                timer.cancel()
            member = Member(
                member_id,
                group_instance_id,
                client_id,
                client_host,
                session_timeout_ms,
                rebalance_timeout_ms,
                protocols,
            )
            if not group.members:
                group.protocol_type = protocol_type
            group.members[member_id] = member
        else:
            unchanged = member.protocols == protocols
            member.protocols = protocols
            member.session_timeout_ms = session_timeout_ms
            member.rebalance_timeout_ms = rebalance_timeout_ms
            if unchanged and (
                (group.state is GroupState.STABLE and member_id != group.leader)
                or group.state is GroupState.COMPLETING
            ):
                self._touch(group, member)
                return self._join_result(group, member)

        self._stop_timer(member)
        member.join_future = loop.create_future()
        if group.state is GroupState.PREPARING:
            self._maybe_complete_join(group)
        else:
            self._prepare_rebalance(group, f"member {member_id} joined")
        return await member.join_future

    def _prepare_rebalance(self, group: Group, reason: str) -> None:
        if group.state is GroupState.COMPLETING:
            for member in group.members.values():
                _resolve(member.sync_future, SyncResult(ErrorCode.rebalance_in_progress))
        was_empty = group.state is GroupState.EMPTY
        group.state = GroupState.PREPARING
        log.info("group rebalancing", extra={"group": group.group_id, "reason": reason})
        loop = asyncio.get_running_loop()
        if group.rebalance_timer is not None:
            group.rebalance_timer.cancel()
        if was_empty and self.initial_rebalance_delay_ms > 0:
            group.initial_delay = True
            group.rebalance_timer = loop.call_later(
                self.initial_rebalance_delay_ms / 1000, self._end_initial_delay, group
            )
            return
        timeout_ms = max((m.rebalance_timeout_ms for m in group.members.values()), default=0)
        group.rebalance_timer = loop.call_later(timeout_ms / 1000, self._complete_join, group)
        self._maybe_complete_join(group)

    def _end_initial_delay(self, group: Group) -> None:
        group.initial_delay = False
        timeout_ms = max((m.rebalance_timeout_ms for m in group.members.values()), default=0)
        group.rebalance_timer = asyncio.get_running_loop().call_later(
            timeout_ms / 1000, self._complete_join, group
        )
        self._maybe_complete_join(group)

    def _maybe_complete_join(self, group: Group) -> None:
        if (
            group.state is GroupState.PREPARING
            and not group.initial_delay
            and not group.pending
            and all(m.awaiting_join for m in group.members.values())
        ):
            self._complete_join(group)

    def _complete_join(self, group: Group) -> None:
        if group.state is not GroupState.PREPARING:
            return
        if group.rebalance_timer is not None:
            group.rebalance_timer.cancel()
            group.rebalance_timer = None
        group.initial_delay = False
        for member_id, timer in list(group.pending.items()):
            timer.cancel()
            del group.pending[member_id]
        for member in [m for m in group.members.values() if not m.awaiting_join]:
            log.info(
                "member did not rejoin in time",
                extra={"group": group.group_id, "member": member.member_id},
            )
            self._remove(group, member)
        group.generation += 1
        if not group.members:
            group.state = GroupState.EMPTY
            group.protocol_type = group.protocol_name = group.leader = None
            return
        if group.leader not in group.members:
            group.leader = next(iter(group.members))
        group.protocol_name = group.select_protocol()
        group.state = GroupState.COMPLETING
        log.info(
            "group generation formed",
            extra={
                "group": group.group_id,
                "generation": group.generation,
                "members": len(group.members),
            },
        )
        for member in group.members.values():
            _resolve(member.join_future, self._join_result(group, member))
            self._touch(group, member)

    def _join_result(self, group: Group, member: Member) -> JoinResult:
        members: tuple[tuple[str, str | None, bytes], ...] = ()
        if member.member_id == group.leader:
            assert group.protocol_name is not None
            members = tuple(
                (m.member_id, m.group_instance_id, m.metadata_for(group.protocol_name))
                for m in group.members.values()
            )
        return JoinResult(
            ErrorCode.none,
            generation=group.generation,
            protocol_type=group.protocol_type,
            protocol_name=group.protocol_name,
            leader=group.leader or "",
            member_id=member.member_id,
            members=members,
        )

    # -- SyncGroup -------------------------------------------------------------------

    async def sync(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        assignments: dict[str, bytes],
        protocol_type: str | None = None,
        protocol_name: str | None = None,
    ) -> SyncResult:
        group = self.groups.get(group_id)
        member = group.members.get(member_id) if group else None
        if group is None or member is None:
            return SyncResult(ErrorCode.unknown_member_id)
        if generation != group.generation:
            return SyncResult(ErrorCode.illegal_generation)
        if (protocol_type is not None and protocol_type != group.protocol_type) or (
            protocol_name is not None and protocol_name != group.protocol_name
        ):
            return SyncResult(ErrorCode.inconsistent_group_protocol)
        if group.state is GroupState.PREPARING:
            return SyncResult(ErrorCode.rebalance_in_progress)
        self._touch(group, member)
        if group.state is GroupState.STABLE:
            return self._sync_result(group, member)
        member.sync_future = asyncio.get_running_loop().create_future()
        if member_id == group.leader:
            for m in group.members.values():
                m.assignment = assignments.get(m.member_id, b"")
            group.state = GroupState.STABLE
            for m in group.members.values():
                _resolve(m.sync_future, self._sync_result(group, m))
        return await member.sync_future

    @staticmethod
    def _sync_result(group: Group, member: Member) -> SyncResult:
        return SyncResult(
            ErrorCode.none, member.assignment, group.protocol_type, group.protocol_name
        )

    # -- Heartbeat, LeaveGroup, session expiry ---------------------------------------

    def heartbeat(self, group_id: str, member_id: str, generation: int) -> ErrorCode:
        group = self.groups.get(group_id)
        member = group.members.get(member_id) if group else None
        if group is None or member is None:
            return ErrorCode.unknown_member_id
        if generation != group.generation:
            return ErrorCode.illegal_generation
        self._touch(group, member)
        if group.state is GroupState.PREPARING:
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    def leave(self, group_id: str, member_ids: list[str]) -> list[ErrorCode]:
        group = self.groups.get(group_id)
        errors = []
        for member_id in member_ids:
            member = group.members.get(member_id) if group else None
            if group is not None and member is not None:
                self._remove(group, member)
                self._member_gone(group, f"member {member_id} left")
                errors.append(ErrorCode.none)
            elif group is not None and member_id in group.pending:
                group.pending.pop(member_id).cancel()
                self._maybe_complete_join(group)
                errors.append(ErrorCode.none)
            else:
                errors.append(ErrorCode.unknown_member_id)
        return errors

    def _touch(self, group: Group, member: Member) -> None:
        """Restart the member's session timer (a heartbeat, join or sync arrived)."""
        self._stop_timer(member)
        member.session_timer = asyncio.get_running_loop().call_later(
            member.session_timeout_ms / 1000, self._expire, group, member
        )

    @staticmethod
    def _stop_timer(member: Member) -> None:
        if member.session_timer is not None:
            member.session_timer.cancel()
            member.session_timer = None

    def _expire(self, group: Group, member: Member) -> None:
        if group.members.get(member.member_id) is not member or member.awaiting_join:
            return
        log.info(
            "member session expired", extra={"group": group.group_id, "member": member.member_id}
        )
        self._remove(group, member)
        self._member_gone(group, f"member {member.member_id} session expired")

    def _expire_pending(self, group: Group, member_id: str) -> None:
        if group.pending.pop(member_id, None) is not None:
            self._maybe_complete_join(group)

    def _remove(self, group: Group, member: Member) -> None:
        self._stop_timer(member)
        group.members.pop(member.member_id, None)
        _resolve(member.join_future, JoinResult(ErrorCode.unknown_member_id))
        _resolve(member.sync_future, SyncResult(ErrorCode.unknown_member_id))

    def _member_gone(self, group: Group, reason: str) -> None:
        if group.state in (GroupState.STABLE, GroupState.COMPLETING):
            self._prepare_rebalance(group, reason)
        elif group.state is GroupState.PREPARING:
            self._maybe_complete_join(group)

    # -- offsets ---------------------------------------------------------------------

    def check_commit(self, group_id: str, member_id: str, generation: int) -> ErrorCode:
        """May this member commit offsets now? Mirrors Kafka's checks and their order."""
        group = self.groups.get(group_id)
        if group is None or group.state is GroupState.EMPTY:
            if generation < 0:
                return ErrorCode.none
            return ErrorCode.unknown_member_id if member_id else ErrorCode.illegal_generation
        if group.state is GroupState.DEAD:
            return ErrorCode.coordinator_not_available
        if group.state is GroupState.COMPLETING:
            return ErrorCode.rebalance_in_progress
        if member_id not in group.members:
            return ErrorCode.unknown_member_id
        if generation != group.generation:
            return ErrorCode.illegal_generation
        return ErrorCode.none

    def shutdown(self) -> None:
        for group in self.groups.values():
            if group.rebalance_timer is not None:
                group.rebalance_timer.cancel()
            for timer in group.pending.values():
                timer.cancel()
            for member in group.members.values():
                self._stop_timer(member)
                _resolve(member.join_future, JoinResult(ErrorCode.coordinator_not_available))
                _resolve(member.sync_future, SyncResult(ErrorCode.coordinator_not_available))


def _resolve(
    future: asyncio.Future[JoinResult] | asyncio.Future[SyncResult] | None, value: object
) -> None:
    if future is not None and not future.done():
        future.set_result(value)  # type: ignore[arg-type]
