"""Start the server in the background from a notebook, and stop it.

    from ftlab.server import start_server
    server = start_server()            # waits until it answers
    client = OpenAI(base_url=server.base_url, api_key="local")
    ...
    server.stop()

The server runs in its own process (`python -m ftlab.server`), so training never
freezes the notebook and a crash cannot take the kernel down; it exits by itself
if the notebook's kernel dies. Its output goes to `server.log` in the data folder.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ftlab.server.serve import default_data_dir

_running: list[ServerHandle] = []


@dataclass
class ServerHandle:
    """A server started by `start_server`: its `base_url` (ends in /v1) and how to stop it."""

    base_url: str
    process: subprocess.Popen = field(repr=False)
    data_dir: Path
    log_path: Path

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Stop gracefully (a running job resumes at the next start); kill if it hangs."""
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self in _running:
            _running.remove(self)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def start_server(
    data_dir: str | Path | None = None,
    port: int = 0,
    keys: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    max_upload_mb: float | None = None,
    parallel_jobs: int = 1,
    chat_batch: int | None = None,
    adapters: Mapping[str, str | Path] | None = None,
    timeout: float = 120.0,
) -> ServerHandle:
    """Start `ftlab serve` in a background process and return once it answers.

    `port=0` picks a free port; `keys` is a keys file for workshop mode (see
    `ftlab.server.auth`); `parallel_jobs` training jobs run side by side; up to
    `chat_batch` chat answers are generated together (default 16); `adapters` maps model
    names to adapters trained with `ftlab train` (`ftlab serve --adapter`). Raises
    RuntimeError with the end of the server's log if it does not come up.
    """
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    ready = Path(tempfile.mkdtemp(prefix="ftlab-server-")) / "ready.json"
    command = [
        sys.executable,
        "-m",
        "ftlab.server",
        "--host",
        host,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--ready-file",
        str(ready),
        "--parent-pid",
        str(os.getpid()),
    ]
    if keys:
        command += ["--keys", str(keys)]
    if max_upload_mb is not None:
        command += ["--max-upload-mb", str(max_upload_mb)]
    if parallel_jobs != 1:
        command += ["--parallel-jobs", str(parallel_jobs)]
    if chat_batch is not None:
        command += ["--chat-batch", str(chat_batch)]
    for name, folder in (adapters or {}).items():
        command += ["--adapter", f"{name}={Path(folder).resolve()}"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None:
            raise RuntimeError(
                f"The ftlab server exited with code {process.returncode}. "
                f"End of {log_path}:\n{_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(
                f"The ftlab server did not start within {timeout:.0f} s. "
                f"End of {log_path}:\n{_tail(log_path)}"
            )
        time.sleep(0.1)
    base_url = json.loads(ready.read_text())["base_url"]
    ready.unlink()
    ready.parent.rmdir()
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/health", timeout=timeout):
        pass
    handle = ServerHandle(base_url, process, data_dir, log_path)
    _running.append(handle)
    return handle


def running_server(data_dir: str | Path) -> ServerHandle | None:
    """The server this process started on `data_dir` and has not stopped, if any.

    Only one server may use a data folder (it holds a lock), so a notebook cell that is
    run twice should reuse its server rather than start a second one.
    """
    wanted = Path(data_dir).resolve()
    for handle in _running:
        if handle.running and handle.data_dir.resolve() == wanted:
            return handle
    return None


def stop_server(server: ServerHandle | None = None) -> None:
    """Stop `server`, or every server this process started."""
    for handle in [server] if server else list(_running):
        handle.stop()


atexit.register(stop_server)
