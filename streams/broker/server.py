"""The embedded broker's network front: TCP connections, framing, dispatch, lifecycle.

Requests on one connection are handled one at a time, in order, as Kafka does; clients
open separate connections for the coordinator and for fetching, so a long-polling fetch
only holds up its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kio.schema.errors import ErrorCode
from prometheus_client import CollectorRegistry

from .apis import API_VERSIONS_KEY, APIS, ApiContext, ApiSettings, Connection, api_versions_body
from .codec import (
    MalformedRequestError,
    build,
    decode_request,
    encode_response,
    peek_header,
    response_type,
)
from .groups import GroupCoordinator
from .metrics import BrokerMetrics
from .offsets import OffsetStore
from .state import BrokerMeta
from .topics import Partition, TopicRegistry

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval"]
_FRAME_SIZE = struct.Struct(">i")
_DRAIN_ABOVE = 1 << 20


@dataclass(frozen=True)
class BrokerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 9092
    advertised_host: str | None = None
    fsync: FsyncPolicy = "interval"
    fsync_interval_ms: int = 1000
    max_request_bytes: int = 100 * 1024 * 1024
    auto_create_topics: bool = True
    default_partitions: int = 1
    retention_check_interval_ms: int = 5000
    group_initial_rebalance_delay_ms: int = 0
    group_min_session_timeout_ms: int = 6000
    shutdown_grace_ms: int = 5000
    broker_configs: dict[str, str] = field(default_factory=dict)


class Broker:
    """A single-node, disk-backed Kafka-protocol broker."""

    def __init__(self, config: BrokerConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.meta = BrokerMeta(config.data_dir)
        self.topics = TopicRegistry(config.data_dir)
        self.offsets = OffsetStore(config.data_dir, fsync_each_commit=config.fsync == "always")
        self.coordinator = GroupCoordinator(
            initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
            min_session_timeout_ms=config.group_min_session_timeout_ms,
        )
        self.metrics = BrokerMetrics(registry or CollectorRegistry(), self.topics, self.coordinator)
        self.context: ApiContext | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], bool] = {}  # task -> busy
        self._background: list[asyncio.Task[None]] = []
        self.port = config.port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, limit=1 << 20
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.context = ApiContext(
            ApiSettings(
                advertised_host=self.config.advertised_host or self.config.host,
                port=self.port,
                auto_create_topics=self.config.auto_create_topics,
                default_partitions=self.config.default_partitions,
                fsync_always=self.config.fsync == "always",
                broker_configs={
                    "auto.create.topics.enable": str(self.config.auto_create_topics).lower(),
                    "num.partitions": str(self.config.default_partitions),
                    "socket.request.max.bytes": str(self.config.max_request_bytes),
                    "log.flush.policy": self.config.fsync,
                    **self.config.broker_configs,
                },
            ),
            self.topics,
            self.coordinator,
            self.offsets,
            self.meta,
            on_append=self._appended,
            on_read=self.metrics.sent,
        )
        if self.config.fsync == "interval":
            self._background.append(asyncio.create_task(self._flush_loop()))
        self._background.append(asyncio.create_task(self._retention_loop()))
        log.info(
            "broker started",
            extra={
                "host": self.config.host,
                "port": self.port,
                "data_dir": str(self.config.data_dir),
                "fsync": self.config.fsync,
                "topics": len(self.topics),
            },
        )

    def _appended(self, partition: Partition, size: int, records: int) -> None:
        self.metrics.appended(partition.topic, size, records)

    # -- connections -----------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = False
        peer = writer.get_extra_info("peername")
        client = Connection(client_host=f"/{peer[0]}" if peer else "")
        try:
            await self._serve(task, reader, writer, client)
        except MalformedRequestError as exc:
            log.warning(
                "closing connection: malformed request",
                extra={"peer": str(peer), "reason": str(exc)},
            )
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("closing connection: request failed", extra={"peer": str(peer)})
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self,
        task: asyncio.Task[None],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: Connection,
    ) -> None:
        assert self.context is not None
        while not self.context.stopping:
            try:
                prefix = await reader.readexactly(4)
            except asyncio.IncompleteReadError:
                return
            (size,) = _FRAME_SIZE.unpack(prefix)
            if size < 0 or size > self.config.max_request_bytes:
                raise MalformedRequestError(
                    f"frame of {size} bytes refused (max {self.config.max_request_bytes})"
                )
            frame = await reader.readexactly(size)
            self._connections[task] = True
            response = await self._dispatch(frame, client)
            if response is not None:
                writer.write(response)
                if writer.transport.get_write_buffer_size() > _DRAIN_ABOVE:
                    await writer.drain()
            self._connections[task] = False

    async def _dispatch(self, frame: bytes, client: Connection) -> bytes | None:
        assert self.context is not None
        api_key, api_version, correlation_id = peek_header(frame)
        api = APIS.get(api_key)
        if api is None:
            raise MalformedRequestError(f"unsupported API key {api_key}")
        if not api.accepts(api_version):
            if api_key == API_VERSIONS_KEY:
                # A client newer than us: answer in v0 so it can pick a version we know.
                fallback = api_versions_body(ErrorCode.unsupported_version)
                return encode_response(correlation_id, build(response_type(api_key, 0), fallback))
            raise MalformedRequestError(f"unsupported version {api_version} of API {api_key}")
        request = decode_request(frame)
        started = time.perf_counter()
        body = await api.handler(self.context, request, client)
        self.metrics.request_seconds.labels(type(request.body).__name__).observe(
            time.perf_counter() - started
        )
        if body is None:
            return None
        return encode_response(correlation_id, build(response_type(api_key, api_version), body))

    # -- background work -------------------------------------------------------------

    async def _flush_loop(self) -> None:
        interval = self.config.fsync_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self._flush)

    def _flush(self) -> None:
        for topic in self.topics:
            for partition in topic.partitions:
                partition.log.flush()
        if self.offsets.dirty:
            self.offsets.flush()

    async def _retention_loop(self) -> None:
        interval = self.config.retention_check_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            self.enforce_retention()

    def enforce_retention(self) -> int:
        now_ms = int(time.time() * 1000)
        deleted = 0
        for topic in self.topics:
            for partition in topic.partitions:
                removed = partition.log.enforce_retention(now_ms)
                if removed:
                    log.info(
                        "retention deleted segments",
                        extra={
                            "topic": topic.name,
                            "partition": partition.index,
                            "segments": removed,
                            "log_start_offset": partition.log.log_start_offset,
                        },
                    )
                deleted += removed
        return deleted

    # -- shutdown --------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, then close every file."""
        if self._server is None or self.context is None:
            return
        self._server.close()
        self.context.stopping = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for topic in self.topics:
            for partition in topic.partitions:
                partition.notify()
        self.coordinator.shutdown()
        for task, busy in list(self._connections.items()):
            if not busy:
                task.cancel()
        pending = list(self._connections)
        if pending:
            _done, still = await asyncio.wait(pending, timeout=self.config.shutdown_grace_ms / 1000)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        await self._server.wait_closed()
        self.topics.close()
        self.offsets.close()
        self._server = None
        log.info("broker stopped")
