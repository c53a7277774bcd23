"""The `ftlab` command line. Each subcommand lives in its own module under `ftlab.commands`.

A command module defines `register(subparsers)`, which adds its parser and sets
`handler` (a function taking the parsed arguments and returning an exit code).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import pkgutil
import sys
import warnings
from typing import TextIO

from ftlab import __version__, commands
from ftlab.paths import HomeError


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: options are spelled out in full, so that a typo such as `--epoch`
    is refused instead of being read as `--epochs`."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftlab", description="Tools for the fine-tuning course (run `ftlab check` first)."
    )
    parser.add_argument("--version", action="version", version=f"ftlab {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=CommandParser
    )
    parser.set_defaults(commands=subparsers.choices)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser, with its usage and the likely option
        refuse_unknown(args.commands.get(args.command, parser), unknown)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = plain_warning
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ftlab quiz --list | head -1`: the reader left early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as the shell reports a command ended by SIGPIPE
    except HomeError as error:
        print(f"ftlab {args.command}: {error}", file=sys.stderr)
        return 1


def plain_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A warning as one line on stderr: the source file and line Python adds mean nothing to
    a learner (training's notes on the data, a corrupt quiz progress file moved aside)."""
    print(f"warning: {message}", file=sys.stderr)


def refuse_unknown(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """Exit (status 2) naming the arguments `parser` does not take, and the option meant."""
    known = [option for action in parser._actions for option in action.option_strings]
    hints = []
    for argument in unknown:
        close = difflib.get_close_matches(argument.split("=")[0], known, n=1)
        if argument.startswith("-") and close:
            hints.append(f"{argument}: did you mean {close[0]}?")
    parser.error(
        f"unrecognized arguments: {' '.join(unknown)}"
        + ("".join(f"\n  {hint}" for hint in hints))
        + f"\n  (`{parser.prog} --help` lists its options)"
    )


if __name__ == "__main__":
    sys.exit(main())
