"""Self-check cells for the labs: a clear verdict, and an error the learner cannot miss.

A self-check that fails raises `LabCheckFailed`, so "Run all" stops at the first
thing to fix, and the test-suite can tell a solved lab from an untouched one.
"""

from __future__ import annotations


class LabCheckFailed(AssertionError):
    """A lab's self-check found something to fix (the message says what)."""


def self_check(condition: object, passed: str, failed: str) -> None:
    """Print `passed` with a tick when `condition` holds; otherwise raise with `failed`."""
    if not condition:
        raise LabCheckFailed(f"✗ {failed}")
    print(f"✓ {passed}")
