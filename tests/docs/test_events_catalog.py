"""``docs/events.md`` lists every CloudEvents type as the code defines and routes it."""

from __future__ import annotations

import ast
import functools
import importlib
import re
from collections import defaultdict
from collections.abc import Iterator

import pytest

import projections  # noqa: F401  (registers every read model's folds)
from projections.ops import folds
from schemas import events
from schemas.base import Fact
from streams.catalog import BILLING, COMMANDS, EVENTS, OUTPUT, USAGE, spec_for
from tests.kafka import REPO
from workers.invoicer import Invoicer
from workers.model_worker import ModelWorker
from workers.orchestrator import Orchestrator
from workers.tool_worker import ToolWorker

ROLES = {"gateway", "cli", "commands", "orchestrator", "model", "tool", "projector"} | {
    "billing",
    "invoicer",
}
ROW = re.compile(
    r"^\| `([a-z_.0-9]+)` \| `(\w+)` \| `([a-z.]+)` \| `(\w+)` \|"
    r"([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|$"
)
# Where facts are made: every package but the models' own.
PACKAGES = ("streams", "projections", "workers", "gateway", "agentlog_cli")


def catalog_rows(text: str) -> dict[str, tuple[str, ...]]:
    rows = {}
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            type_, *cells = (cell.strip() for cell in match.groups())
            assert type_ not in rows, f"{type_} is listed twice"
            rows[type_] = tuple(cells)
    return rows


def names(cell: str) -> set[str]:
    return set() if cell == "—" else {name.strip().strip("`") for name in cell.split(",")}


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    """A module's functions and its classes' methods (``Class.method``), with their
    bodies: a function nested in one is part of it."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield f"{node.name}.{member.name}", member


def _called(node: ast.AST) -> Iterator[str]:
    """The names the code calls: ``X(…)`` and ``module.X(…)``."""
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            if isinstance(call.func, ast.Name):
                yield call.func.id
            elif isinstance(call.func, ast.Attribute):
                yield call.func.attr


@functools.cache
def constructors() -> dict[str, frozenset[str]]:
    """Per fact class name, the functions (``module:function``) whose source constructs
    it, read from the source of every module of ``PACKAGES``."""
    classes = {cls.__name__ for cls in Fact.registry.values()}
    found: defaultdict[str, set[str]] = defaultdict(set)
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            for name, node in _functions(ast.parse(path.read_text())):
                for called in set(_called(node)) & classes:
                    found[called].add(f"{module}:{name}")
    return {name: frozenset(functions) for name, functions in found.items()}


def _exists(function: str) -> bool:
    module, _, name = function.partition(":")
    try:
        found: object = importlib.import_module(module)
    except ImportError:
        return False
    for part in name.split("."):
        found = getattr(found, part, None)
    return callable(found)


def recorded_in_problems(type_: str, cls: type[Fact], cell: str) -> list[str]:
    """A "recorded in" cell against the code: every function it names constructs the
    class, and every function that does is named."""
    named, made_by = names(cell), constructors().get(cls.__name__, frozenset())
    return [
        f"{type_}: recorded in {f}, which "
        + ("does not construct it" if _exists(f) else "is no function")
        for f in sorted(named - made_by)
    ] + [f"{type_}: {f} constructs it, not in recorded in" for f in sorted(made_by - named)]


def handlers_of(cls: type[Fact]) -> set[str]:
    """The roles whose consumers take the type, as the code says."""
    topic = spec_for(cls)
    found = {"commands", "projector"} if topic == COMMANDS else set()
    if topic == EVENTS:
        found.add("projector")
        type_ = cls.ce_type()
        found |= {"orchestrator"} if type_ in Orchestrator.types else set()
        for worker in (ModelWorker, ToolWorker):
            if cls is worker.request_type:  # from its copy, on the worker's work topic
                found.add(worker.name)
    if topic == OUTPUT:
        found.add("gateway")  # server-sent events
    if topic in (USAGE, BILLING):
        found.add("billing")
        if cls.ce_type() in Invoicer.types:
            found.add("invoicer")
    return found


def check(text: str) -> list[str]:
    rows = catalog_rows(text)
    problems = [f"{t}: no row" for t in sorted(set(Fact.registry) - set(rows))]
    problems += [f"{t}: no such type" for t in sorted(set(rows) - set(Fact.registry))]
    for type_, cls in sorted(Fact.registry.items()):
        if type_ not in rows:
            continue
        name, topic, key, recorded_by, recorded_in, handled_by, read_models = rows[type_]
        expected = {
            "class": (name, cls.__name__),
            "topic": (topic, spec_for(cls).name),
            "key": (key, cls.subject_field),
            "handled by": (names(handled_by), handlers_of(cls)),
            "read models": (names(read_models), set(folds.read_models(cls))),
        }
        problems += [
            f"{type_}: {what} {doc!r}, code {code!r}"
            for what, (doc, code) in expected.items()
            if doc != code
        ]
        recorders = names(recorded_by)
        if not recorders or not recorders <= ROLES | {"any consumer"}:
            problems.append(f"{type_}: recorded by {recorded_by!r}")
        problems += recorded_in_problems(type_, cls, recorded_in)
    return problems


def test_the_event_catalog_matches_the_code() -> None:
    assert check((REPO / "docs/events.md").read_text()) == []


def test_a_type_without_a_row_or_with_a_wrong_row_is_reported() -> None:
    text = (REPO / "docs/events.md").read_text()
    type_ = events.ToolCallRejected.ce_type()
    row = next(line for line in text.splitlines() if line.startswith(f"| `{type_}`"))

    assert check(text.replace(row + "\n", "")) == [f"{type_}: no row"]
    wrong = row.replace("| turns |", "| sessions |").replace("| projector |", "| tool |")
    assert check(text.replace(row, wrong)) == [
        f"{type_}: handled by {{'tool'}}, code {{'projector'}}",
        f"{type_}: read models {{'sessions'}}, code {{'turns'}}",
    ]


def test_a_new_event_class_needs_a_row() -> None:
    class ToolCallRetried(events._ToolCallFact):
        """``agentlog.tool_call.retried.v1``: for this test only."""

        name = "retried"

    try:
        assert check((REPO / "docs/events.md").read_text()) == [
            "agentlog.tool_call.retried.v1: no row"
        ]
    finally:
        del Fact.registry[ToolCallRetried.ce_type()]


def test_a_row_must_name_every_function_that_makes_the_fact_and_only_those() -> None:
    text = (REPO / "docs/events.md").read_text()
    type_ = events.ToolCallRejected.ce_type()
    row = next(line for line in text.splitlines() if line.startswith(f"| `{type_}`"))
    making = "`workers.turn_decisions:_model_answered`"
    assert making in row

    elsewhere = "`workers.turn_decisions:_start`, `workers.turn_decisions:no_such`"
    assert check(text.replace(row, row.replace(making, elsewhere))) == [
        f"{type_}: recorded in workers.turn_decisions:_start, which does not construct it",
        f"{type_}: recorded in workers.turn_decisions:no_such, which is no function",
        f"{type_}: workers.turn_decisions:_model_answered constructs it, not in recorded in",
    ]


@pytest.mark.parametrize("cls", [Fact.registry[t] for t in sorted(Fact.registry)])
def test_each_event_class_docstring_names_its_wire_type(cls: type[Fact]) -> None:
    assert f"``{cls.ce_type()}``" in (cls.__doc__ or "")
