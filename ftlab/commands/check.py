"""`ftlab check`: is this machine ready for the course?"""

from __future__ import annotations

import argparse

from ftlab.check import passed, run_checks


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check Python, packages, the base model, the kernel and the browser",
        description="Check that this machine can run the course: Python, the pinned packages, "
        "the base model (it answers a prompt), the compute device, the Jupyter kernel and the "
        "browser the quiz test uses. Each line says OK, FAIL (with the fix) or SKIP.",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    results = run_checks(report=lambda result: print(result.line(), flush=True))
    failed = sum(r.status == "FAIL" for r in results)
    print(
        f"\n{len(results) - failed} of {len(results)} checks passed"
        + ("" if not failed else f", {failed} failed")
    )
    return 0 if passed(results) else 1
