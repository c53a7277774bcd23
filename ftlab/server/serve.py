"""Run the server in this process (what `ftlab serve` and `python -m ftlab.server` do)."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from ftlab.files import write_text_atomically
from ftlab.paths import ftlab_home
from ftlab.server.defaults import DEFAULT_CHAT_BATCH, DEFAULT_MAX_UPLOAD_MB
from ftlab.wording import counted


class DataDirInUse(RuntimeError):
    """Another server already uses this data directory."""


class DataOfAnotherMode(ValueError):
    """A data folder of a class server (with --keys) started without keys."""


def check_owners(store, single_user: bool, data_dir: Path) -> None:
    """Refuse to start without keys on a class's data, which would seem lost; warn when keys
    hide what a single-user server left there.

    Each object belongs to a key's name, or to `local` without keys; a server shows a
    request only its own owner's objects.
    """
    from ftlab.server.auth import SINGLE_USER

    owners = store.owners()
    if single_user:
        learners = sorted(owner for owner in owners if owner != SINGLE_USER)
        if learners:
            shown = ", ".join(learners[:5]) + (" and more" if len(learners) > 5 else "")
            raise DataOfAnotherMode(
                f"The data folder {data_dir} holds the files, jobs and models of "
                f"{counted(len(learners), 'learner')} ({shown}), made on a server started with "
                "--keys. "
                "Without --keys the server would list none of them, and would accept any key.\n"
                "Fix: start it with the same keys file (--keys FILE), or give this server "
                "another --data-dir."
            )
    elif owners.get(SINGLE_USER):
        logging.getLogger("ftlab.server").warning(
            "the data folder %s also holds %s (files, jobs and models) made without --keys; "
            "no key sees them while the server runs with --keys (unless its name is %r)",
            data_dir,
            counted(owners[SINGLE_USER], "object"),
            SINGLE_USER,
        )


class SharedWithoutKeys(ValueError):
    """A server that other machines can reach would run without a keys file."""


def is_loopback(host: str) -> bool:
    """True when a server bound to `host` can only be reached from this machine."""
    try:
        return _loopback_address(host)
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return False  # binding will fail and say so
    return bool(addresses) and all(_loopback_address(a) for a in addresses)


def _loopback_address(text: str) -> bool:
    address = ipaddress.ip_address(text)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    return (mapped or address).is_loopback


def check_sharing(host: str, keys_file: str | Path | None, no_keys: bool) -> None:
    """Refuse to serve other machines without keys, unless `no_keys` says it is meant."""
    if keys_file or no_keys or is_loopback(host):
        return
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return  # no such host: binding fails next and names the host as the problem
    raise SharedWithoutKeys(
        f"--host {host} lets other machines reach this server, but no --keys file was given: "
        "every learner would share one space and could see, download and delete each "
        "other's files, jobs and models. Give each learner a key with --keys KEYS_FILE (a "
        "text file with one `name key` line per learner, each key long and random; "
        "see 'Running a workshop' in README.md), or serve this machine only with --host "
        "127.0.0.1. If one shared space is really what you want, add --no-keys."
    )


def default_data_dir() -> Path:
    return ftlab_home() / "server"


def _take_lock(lock) -> str | None:
    """Take the lock on an open lock file; if another server holds it, its pid (as text)."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        return lock.read().strip() or "unknown"
    return None


def data_dir_holder(data_dir: str | Path) -> str | None:
    """The pid (as text) of the server that holds `data_dir`'s lock now, or None if none does."""
    path = Path(data_dir) / "server.lock"
    if not path.is_file():
        return None
    with open(path, "a+") as lock:
        holder = _take_lock(lock)
        if holder is None:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return holder


def make_private(data_dir: Path) -> None:
    """Let only the server's own user into its data folder.

    It holds every learner's uploads, models and the database; on a shared machine (The
    Littlest JupyterHub gives each learner a Unix account) a folder others may enter would
    let any learner read everyone's files, whatever their API keys."""
    status = data_dir.stat()
    mode = status.st_mode & 0o777
    if not mode & 0o077:
        return
    log = logging.getLogger("ftlab.server")
    if status.st_uid != os.geteuid():
        log.warning(
            "The data folder %s (mode %o) belongs to another user, so this server cannot make "
            "it private: other users of this machine may read the learners' files. Fix: give "
            "the server a folder of its own with --data-dir.",
            data_dir,
            mode,
        )
        return
    data_dir.chmod(0o700)
    log.info("data folder %s made private (mode 700, was %o)", data_dir, mode)


