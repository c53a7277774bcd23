"""Shared fixtures: the repository root and the command-line entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def run_ftlab(
    *args: str, input: str | None = None, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run the real `ftlab` command line in a subprocess, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "ftlab.cli", *args],
        capture_output=True,
        text=True,
        input=input,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )
