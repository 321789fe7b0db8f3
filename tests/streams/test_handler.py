"""A handler's optional hooks are declared, so a misspelt one cannot go unnoticed: every
handler of the code declares the hooks it has and has nothing named like a hook that is
not one; a declared hook that is missing makes the class abstract; an undeclared one is
refused by the runtime."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition

import projections.projector  # noqa: F401  (the projector's handler)
import workers.runner  # noqa: F401  (imports every role's handler)
from schemas.envelope import Envelope
from streams.catalog import Catalog
from streams.consumer import ConsumerRuntime
from streams.handler import (
    HOOKS,
    Handler,
    Hooks,
    Item,
    StoresPositions,
    Ticks,
    undeclared_hooks,
)
from streams.publisher import Publisher

PACKAGES = ("workers.", "projections.", "streams.", "gateway.", "agentlog_cli.")
# Names that look like a hook and are not one: say here why, when one is meant.
NOT_HOOKS: frozenset[str] = frozenset()


def handler_classes() -> list[type]:
    """Every class of agentlog's packages that a consumer runtime can run."""
    found = {
        value
        for name, module in list(sys.modules.items())
        if name.startswith(PACKAGES)
        for value in vars(module).values()
        if isinstance(value, type)
        and value.__module__ == name
        and not getattr(value, "_is_protocol", False)
        and callable(getattr(value, "handle_batch", None))
        and callable(getattr(value, "on_assigned", None))
    }
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def like_a_hook(cls: type) -> list[str]:
    """The methods of ``cls`` named like a hook without being one: close to a hook's name
    (``pased``, ``ticks``), or a hook's name behind underscores (``_tick``)."""
    problems = []
    for name in dir(cls):
        if name in HOOKS or name in NOT_HOOKS or name.startswith("__"):
            continue
        if not callable(getattr(cls, name, None)):
            continue
        bare = name.lstrip("_")
        close = [bare] if bare in HOOKS else difflib.get_close_matches(bare, HOOKS, 1, 0.8)
        if close and (bare in HOOKS or not name.startswith("_")):
            problems.append(f"{cls.__qualname__}.{name} (meant {close[0]}?)")
    return problems


class _Bare:
    """The members every handler has; the hooks are up to each test's subclass."""

    name = "test"
    topics: Sequence[str] = ("t",)
    types = None

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {}

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        return []


def test_the_roles_handlers_are_found() -> None:
    names = {cls.__name__ for cls in handler_classes()}
    assert {"CommandHandler", "Orchestrator", "ModelWorker", "ToolWorker"} <= names
    assert {"Invoicer", "Projector"} <= names


@pytest.mark.parametrize("cls", handler_classes(), ids=lambda cls: cls.__name__)
def test_a_handler_declares_every_hook_it_has_and_has_nothing_named_like_one(cls: type) -> None:
    assert undeclared_hooks(cls) == []
    assert like_a_hook(cls) == []


def test_a_misspelt_hook_is_named_as_such() -> None:
    class Misspelt(_Bare):
        async def pased(self, ends: dict[tuple[str, int], int]) -> None: ...

        async def ticks(self) -> list[Envelope[Any]]:
            return []

        def _unprocessable(self, env: Envelope[Any], reason: str) -> list[Envelope[Any]]:
            return []

        def publshed(self, acks: list[tuple[str, int, int]]) -> None: ...

    assert like_a_hook(Misspelt) == [
        "test_a_misspelt_hook_is_named_as_such.<locals>.Misspelt._unprocessable"
        " (meant unprocessable?)",
        "test_a_misspelt_hook_is_named_as_such.<locals>.Misspelt.pased (meant passed?)",
        "test_a_misspelt_hook_is_named_as_such.<locals>.Misspelt.publshed (meant published?)",
        "test_a_misspelt_hook_is_named_as_such.<locals>.Misspelt.ticks (meant tick?)",
    ]


def test_a_declared_hook_that_is_misspelt_leaves_the_class_abstract() -> None:
    class Misspelt(_Bare, StoresPositions):
        async def pased(self, ends: dict[tuple[str, int], int]) -> None: ...

    with pytest.raises(TypeError, match=r"abstract method.* passed"):
        Misspelt()  # type: ignore[abstract]  # mypy says so too


def test_the_runtime_refuses_a_hook_that_is_not_declared() -> None:
    class Undeclared(_Bare):
        async def passed(self, ends: dict[tuple[str, int], int]) -> None: ...

    assert undeclared_hooks(Undeclared) == ["passed (StoresPositions)"]
    with pytest.raises(TypeError, match=r"Undeclared has hooks it does not declare: passed"):
        ConsumerRuntime(Undeclared(), Publisher("127.0.0.1:9", Catalog("t.")))


def test_the_runtime_finds_the_declared_hooks_once() -> None:
    class Declared(_Bare, StoresPositions, Ticks):
        async def passed(self, ends: dict[tuple[str, int], int]) -> None: ...

        async def tick(self) -> list[Envelope[Any]]:
            return []

    handler = Declared()
    hooks = Hooks.of(handler)
    assert hooks.passed == handler.passed
    assert hooks.tick == handler.tick
    assert (hooks.written, hooks.published, hooks.unprocessable) == (None, None, None)
    assert Hooks.of(_Bare()) == Hooks()


def test_bare_handlers_are_handlers() -> None:
    handler: Handler = _Bare()  # mypy: the members a runtime needs
    assert handler.types is None
