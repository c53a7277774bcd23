"""Child processes that die with their parent, so a killed server leaves no orphans."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, poll_seconds: float = 1.0, at_once: bool = True) -> None:
    """Exit as soon as `parent_pid` is gone.

    With `at_once` on Linux the kernel sends SIGKILL the moment the parent dies (prctl
    PDEATHSIG). Note that it fires when the parent *thread* that started this process
    ends, so only use it when that thread lives as long as the parent. A daemon thread
    also checks the parent id every `poll_seconds` on every system.
    """
    if at_once and sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serving_threads() -> int:
    """Torch threads for chat: half the cores, leaving the rest to a training job.

    Two processes that each use every core slow each other down many times over
    (PyTorch's threads spin-wait; measured here: 8 tokens took 2.5 s on 1 thread
    but 12-22 s on 2 threads while the CPU was busy). Training picks its own count.
    """
    import torch

    from ftlab.models import available_cores

    threads = max(1, available_cores() // 2)
    torch.set_num_threads(threads)
    return threads
