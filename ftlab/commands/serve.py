"""`ftlab serve`: the local OpenAI-compatible fine-tuning API."""

from __future__ import annotations

import argparse
import math
import sys

from ftlab.commands import positive_int
from ftlab.paths import home_path
from ftlab.server.defaults import DEFAULT_CHAT_BATCH, DEFAULT_MAX_UPLOAD_MB
from ftlab.server.serve import DataDirInUse


def port(text: str) -> int:
    """An argparse type: a TCP port, or 0 for any free one."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be a port from 1 to 65535 (or 0 for any free port), not {text}"
        )
    return value


def megabytes(text: str) -> float:
    """An argparse type: a positive, finite number of MB."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of MB, not {text}")
    return value


def named_adapter(text: str) -> tuple[str, str]:
    """An argparse type: NAME=FOLDER."""
    name, equals, folder = text.partition("=")
    if not equals or not name or not folder:
        raise argparse.ArgumentTypeError(
            f"must be NAME=FOLDER (a model name, then the adapter's folder), not {text!r}"
        )
    return name, folder


def _unique(adapters: list[tuple[str, str]]) -> dict[str, str]:
    """The --adapter options as a dict; a name given twice is an error, not the last one."""
    names = [name for name, _ in adapters]
    if twice := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(
            f"--adapter gives the model name {twice[0]!r} more than once. Fix: one name per "
            "adapter."
        )
    return dict(adapters)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the local OpenAI-compatible fine-tuning server",
        description="Serve the OpenAI files, fine-tuning, models and chat APIs on this machine.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument(
        "--port", type=port, default=8000, help="port (default 8000; 0 picks a free one)"
    )
    parser.add_argument(
        "--data-dir",
        help=f"where files, jobs and models live (default {home_path() / 'server'})",
    )
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument(
        "--keys",
        metavar="KEYS_FILE",
        help="workshop mode: a file of `name key` lines; each key sees only "
        "its own files, jobs and models (default: any key works; required with a --host "
        "that other machines can reach, unless --no-keys)",
    )
    keys.add_argument(
        "--no-keys",
        action="store_true",
        help="serve other machines without --keys on purpose: any key works and everyone "
        "sees, and can delete, everyone's files, jobs and models",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=megabytes,
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"largest accepted upload (default {DEFAULT_MAX_UPLOAD_MB})",
    )
    parser.add_argument(
        "--max-models",
        type=positive_int,
        default=3,
        help="models kept loaded in memory for chat, and decoding at once (default 3)",
    )
    parser.add_argument(
        "--parallel-jobs",
        type=positive_int,
        default=1,
        metavar="N",
        help="training jobs run side by side, sharing the cores (default 1; on a shared "
        "workshop server about one per 4 cores)",
    )
    parser.add_argument(
        "--chat-batch",
        type=positive_int,
        default=DEFAULT_CHAT_BATCH,
        metavar="ROWS",
        help=f"chat answers generated together when requests arrive at once (default "
        f"{DEFAULT_CHAT_BATCH}; 1 answers one request at a time)",
    )
    parser.add_argument(
        "--adapter",
        type=named_adapter,
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="also serve a LoRA adapter of the built-in model trained with `ftlab train` (its "
        "run folder or adapter folder) under the model name NAME, to every key; repeat for more",
    )
    parser.add_argument("--ready-file", help=argparse.SUPPRESS)
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ftlab.models import ModelNotFoundError
    from ftlab.server.auth import KeysFileError
    from ftlab.server.serve import serve

    if args.parent_pid:
        from ftlab.server.lifecycle import die_with_parent

        die_with_parent(args.parent_pid, at_once=False)  # any caller thread
    try:
        serve(
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            keys_file=args.keys,
            max_upload_mb=args.max_upload_mb,
            max_models=args.max_models,
            parallel_jobs=args.parallel_jobs,
            chat_batch=args.chat_batch,
            ready_file=args.ready_file,
            no_keys=args.no_keys,
            adapters=_unique(args.adapter),
        )
    except (KeysFileError, DataDirInUse, ModelNotFoundError, OSError, ValueError) as error:
        print(f"ftlab serve: {error}", file=sys.stderr)
        return 1
    return 0
