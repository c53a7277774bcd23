"""`ftlab room`: how a workshop is doing, one row per learner of the shared server."""

from __future__ import annotations

import argparse
import json
import sys

from ftlab.commands import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "room",
        help="an instructor's view of a workshop: each learner's files, jobs, models and quiz",
        description="For every learner in the keys file of a shared `ftlab serve`, ask the "
        "server (with that learner's key) for their uploads, fine-tuning jobs and models, and "
        "read their quiz scores where their progress files can be read from here.",
    )
    parser.add_argument(
        "--url", required=True, help="the server's base URL, as `ftlab serve` printed it (…/v1)"
    )
    parser.add_argument("--keys", required=True, metavar="KEYS_FILE", help="the server's keys file")
    parser.add_argument(
        "--progress",
        metavar="PATTERN",
        help="each learner's quiz record, with {name} for the learner: "
        "'/home/{name}/ftlab-progress.json' (the FTLAB_PROGRESS each learner was given)",
    )
    parser.add_argument(
        "--timeout", type=positive_int, default=30, help="seconds per request (default 30)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON list of rows")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ftlab.room import format_room, room_report
    from ftlab.server.auth import KeysFileError

    if args.progress and "{name}" not in args.progress:
        print(
            f"ftlab room: --progress {args.progress} has no {{name}}, so every learner would "
            "get the same file. Fix: write where a learner's file is with {name} for the "
            "learner, for example '/home/{name}/ftlab-progress.json'.",
            file=sys.stderr,
        )
        return 2
    from ftlab.course_server import api_base_url

    try:
        url = api_base_url(args.url, "--url")  # as learners' FTLAB_SERVER_URL is read
    except ValueError as error:
        print(f"ftlab room: {error} (the address `ftlab serve` printed)", file=sys.stderr)
        return 2
    try:
        rows = room_report(url, args.keys, args.progress, timeout=args.timeout)
    except (KeysFileError, ConnectionError) as error:
        print(f"ftlab room: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
    else:
        print(format_room(rows))
    return 0