@contextlib.contextmanager
def exclusive(data_dir: Path):
    """Hold a lock on the data directory: two servers writing one database would corrupt jobs."""
    if data_dir.exists() and not data_dir.is_dir():
        raise ValueError(
            f"--data-dir {data_dir} is a file. Fix: pass a folder (new or the server's)."
        )
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        lock_file = open(data_dir / "server.lock", "a+")  # noqa: SIM115 - closed below
    except PermissionError as error:
        raise ValueError(
            f"This user may not write in the data folder {data_dir} ({error.strerror}: "
            f"{error.filename}).\nFix: give the server a folder of its own, for example "
            f"`sudo install -d -o USER -m 700 {data_dir}` where USER runs the server, or pass "
            "another --data-dir.",
        ) from error
    with lock_file as lock:
        make_private(data_dir)
        holder = _take_lock(lock)
        if holder is not None:
            raise DataDirInUse(
                f"Another ftlab server (pid {holder}) is using {data_dir}. Stop it, or start "
                "this one with another --data-dir."
            )
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except socket.gaierror as error:  # the name does not resolve: the host is the problem
        sock.close()
        raise OSError(
            f"Cannot listen on {host}:{port}: no address for {host!r} ({error.strerror}). Fix: "
            "pass an address of this machine as --host (127.0.0.1 for this machine only, "
            "0.0.0.0 for every network)."
        ) from error
    except OSError as error:
        sock.close()
        raise OSError(
            f"Cannot listen on {host}:{port}: {error.strerror}. Pick another --port "
            "(0 picks a free one)."
        ) from error
    sock.listen(2048)  # connections queue from now on, even before uvicorn accepts them
    return sock


def _uvicorn_server(config, on_exit: Callable[[], None]):
    """uvicorn's server, calling `on_exit()` when Ctrl-C (or SIGTERM) asks it to stop."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            on_exit()
            super().handle_exit(sig, frame)

    return Server(config)


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: str | Path | None = None,
    keys_file: str | Path | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_models: int = 3,
    parallel_jobs: int = 1,
    chat_batch: int = DEFAULT_CHAT_BATCH,
    ready_file: str | Path | None = None,
    no_keys: bool = False,
    adapters: dict[str, str | Path] | None = None,
) -> None:
    """Serve until interrupted. Prints the base URL once it accepts connections.

    `adapters` maps model names to LoRA adapters of the built-in model trained elsewhere
    (`ftlab train`), served to every key beside the base model and the fine-tuned ones.
    Raises SharedWithoutKeys for a `host` other machines can reach without a `keys_file`,
    unless `no_keys` is true, and ValueError for an adapter that cannot be served."""
    import uvicorn

    from ftlab.models import available_cores, prepare_base_model, thread_override
    from ftlab.server.app import create_app
    from ftlab.server.auth import Authenticator
    from ftlab.server.inference import Inference, served_adapters
    from ftlab.server.lifecycle import serving_threads
    from ftlab.server.store import Store
    from ftlab.server.worker import Worker

    check_sharing(host, keys_file, no_keys)
    # The base model is read now: one this user may not read (a class's shared FTLAB_HOME)
    # fails the start with its fix, not every learner's first chat and job.
    prepare_base_model()
    served = served_adapters(adapters or {})
    os.umask(0o077)  # what the server and its training processes write is theirs alone
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    thread_override()  # a bad FTLAB_THREADS is refused now, not when the first job starts
    serving_threads()
    auth = Authenticator.from_file(keys_file) if keys_file else Authenticator()
    with exclusive(data_dir):
        store = Store(data_dir)
        try:
            check_owners(store, auth.keys is None, data_dir)
        except DataOfAnotherMode:
            store.close()
            raise
        sock = _bind(host, port)
        shown_host = f"[{host}]" if ":" in host else host
        base_url = f"http://{shown_host}:{sock.getsockname()[1]}/v1"

        def ready() -> None:
            mode = counted(len(auth.keys), "API key") if auth.keys else "single user, any API key"
            print(f"ftlab server ready at {base_url} (data in {data_dir}; {mode})", flush=True)
            if ready_file:
                write_text_atomically(
                    ready_file, json.dumps({"base_url": base_url, "pid": os.getpid()})
                )

        if parallel_jobs > (cores := available_cores()):
            logging.getLogger("ftlab.server").warning(
                "--parallel-jobs %d is more than this machine's %d cores: jobs side by side "
                "would share cores and slow each other down. Fix: about one job per 4 cores.",
                parallel_jobs,
                cores,
            )
        worker = Worker(store, parallel_jobs=parallel_jobs)
        inference = Inference(
            store, max_models=max_models, max_batch_rows=chat_batch, adapters=served
        )
        app = create_app(
            store,
            auth=auth,
            worker=worker,
            inference=inference,
            max_upload_mb=max_upload_mb,
            on_ready=ready,
        )
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)

        def stopping() -> None:  # at the signal, before uvicorn waits for open requests
            worker.stopping()
            inference.stop()

        try:
            _uvicorn_server(config, on_exit=stopping).run(sockets=[sock])
        finally:
            # The app's shutdown stops the worker, but a second Ctrl+C makes uvicorn skip it:
            # the worker must not poll a closed database (stopping twice is harmless).
            worker.shutdown()
            store.close()
