"""A FastStream app publishing and subscribing through the broker."""

from __future__ import annotations

import asyncio
from typing import Any

from faststream.kafka import KafkaBroker, KafkaMessage


async def test_faststream_app_consumes_and_republishes(bootstrap: str, topic_name: str) -> None:
    broker = KafkaBroker(bootstrap)
    source, sink = f"{topic_name}-in", f"{topic_name}-out"
    seen: asyncio.Queue[tuple[Any, dict[str, Any], bytes | None]] = asyncio.Queue()

    @broker.subscriber(source, group_id=f"{topic_name}-app", auto_offset_reset="earliest")
    @broker.publisher(sink)
    async def double(body: dict[str, int]) -> dict[str, int]:
        return {"n": body["n"] * 2}

    @broker.subscriber(sink, group_id=f"{topic_name}-sink", auto_offset_reset="earliest")
    async def collect(body: dict[str, int], message: KafkaMessage) -> None:
        await seen.put((body, dict(message.headers), message.raw_message.key))  # type: ignore[union-attr]

    async with broker:
        await broker.start()
        for n in range(5):
            await broker.publish({"n": n}, source, key=f"k{n}".encode(), headers={"origin": "test"})
        results = [await asyncio.wait_for(seen.get(), 30) for _ in range(5)]

    assert sorted(body["n"] for body, _headers, _key in results) == [0, 2, 4, 6, 8]
    assert all(headers.get("content-type") == "application/json" for _b, headers, _k in results)
