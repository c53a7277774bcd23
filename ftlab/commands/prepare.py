"""`ftlab prepare`: convert the built-in base model into the cache (done by `make setup`)."""

from __future__ import annotations

import argparse

from ftlab.models import DEFAULT_MODEL, builtin_model_dir, cache_problem, prepare_base_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare", help=f"convert the built-in {DEFAULT_MODEL} model once (idempotent)"
    )
    parser.add_argument("--rebuild", action="store_true", help="convert again even if cached")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    problem = cache_problem(builtin_model_dir())
    if problem or args.rebuild:
        print(
            f"Preparing {DEFAULT_MODEL} ({'rebuild asked' if args.rebuild else problem}) ...",
            flush=True,
        )
    folder = prepare_base_model(rebuild=args.rebuild)
    print(f"{DEFAULT_MODEL} ready at {folder}")
    return 0
