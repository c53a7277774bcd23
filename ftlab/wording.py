"""Counting in messages: "1 example is", "1,059 examples are", never "example(s)"."""

from __future__ import annotations


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """`number` and `noun`, in the plural unless it is 1: counted(3, "example") is "3 examples"."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def is_are(number: int) -> str:
    """The verb that agrees with `number` things."""
    return "is" if number == 1 else "are"
