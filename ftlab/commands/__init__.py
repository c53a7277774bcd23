"""One module per `ftlab` subcommand (discovered automatically by `ftlab.cli`)."""

import argparse


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, not {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more, with a plain error otherwise."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of 0 or more, with a plain error otherwise."""
    return _whole_number(text, 0)


def positive_number(text: str) -> float:
    """An argparse type: a finite number above 0 (a learning rate, LoRA's alpha)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value
