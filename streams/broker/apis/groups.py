"""FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, DescribeGroups and
ListGroups: the classic consumer-group protocol, decided by the group coordinator."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from ..codec import RequestFrame
from ..groups import GroupState, JoinResult
from .context import NO_AUTHORIZED_OPERATIONS, NODE_ID, ApiContext, Connection, Response


async def find_coordinator(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
    if getattr(request.body, "key_type", 0) != 0:
        return {
            "throttle_time": 0,
            "error_code": ErrorCode.invalid_request,
            "error_message": "only group coordinators exist (no transactions)",
            "node_id": -1,
            "host": "",
            "port": -1,
        }
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "error_message": None,
        "node_id": NODE_ID,
        "host": ctx.settings.advertised_host,
        "port": ctx.settings.port,
    }


async def join_group(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
    body = request.body
    session_ms = int(body.session_timeout.total_seconds() * 1000)
    rebalance = getattr(body, "rebalance_timeout", None)
    rebalance_ms = int(rebalance.total_seconds() * 1000) if rebalance else session_ms
    result: JoinResult = await ctx.coordinator.join(
        body.group_id,
        body.member_id,
        group_instance_id=getattr(body, "group_instance_id", None),
        protocol_type=body.protocol_type,
        protocols=[(p.name, p.metadata) for p in body.protocols],
        session_timeout_ms=session_ms,
        rebalance_timeout_ms=rebalance_ms,
        client_id=request.client_id or "",
        client_host=conn.client_host,
        require_known_member_id=request.api_version >= 4,
    )
    return {
        "throttle_time": 0,
        "error_code": result.error,
        "generation_id": result.generation,
        "protocol_type": result.protocol_type,
        "protocol_name": result.protocol_name,
        "leader": result.leader,
        "member_id": result.member_id,
        "members": [
            {"member_id": m, "group_instance_id": i, "metadata": meta}
            for m, i, meta in result.members
        ],
    }


async def sync_group(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
    body = request.body
    result = await ctx.coordinator.sync(
        body.group_id,
        body.member_id,
        body.generation_id,
        {a.member_id: a.assignment for a in body.assignments},
        getattr(body, "protocol_type", None),
        getattr(body, "protocol_name", None),
    )
    return {
        "throttle_time": 0,
        "error_code": result.error,
        "protocol_type": result.protocol_type,
        "protocol_name": result.protocol_name,
        "assignment": result.assignment,
    }


async def heartbeat(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
    body = request.body
    error = ctx.coordinator.heartbeat(body.group_id, body.member_id, body.generation_id)
    return {"throttle_time": 0, "error_code": error}


async def leave_group(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
    body = request.body
    if hasattr(body, "members"):
        ids = [m.member_id for m in body.members]
        errors = ctx.coordinator.leave(body.group_id, ids)
        return {
            "throttle_time": 0,
            "error_code": ErrorCode.none,
            "members": [
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.group_instance_id,
                    "error_code": e,
                }
                for m, e in zip(body.members, errors, strict=True)
            ],
        }
    (error,) = ctx.coordinator.leave(body.group_id, [body.member_id])
    return {"throttle_time": 0, "error_code": error}


async def describe_groups(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
    described = []
    for group_id in request.body.groups:
        group = ctx.coordinator.groups.get(group_id)
        if group is None:
            state = "Empty" if ctx.offsets.partitions(group_id) else "Dead"
            described.append(
                {
                    "error_code": ErrorCode.none,
                    "group_id": group_id,
                    "group_state": state,
                    "protocol_type": "",
                    "protocol_data": "",
                    "members": [],
                    "authorized_operations": NO_AUTHORIZED_OPERATIONS,
                }
            )
            continue
        stable = group.state is GroupState.STABLE
        protocol = group.protocol_name or ""
        described.append(
            {
                "error_code": ErrorCode.none,
                "group_id": group_id,
                "group_state": group.state.value,
                "protocol_type": group.protocol_type or "",
                "protocol_data": protocol,
                "members": [
                    {
                        "member_id": m.member_id,
                        "group_instance_id": m.group_instance_id,
                        "client_id": m.client_id,
                        "client_host": m.client_host,
                        "member_metadata": m.metadata_for(protocol) if protocol else b"",
                        "member_assignment": m.assignment if stable else b"",
                    }
                    for m in group.members.values()
                ],
                "authorized_operations": NO_AUTHORIZED_OPERATIONS,
            }
        )
    return {"throttle_time": 0, "groups": described}


async def list_groups(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
    states_filter = set(getattr(request.body, "states_filter", None) or ())
    listed: dict[str, tuple[str, str]] = {
        group_id: ("", "Empty") for group_id in ctx.offsets.groups()
    }
    for group in ctx.coordinator.groups.values():
        if group.state is not GroupState.DEAD:
            listed[group.group_id] = (group.protocol_type or "", group.state.value)
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "groups": [
            {"group_id": g, "protocol_type": ptype, "group_state": state}
            for g, (ptype, state) in sorted(listed.items())
            if not states_filter or state in states_filter
        ],
    }
