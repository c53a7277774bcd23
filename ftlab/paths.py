"""Where things live: the repository's data folder and the per-user cache (FTLAB_HOME)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def ftlab_home() -> Path:
    """The cache folder for converted models and local state (override with FTLAB_HOME)."""
    home = os.environ.get("FTLAB_HOME")
    path = Path(home).expanduser() if home else Path(platformdirs.user_cache_dir("ftlab"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """The course's `data/` folder (FTLAB_DATA overrides it, e.g. for a JupyterHub install)."""
    override = os.environ.get("FTLAB_DATA")
    return Path(override).expanduser() if override else REPO_ROOT / "data"


def support_split(name: str) -> Path:
    """Path of a support-task split: 'train', 'valid' or 'test'."""
    return data_dir() / "support" / f"{name}.jsonl"


def runs_dir() -> Path:
    """Where notebooks and labs write training runs (`runs/` in the repo; FTLAB_RUNS overrides).

    Notebooks share it: notebook 05 reuses the adapter that notebook 03 trained, when present.
    """
    override = os.environ.get("FTLAB_RUNS")
    path = Path(override).expanduser() if override else REPO_ROOT / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cannot_write(path: str | Path) -> str | None:
    """Why a file or folder could not be written at `path`, or None if it could.

    Checked before long work (an evaluation, a training run) so that it fails at once,
    not after minutes: the nearest existing folder on the way must be writable.
    """
    path = Path(path)
    if path.exists():
        if not os.access(path, os.W_OK):
            return "you may not write there"
        return None
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a folder"
    if not os.access(parent, os.W_OK):
        return f"you may not write in {parent}"
    return None
