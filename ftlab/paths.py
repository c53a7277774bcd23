"""Where things live: the repository's data folder and the per-user cache (FTLAB_HOME)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


class HomeError(RuntimeError):
    """A folder ftlab needs (its cache folder, the runs folder) cannot be made or used."""


def home_path() -> Path:
    """Where `ftlab_home` is, without making it (for help texts)."""
    home = os.environ.get("FTLAB_HOME")
    return Path(home).expanduser() if home else Path(platformdirs.user_cache_dir("ftlab"))


def ftlab_home() -> Path:
    """The cache folder for converted models and local state (override with FTLAB_HOME)."""
    # Not checked for writing: a class shares one read-only FTLAB_HOME (the README's hub
    # set-up), with progress and runs elsewhere.
    default = Path(platformdirs.user_cache_dir("ftlab"))
    return made_folder(home_path(), "FTLAB_HOME", default, "ftlab's cache folder")


def made_folder(path: Path, variable: str, default: Path, what: str) -> Path:
    """`path`, made if missing, or a HomeError that names the setting and says how to fix it
    (an environment variable pointing at a file, a folder one may not create)."""
    setting = os.environ.get(variable)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        where = f"{variable}={setting}" if setting else f"{what} {path}"
        fix = f"set {variable} to a folder you may create and write in"
        if setting:
            fix = f"{fix}, or unset it to use {default}"
        reason = (
            f"{path} is a file, not a folder"
            if isinstance(error, FileExistsError) and path.is_file()
            else error.strerror or str(error)
        )
        raise HomeError(f"{where} cannot be used: {reason}.\nFix: {fix}.") from error
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
    default = REPO_ROOT / "runs"
    path = Path(override).expanduser() if override else default
    return made_folder(path, "FTLAB_RUNS", default, "the runs folder")


def cannot_write_in(folder: str | Path) -> str | None:
    """Why files could not be created in `folder` (made if missing), or None if they could.

    Checked before long work (an evaluation, a training run) so that it fails at once,
    not after minutes. Files are written beside their target and renamed over it, so it
    is the folder that must be writable, or, if it is missing, the nearest existing one.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK):
        return f"you may not write in {existing}"
    return None
