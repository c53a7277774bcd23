"""Self-check cells for the labs: a clear verdict, and an error the learner cannot miss.

A self-check that fails raises `LabCheckFailed`, so "Run all" stops at the first
thing to fix, and the test-suite can tell a solved lab from an untouched one.
In Jupyter the failure shows as its ✗ lines only, without a traceback: the
learner needs to know what to fix in their cell, not where in this module the
check was raised.

The rules each lab applies to a learner's work live in `data_lab` (lab 1),
`sweep_lab` (lab 2) and `voice_lab` (lab 3), each returning plain-English problems
that say what is wrong, where, and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable

RED, RESET = "\x1b[31m", "\x1b[0m"


class LabCheckFailed(AssertionError):
    """A lab's self-check found something to fix (the message says what)."""

    def _render_traceback_(self) -> list[str]:
        # IPython (and so Jupyter) shows these lines instead of the traceback; the cell still
        # ends in an error named LabCheckFailed, so "Run all" stops and nbval sees a failure.
        return [f"{RED}{line}{RESET}" for line in str(self).splitlines()]


def self_check(condition: object, passed: str, failed: str) -> None:
    """Print `passed` with a tick when `condition` holds; otherwise raise with `failed`."""
    if not condition:
        raise LabCheckFailed(f"✗ {failed}")
    print(f"✓ {passed}")


def self_check_all(problems: Iterable[str], passed: str, shown: int = 12) -> None:
    """Print `passed` with a tick when there are no `problems`; otherwise raise, one ✗ each.

    Only the first `shown` problems are listed, and how many more there are: a learner fixes a
    few and runs the check again.
    """
    problems = list(problems)
    if problems:
        lines = [f"✗ {problem}" for problem in problems[:shown]]
        if len(problems) > shown:
            lines.append(f"… and {len(problems) - shown} more like these.")
        raise LabCheckFailed("\n".join(lines))
    print(f"✓ {passed}")


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`1 reply`, `2 replies`: the count with the word in the right number."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count} {word}"


def short(text: object, limit: int = 60) -> str:
    text = str(text)
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
