"""The pipeline page: each role's consumer group with its committed offsets and lag,
and each topic's log end offsets, from the cluster."""

from __future__ import annotations

import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from ...connections import Gateway
from ...deps import GatewayDep
from .access import DataOperator, PageOperator
from .rendering import render

router = APIRouter()


async def pipeline_data(gw: Gateway) -> dict[str, Any]:
    snapshot = await gw.pipeline.snapshot()
    return {
        "at": datetime.datetime.now(datetime.UTC).isoformat(),
        "groups": [
            {
                "role": g.role,
                "group": g.group,
                "topic": g.topic,
                "partition": g.partition,
                "committed": g.committed,
                "end": g.end,
                "lag": g.lag,
            }
            for g in snapshot.groups
        ],
        "topics": {topic: sum(ends.values()) for topic, ends in snapshot.ends.items()},
        "ends": snapshot.ends,
    }


@router.get("/pipeline")
async def pipeline_page(operator: PageOperator, gw: GatewayDep) -> HTMLResponse:
    return render("pipeline.html", page="pipeline", data=await pipeline_data(gw))


@router.get("/api/pipeline")
async def pipeline_json(operator: DataOperator, gw: GatewayDep) -> Any:
    return await pipeline_data(gw)
