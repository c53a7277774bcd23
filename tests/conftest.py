"""Shared fixtures: the repository root, the command-line entry point, the tokenizer and a
tiny training file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


# Settings a learner's or instructor's shell may export, which would change what the tests
# check: quick mode (`make test` sets it for the notebooks only), a thread cap, a workshop's
# shared server (a test's job would go there) and another data folder. Tests of these
# settings set them themselves.
OUTSIDE_SETTINGS = (
    "FTLAB_QUICK",
    "FTLAB_THREADS",
    "FTLAB_SERVER_URL",
    "FTLAB_SERVER_KEY",
    "FTLAB_DATA",
)


@pytest.fixture(autouse=True)
def course_defaults(monkeypatch):
    """Every test starts from the course's own settings, whatever the shell exported."""
    for name in OUTSIDE_SETTINGS:
        monkeypatch.delenv(name, raising=False)


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


@pytest.fixture(scope="session")
def tokenizer():
    from ftlab.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture()
def data(tmp_path) -> str:
    """The twelve messages of training_helpers as a chat JSONL training file."""
    from training_helpers import MESSAGES

    from ftlab.jsonl import write_jsonl
    from ftlab.support import make_example

    return str(write_jsonl(tmp_path / "train.jsonl", [make_example(*m) for m in MESSAGES]))


@pytest.fixture
def valid(data, tmp_path) -> str:
    """The same messages in a file of their own, for a validation file in tiny runs (training
    refuses the training file itself as one)."""
    return str(shutil.copy(data, tmp_path / "valid.jsonl"))
