"""The ``agentlog`` command dispatches by table: every sub-command's parser names the
function that runs it."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from agentlog_cli import build_parser


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Every sub-command, as the words that name it, with its parser."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path
    for action in subs:
        for name, sub in action.choices.items():
            yield from leaves(sub, (*path, name))


def parser_of(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in path:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = action.choices[word]
    return parser


COMMANDS = [path for path in leaves(build_parser()) if path != ("broker",)]


def test_every_command_is_found() -> None:
    assert len(COMMANDS) == 16
    assert ("tenants", "keys", "revoke") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_command_names_the_function_that_runs_it(path: tuple[str, ...]) -> None:
    assert callable(parser_of(path).get_default("run")), path


@pytest.mark.parametrize(
    ("argv", "run", "service", "starts_services"),
    [
        (["up"], "_up", "agentlog", True),
        (["services", "up"], "_services_up", None, True),
        (["model-server"], "_model_server", None, True),
        (["gateway"], "_gateway", "agentlog-gateway", False),
        (["worker", "model"], "_roles", "agentlog-{role}", False),
        (["tenants", "keys", "revoke", "t-1", "k-1"], "_tenant_keys", None, False),
        (["projections", "rebuild", "core", "--no-swap"], "_rebuild", None, False),
        (["replay", "billing"], "_replay", None, False),
    ],
)
def test_a_command_line_is_parsed_into_its_function_and_what_it_needs(
    argv: list[str], run: str, service: str | None, starts_services: bool
) -> None:
    args = build_parser().parse_args(argv)
    assert (args.run.__name__, args.service, args.starts_services) == (
        run,
        service,
        starts_services,
    )
