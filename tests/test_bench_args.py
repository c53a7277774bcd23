"""The benchmark refuses a `--keep` folder it could not use before training anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_bench(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(repo / "bench" / "train_speed.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_keep_refuses_a_file_and_a_folder_with_contents(repo: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    refused = run_bench(repo, "--keep", str(a_file))
    assert refused.returncode == 2
    assert "that is a file; name a new or empty folder" in refused.stderr
    assert a_file.read_text() == "mine\n"

    full = tmp_path / "runs"
    full.mkdir()
    (full / "adapter").mkdir()
    refused = run_bench(repo, "--keep", str(full))
    assert refused.returncode == 2
    assert "the folder is not empty; name a new one" in refused.stderr
    assert [p.name for p in full.iterdir()] == ["adapter"]
