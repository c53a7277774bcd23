"""Writing a file all or nothing, so that a crash never leaves half of one; telling whether two
paths name one file; deleting a file or a folder alike; opening a folder to every reader."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path


def same_file(path: object, other: object) -> bool:
    """True if `path` and `other` are paths of one existing file (however spelled); False when
    either is missing or is not a path (examples in memory, say)."""
    if not isinstance(path, str | os.PathLike) or not isinstance(other, str | os.PathLike):
        return False
    try:
        return os.path.samefile(path, other)
    except OSError:
        return False


def readable_by_all(folder: Path) -> None:
    """Let every user read `folder` and everything in it (folders 755, files 644): for files
    that are no one's secret, such as a converted public model on a class's shared machine,
    which temporary folders (700) and a private umask would otherwise keep to their owner."""
    folder.chmod(0o755)
    for item in folder.rglob("*"):
        if not item.is_symlink():
            item.chmod(0o755 if item.is_dir() else 0o644)


def unreadable_part(folder: Path) -> Path | None:
    """The first of `folder`'s parents, `folder` and the items in it that this user cannot
    read (or, for a folder, enter), or None; None too when `folder` does not exist."""
    for parent in reversed(folder.absolute().parents):  # from the root down
        if not os.access(parent, os.F_OK):  # (its own parent could be entered)
            return None
        if not os.access(parent, os.X_OK):
            return parent
    try:
        if not folder.exists():
            return None
        items = [folder, *folder.iterdir()]
    except PermissionError as error:
        return Path(error.filename) if error.filename else folder
    for item in items:
        if not os.access(item, os.R_OK | (os.X_OK if item.is_dir() else 0)):
            return item
    return None


def remove_path(path: Path, ignore_errors: bool = False) -> None:
    """Delete a file, or a folder with everything in it (a link, not what it points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=ignore_errors)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            if not ignore_errors:
                raise


def fsync_folder(folder: str | Path) -> None:
    """Make a rename into `folder` survive a power cut (POSIX); skipped where unsupported
    (some network and FUSE file systems refuse to sync a folder)."""
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def fsync_tree(folder: str | Path, up_to: str | Path | None = None) -> None:
    """Flush every file under `folder`, then the folders themselves, to disk, and the
    folders above it up to `up_to` (which may have been made new for it too).

    For folders that a database row will point to (a fine-tuned model, a checkpoint): after a
    power cut the row must not find empty or missing files."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*"), reverse=True):  # files before their folders
        if path.is_file():
            with contextlib.suppress(OSError), open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            fsync_folder(path)
    fsync_folder(folder)
    for parent in folder.parents:  # the folder's own entry, then any new folders above it
        fsync_folder(parent)
        if up_to is None or parent == Path(up_to) or not folder.is_relative_to(up_to):
            break


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8, `\\n` line ends) to `path`, creating the folder if needed.

    The text goes to a hidden file beside `path` that is then renamed over it: a
    reader, or a crash, sees the old file or the new one, never half of either. Each
    writer has a file of its own, so two notebooks writing `path` at once never write
    into, or delete, each other's (the last rename wins, whole).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    # O_EXCL: this writer's own file. Mode 666 less the umask, as a plain write would give
    # (mkstemp would make it 600, and reading the umask means setting it, which races).
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path
