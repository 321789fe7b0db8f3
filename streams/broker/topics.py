"""Topics of the embedded broker: names, partitions, ids and per-topic configs on disk."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kio.schema.errors import ErrorCode

from .log import LogConfig, PartitionLog

_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


class TopicError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ConfigSpec:
    default: str
    validate: str  # "long", "int", or a "|"-separated list of allowed values


# The topic configs the broker honours; anything else is refused as INVALID_CONFIG so a
# setting never silently does nothing.
TOPIC_CONFIGS: dict[str, ConfigSpec] = {
    "retention.ms": ConfigSpec(str(7 * 24 * 3600 * 1000), "long"),
    "retention.bytes": ConfigSpec("-1", "long"),
    "segment.bytes": ConfigSpec(str(1 << 30), "int"),
    "segment.ms": ConfigSpec(str(7 * 24 * 3600 * 1000), "long"),
    "max.message.bytes": ConfigSpec("1048588", "int"),
    "cleanup.policy": ConfigSpec("delete", "delete"),
    "message.timestamp.type": ConfigSpec("CreateTime", "CreateTime"),
    "min.insync.replicas": ConfigSpec("1", "1"),
    "compression.type": ConfigSpec("producer", "producer"),
}


def validate_configs(configs: Mapping[str, str | None]) -> dict[str, str]:
    valid: dict[str, str] = {}
    for name, value in configs.items():
        spec = TOPIC_CONFIGS.get(name)
        if spec is None:
            raise TopicError(ErrorCode.invalid_config, f"unknown topic config {name!r}")
        if value is None:
            continue
        if spec.validate in ("long", "int"):
            try:
                number = int(value)
            except ValueError:
                raise TopicError(
                    ErrorCode.invalid_config, f"{name} must be an integer, got {value!r}"
                ) from None
            if name in ("segment.bytes", "max.message.bytes") and number < 14:
                raise TopicError(ErrorCode.invalid_config, f"{name} is too small")
            if name == "segment.ms" and number < 1:
                raise TopicError(ErrorCode.invalid_config, f"{name} must be positive")
        elif value not in spec.validate.split("|"):
            raise TopicError(
                ErrorCode.invalid_config,
                f"{name}={value!r} is not supported by the embedded broker "
                f"(supported: {spec.validate})",
            )
        valid[name] = value
    return valid


@dataclass(eq=False)
class Partition:
    topic: str
    index: int
    log: PartitionLog
    waiters: set[asyncio.Future[None]] = field(default_factory=set)

    def notify(self) -> None:
        """Wake long-polling fetches waiting on this partition."""
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()


@dataclass(eq=False)
class Topic:
    name: str
    topic_id: uuid.UUID
    directory: Path
    configs: dict[str, str]
    partitions: list[Partition]

    def config(self, name: str) -> str:
        return self.configs.get(name, TOPIC_CONFIGS[name].default)

    def log_config(self) -> LogConfig:
        return LogConfig(
            segment_bytes=int(self.config("segment.bytes")),
            segment_ms=int(self.config("segment.ms")),
            retention_ms=int(self.config("retention.ms")),
            retention_bytes=int(self.config("retention.bytes")),
            max_message_bytes=int(self.config("max.message.bytes")),
        )


class TopicRegistry:
    """All topics under ``data_dir/topics``; loads them at start, creates and deletes."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "topics"
        self.root.mkdir(parents=True, exist_ok=True)
        self._topics: dict[str, Topic] = {}
        for leftover in self.root.glob(".deleted-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for meta in sorted(self.root.glob("*/topic.json")):
            if not meta.parent.name.startswith("."):
                self._load(meta)

    def _load(self, meta_path: Path) -> None:
        meta = json.loads(meta_path.read_text())
        self._open(
            meta["name"], uuid.UUID(meta["topic_id"]), int(meta["partitions"]), meta["configs"]
        )

    def _open(
        self, name: str, topic_id: uuid.UUID, partitions: int, configs: dict[str, str]
    ) -> Topic:
        directory = self.root / name
        topic = Topic(name, topic_id, directory, configs, [])
        config = topic.log_config()
        topic.partitions = [
            Partition(name, i, PartitionLog(directory / str(i), config)) for i in range(partitions)
        ]
        self._topics[name] = topic
        return topic

    def __iter__(self) -> Iterator[Topic]:
        return iter(list(self._topics.values()))

    def __len__(self) -> int:
        return len(self._topics)

    def get(self, name: str) -> Topic | None:
        return self._topics.get(name)

    def by_id(self, topic_id: uuid.UUID) -> Topic | None:
        return next((t for t in self._topics.values() if t.topic_id == topic_id), None)

    def partition(self, name: str, index: int) -> Partition | None:
        topic = self._topics.get(name)
        if topic is None or not 0 <= index < len(topic.partitions):
            return None
        return topic.partitions[index]

    @staticmethod
    def check_name(name: str) -> None:
        if not _TOPIC_NAME.match(name) or name in (".", ".."):
            raise TopicError(ErrorCode.invalid_topic_exception, f"invalid topic name {name!r}")

    def create(
        self,
        name: str,
        partitions: int,
        configs: Mapping[str, str | None],
        *,
        validate_only: bool = False,
    ) -> Topic | None:
        self.check_name(name)
        if name in self._topics:
            raise TopicError(ErrorCode.topic_already_exists, f"topic {name!r} already exists")
        if partitions < 1:
            raise TopicError(ErrorCode.invalid_partitions, "partitions must be at least 1")
        valid = validate_configs(configs)
        if validate_only:
            return None
        topic_id = uuid.uuid4()
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "name": name,
            "topic_id": str(topic_id),
            "partitions": partitions,
            "configs": valid,
        }
        tmp = directory / "topic.json.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, directory / "topic.json")
        return self._open(name, topic_id, partitions, valid)

    def delete(self, name: str) -> Topic:
        topic = self._topics.pop(name, None)
        if topic is None:
            raise TopicError(ErrorCode.unknown_topic_or_partition, f"unknown topic {name!r}")
        for partition in topic.partitions:
            partition.log.close()
            partition.notify()
        # Rename first so a crash mid-delete never leaves a half-deleted topic that loads.
        graveyard = self.root / f".deleted-{name}-{topic.topic_id}"
        os.replace(topic.directory, graveyard)
        shutil.rmtree(graveyard, ignore_errors=True)
        return topic

    def close(self) -> None:
        for topic in self._topics.values():
            for partition in topic.partitions:
                partition.log.close()
