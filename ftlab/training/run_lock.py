"""One training run at a time in a run folder.

Two runs writing to one folder (a second terminal, or the training cell run again in
another notebook while the first still trains) would mix their checkpoints and metrics,
and the second one's clean-up after a crash (`remove_stale_staging`) would take the first
one's set-aside earlier run for a crash's leftover and put it back over the first one's
files. So a run holds an exclusive lock on its folder while it works. The lock is the
operating system's (`flock` on the folder itself): it leaves no file behind, and it is
released when the process ends, however it ends, so a crash never leaves a folder locked.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path


class RunFolderBusyError(ValueError):
    """Another training run is writing to the folder right now."""


def busy_message(out: Path) -> str:
    return (
        f"Another training run is writing to {out} right now (in another terminal, or in "
        "another notebook's kernel), and two runs in one folder would mix their files.\n"
        "Fix: wait for that run to finish, or stop it (Ctrl-C, or interrupt that kernel), or "
        "pass another output folder (--out, or out= in TrainConfig) to keep both."
    )


class RunFolderLock:
    """Held by one thread at a time; re-entrant in that thread (the command line holds it
    while it checks the folder, and `train` takes it again), unless `reentrant=False`: then
    refused while any thread of this process holds it (a crash's clean-up, which must never
    run beside a run, even one that this very thread is in the middle of)."""

    _held: dict[str, tuple[int, int, int]] = {}  # real path -> (fd, depth, thread id)
    _guard = threading.Lock()

    def __init__(self, out: str | Path, reentrant: bool = True) -> None:
        self.out = Path(out)
        self.reentrant = reentrant
        self._key: str | None = None  # the folder's real path while this object holds it

    def acquire(self) -> None:
        """Lock the folder (it must exist); RunFolderBusyError if another run holds it.
        Calling it again while this object holds the lock does nothing."""
        if self._key is not None:
            return
        key = os.path.realpath(self.out)
        with self._guard:
            held = self._held.get(key)
            if held is not None:
                fd, depth, owner = held
                if owner != threading.get_ident() or not self.reentrant:
                    raise RunFolderBusyError(busy_message(self.out))
                self._held[key] = (fd, depth + 1, owner)
            else:
                fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
                try:  # (a Ctrl-C in here must not leave the descriptor, and its lock, open)
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    self._held[key] = (fd, 1, threading.get_ident())
                except BlockingIOError:
                    os.close(fd)
                    raise RunFolderBusyError(busy_message(self.out)) from None
                except OSError:
                    # A file system without locks (some network and FUSE ones): train
                    # unguarded, as before the lock existed, rather than not at all.
                    self._held[key] = (fd, 1, threading.get_ident())
                except BaseException:
                    os.close(fd)
                    raise
            self._key = key

    def release(self) -> None:
        if self._key is None:
            return
        with self._guard:
            key, self._key = self._key, None
            fd, depth, owner = self._held[key]
            if depth > 1:
                self._held[key] = (fd, depth - 1, owner)
                return
            try:
                del self._held[key]
            finally:
                os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
