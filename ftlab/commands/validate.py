"""`ftlab validate FILE`: check a fine-tuning data file, with line numbers, stats and cost.

Exit status: 0 valid (warnings allowed), 1 invalid, 2 the file could not be read
(or the arguments are wrong).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ftlab.commands import positive_int
from ftlab.files import same_file
from ftlab.models import ModelNotFoundError
from ftlab.paths import HomeError
from ftlab.validation import (
    PriceError,
    UnreadableFileError,
    price_table,
    resolve_price,
    validate_bytes,
    validate_file,
)

UNREADABLE_FILE = "unreadable_file"  # the --json code for exit status 2: no report at all
MODEL_NOT_FOUND = "model_not_found"  # exit status 2 with --json: no tokenizer to count with
INVALID_ARGUMENT = "invalid_argument"  # exit status 2 with --json: an option's value is wrong


def _option_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the options' values, checked here rather than by argparse so that
    `--json` still gets its one JSON object."""
    for option, value in (("--epochs", args.epochs), ("--max-tokens", args.max_tokens)):
        if value is None:
            continue
        try:
            setattr(args, option[2:].replace("-", "_"), positive_int(value))
        except argparse.ArgumentTypeError as error:
            return f"argument {option}: {error}"
    if args.no_tokens and args.max_tokens is not None:
        return (
            "argument --max-tokens: it checks examples' token counts, which --no-tokens skips; "
            "leave one of the two out"
        )
    if args.price_per_million is not None:
        try:
            resolve_price(args.price_per_million)
        except PriceError as error:
            return f"argument --price-per-million: {error}"
    for other in args.against or []:
        if args.file != "-" and same_file(args.file, other):
            return (
                f"argument --against: {other} is the file being checked, and every example "
                "would overlap itself; pass the other split (the validation or test file)"
            )
    return None


def register(subparsers: argparse._SubParsersAction) -> None:
    try:
        models = ", ".join(sorted(price_table().training_per_million_tokens))
    except PriceError:
        models = "see data/prices.json"
    parser = subparsers.add_parser(
        "validate",
        help="check a chat-format JSONL data file: problems by line, token stats, cost",
        description="Check a chat-format JSONL fine-tuning file. Every problem is listed with "
        "its line number and code; then token statistics (base model's tokenizer and chat "
        "template) and a cost estimate. Exit status: 0 valid, 1 invalid, 2 no report (the file "
        "cannot be read, an option's value is wrong, or --model cannot be loaded).",
    )
    parser.add_argument("file", help="the .jsonl file to check (- reads standard input)")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object {valid, errors, warnings, stats}"
    )
    parser.add_argument(
        "--against",
        action="append",
        metavar="OTHER.jsonl",
        help="another split whose user messages must not appear here (repeat for several)",
    )
    parser.add_argument(
        "--epochs",
        metavar="N",
        help="epochs for the cost estimate (default: OpenAI's 'auto' rule)",
    )
    parser.add_argument(
        "--price-per-million",
        metavar="P",
        help=f"training price per million tokens: a number, or a model ({models})",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="count tokens with this base model's tokenizer (default: the course's base model)",
    )
    parser.add_argument(
        "--max-tokens",
        metavar="N",
        help="context length for the too_long check (default: the model's)",
    )
    parser.add_argument(
        "--no-tokens",
        action="store_true",
        help="skip token statistics (structure checks only; no model needed)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Data can hold characters the terminal cannot show; never die printing them.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    problem = _option_problem(args)
    if problem:
        return _no_report(args, problem, code=INVALID_ARGUMENT)
    options = dict(
        against=args.against,
        epochs=args.epochs,
        price_per_million=args.price_per_million,
        tokenizer=args.model,
        count_tokens=not args.no_tokens,
        max_tokens=args.max_tokens,
    )
    try:
        if args.file == "-":  # `export_tickets | ftlab validate -`
            report = validate_bytes(_standard_input(), name="<stdin>", **options)
        else:
            report = validate_file(args.file, **options)
    except (UnreadableFileError, MemoryError) as error:
        return _no_report(args, str(error) or "there is not enough memory to check the file")
    except (ModelNotFoundError, HomeError) as error:  # the tokenizer lives in FTLAB_HOME
        return _no_report(
            args,
            f"cannot count tokens: {error}\n(or add --no-tokens to check the file's structure "
            "only)",
            code=MODEL_NOT_FOUND,
        )
    status = 0 if report.valid else 1
    try:
        print(report.to_json(indent=2) if args.json else report.format_text(), flush=True)
    except BrokenPipeError:  # `ftlab validate big.jsonl | head`: the reader left early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status


def _standard_input() -> bytes:
    try:
        return sys.stdin.buffer.read()
    except (AttributeError, OSError, ValueError) as error:  # closed, or no stdin at all
        raise UnreadableFileError(f"cannot read standard input ({error})") from error


def _no_report(args: argparse.Namespace, message: str, code: str = UNREADABLE_FILE) -> int:
    """Exit status 2 (no report); with --json, also the one JSON object on stdout that scripts
    parse."""
    print(f"ftlab validate: {message}", file=sys.stderr)
    if args.json:
        error = {"line": None, "code": code, "message": message}
        result = {"valid": False, "errors": [error], "warnings": [], "stats": {}}
        print(json.dumps(result, indent=2), flush=True)
    return 2
