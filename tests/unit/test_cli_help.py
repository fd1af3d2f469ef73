"""The command's help: every command and action says what it does, every flag its default."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from passito_jobs.cli import PLUGIN_COMMANDS, build_parser
from tests.helpers import run_main


def commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's parser, by its full name; plug-in commands loaded one at a time."""
    seen: set[str] = set()
    for chosen in ["", *PLUGIN_COMMANDS]:
        stack = [build_parser([chosen] if chosen else [])]
        while stack:
            parser = stack.pop()
            if parser.prog not in seen and (not chosen or chosen in parser.prog):
                seen.add(parser.prog)
                yield parser.prog, parser
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    stack.extend(action.choices.values())


ALL = dict(commands())


def test_every_command_is_found() -> None:
    assert {"passito-jobs db", "passito-jobs jobs list", "passito-jobs outpass dispatch"} <= set(ALL)
    assert len(ALL) > 20


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_command_has_a_description_and_every_argument_help(name: str) -> None:
    parser = ALL[name]
    if name != "passito-jobs":
        assert parser.description, f"`{name} --help` does not say what it does"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
            continue
        if action.help == argparse.SUPPRESS:
            continue  # a deprecated spelling
        assert action.help, f"{name} {action.option_strings or action.dest}: no help"
        takes_value = (
            action.option_strings and action.nargs != 0 and action.const is None and not action.required
        )
        if takes_value:
            assert "default" in action.help, f"{name} {action.option_strings}: the help names no default"


def test_version() -> None:
    code, out, _ = run_main(["--version"])
    assert code == 0
    assert out.startswith("passito-jobs ")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["jobs", "list", "--bogus"], "passito-jobs jobs list: error: unrecognized arguments: --bogus"),
        (["dispatch", "Sleep", "--nope"], "passito-jobs dispatch: error: unrecognized arguments: --nope"),
        (["db", "nap"], "passito-jobs db: error: argument ACTION: invalid choice: 'nap'"),
    ],
)
def test_a_usage_error_points_at_the_subcommands_help(args: list[str], line: str) -> None:
    code, out, err = run_main(args)
    command = line.split(":", maxsplit=1)[0]
    assert (code, out) == (2, "")
    assert err.strip() == f"{line}" + err.strip()[len(line) :]
    assert err.strip().endswith(f"(see `{command} --help`)")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("delay", ["30", "30s", "0.5m"])
def test_dispatch_delay_takes_a_duration(delay: str) -> None:
    args = build_parser(["dispatch"]).parse_args(["dispatch", "Sleep", "--delay", delay])
    assert args.delay == 30.0
