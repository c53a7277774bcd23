"""One module per `ftlab` subcommand (discovered automatically by `ftlab.cli`)."""

import argparse


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more, with a plain error otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value
