"""What a consumer runtime asks of a role's handler, and what it records for a record it
sets aside.

A handler has the members of ``Handler``. Whatever more it does is an optional hook, and
a handler declares each hook it has by subclassing the hook's protocol (``class
Projector(StoresPositions, RecordsUnprocessable)``): mypy then checks the hook's
signature, and a declared hook that is missing or misspelt makes the class abstract, so
it cannot be instantiated. The runtime finds the hooks once, when it is given the
handler (``Hooks.of``), and refuses a handler that has a hook's method without declaring
it.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from aiokafka import TopicPartition

from schemas import events
from schemas.envelope import Envelope
from schemas.errors import DomainError


@dataclass(frozen=True, slots=True)
class Position:
    topic: str
    partition: int
    offset: int


Item = tuple[Envelope[Any], Position]
# Where a published envelope was written: (topic, partition, offset).
Ack = tuple[str, int, int]
# Where a batch ended in each partition: {(topic, partition): next offset}.
Ends = dict[tuple[str, int], int]


class Handler(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def topics(self) -> Sequence[str]: ...

    @property
    def types(self) -> frozenset[str] | None:
        """The CloudEvents types it handles (None: all). Records of other types are
        skipped by their ``ce_type`` header, unparsed: most consumers of the events
        topic need a few of its types."""
        ...

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Prepare for newly assigned partitions; return offsets to start from, if any."""
        ...

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        """Handle records in log order; return the envelopes to publish. A handler that
        does more declares the hooks below that it has."""
        ...


@runtime_checkable
class WritesItself(Protocol):
    @abstractmethod
    async def written(self) -> None:
        """For a handler that writes records itself: awaited after the returned
        envelopes are published, before the offsets are committed."""


@runtime_checkable
class WatchesPublished(Protocol):
    @abstractmethod
    def published(self, acks: list[Ack]) -> None:
        """Told where the returned envelopes were written."""


@runtime_checkable
class Ticks(Protocol):
    @abstractmethod
    async def tick(self) -> list[Envelope[Any]]:
        """Called about every second between batches, for what is due by the clock
        (deadlines); the envelopes it returns are published."""


@runtime_checkable
class RecordsUnprocessable(Protocol):
    @abstractmethod
    def unprocessable(self, env: Envelope[Any], reason: str) -> list[Envelope[Any]]:
        """What to record when a record it could not handle goes to the dead-letter
        topic, instead of the default (``unprocessable_step``)."""


@runtime_checkable
class StoresPositions(Protocol):
    @abstractmethod
    async def passed(self, ends: Ends) -> None:
        """Told where each partition's batch ended when its last records were not
        handed to it (repeated, dead-lettered or of other types), for a handler that
        stores its own positions (a projector: its readers wait on them)."""


@runtime_checkable
class Closes(Protocol):
    @abstractmethod
    async def close(self) -> None:
        """Release what the handler holds (connections); the runner calls it once its
        role has stopped."""


# Every optional hook, by the name of its method.
HOOKS: dict[str, type] = {
    "written": WritesItself,
    "published": WatchesPublished,
    "tick": Ticks,
    "unprocessable": RecordsUnprocessable,
    "passed": StoresPositions,
    "close": Closes,
}


def undeclared_hooks(cls: type) -> list[str]:
    """The hooks whose method ``cls`` has without declaring the hook's protocol (so mypy
    would not check it), as ``name (Protocol)``."""
    return [
        f"{name} ({protocol.__name__})"
        for name, protocol in HOOKS.items()
        if callable(getattr(cls, name, None)) and protocol not in cls.__mro__
    ]


@dataclass(frozen=True, slots=True)
class Hooks:
    """The optional hooks a handler declared, found once (None: it has not that hook)."""

    written: Callable[[], Awaitable[None]] | None = None
    published: Callable[[list[Ack]], None] | None = None
    tick: Callable[[], Awaitable[list[Envelope[Any]]]] | None = None
    unprocessable: Callable[[Envelope[Any], str], list[Envelope[Any]]] | None = None
    passed: Callable[[Ends], Awaitable[None]] | None = None

    @classmethod
    def of(cls, handler: Handler) -> Hooks:
        """The handler's hooks; TypeError for a hook's method it has not declared."""
        undeclared = undeclared_hooks(type(handler))
        if undeclared:
            raise TypeError(
                f"{type(handler).__qualname__} has hooks it does not declare:"
                f" {', '.join(undeclared)}; subclass the hook's protocol"
                " (streams.handler) so that its signature is checked"
            )
        return cls(
            written=handler.written if isinstance(handler, WritesItself) else None,
            published=handler.published if isinstance(handler, WatchesPublished) else None,
            tick=handler.tick if isinstance(handler, Ticks) else None,
            unprocessable=(
                handler.unprocessable if isinstance(handler, RecordsUnprocessable) else None
            ),
            passed=handler.passed if isinstance(handler, StoresPositions) else None,
        )


def unprocessable_step(env: Envelope[Any], consumer: str, reason: str) -> list[Envelope[Any]]:
    """What records that a turn's record went to the dead-letter topic: a fact keyed by
    the session, on which the orchestrator fails the turn. Nothing for other records."""
    data = env.data
    turn_id, session_id = getattr(data, "turn_id", None), getattr(data, "session_id", None)
    if not turn_id or not session_id or isinstance(data, events.TurnStepUnprocessable):
        return []
    fact = events.TurnStepUnprocessable(
        session_id=session_id,
        turn_id=turn_id,
        record_id=env.id,
        record_type=env.type,
        consumer=consumer,
        reason=reason,
    )
    return [env.follow(fact, step=f"unprocessable-{consumer}", source=f"/{consumer}")]


def failure_reason(exc: BaseException) -> str:
    """A reason safe to record anywhere: a code and the exception's class, never its
    text, which may quote a secret or a tenant's data; a domain error's own code and
    detail, which are written to be shown."""
    if isinstance(exc, DomainError):
        return f"{exc.code}: {exc.detail}"
    return f"HANDLER_FAILED: {type(exc).__name__}"
