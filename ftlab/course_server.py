"""The fine-tuning server a notebook talks to: its own private one, or a workshop's shared one.

By default notebooks 04 and 05 and lab 3 each start a private server in the background
(`start_server`), with its data in a folder under `runs/`. In a workshop with one shared
server (`ftlab serve --keys keys.txt`), the instructor gives every learner the server's address
and a key of their own. Set them before starting Jupyter (or in a cell, with `%env`):

    export FTLAB_SERVER_URL=http://10.0.0.5:8000/v1
    export FTLAB_SERVER_KEY=the-key-from-keys.txt

and the same notebooks, unchanged, upload, train and chat on the shared server instead.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ftlab.server.launcher import ServerHandle, running_server, start_server
from ftlab.server.serve import data_dir_holder

SERVER_URL_VARIABLE = "FTLAB_SERVER_URL"
SERVER_KEY_VARIABLE = "FTLAB_SERVER_KEY"
# Any key works on a private server: it serves one user and has no keys file.
PRIVATE_KEY = "course-key"


@dataclass
class CourseServer:
    """Where to send the SDK's requests (`base_url`, `api_key`), and the private server, if any."""

    base_url: str
    api_key: str
    local: ServerHandle | None = None

    @property
    def shared(self) -> bool:
        """True for the workshop's shared server, which this notebook neither started nor stops."""
        return self.local is None

    @property
    def data_dir(self) -> Path | None:
        """The private server's data folder (None for a shared server: it is on another machine)."""
        return None if self.local is None else self.local.data_dir

    @property
    def log_hint(self) -> str:
        """Where this server's log is, for an error message."""
        if self.local is None:
            return "Ask your instructor to look at the shared server's log."
        return f"See {self.local.log_path} for the server's log."

    def stop(self) -> str:
        """Stop a private server (its data stays in its folder); leave a shared one running."""
        if self.local is None:
            return f"The shared server at {self.base_url} keeps running for the class."
        self.local.stop()
        return f"Server stopped; its files, jobs and models stay in {self.local.data_dir}."

    def __enter__(self) -> CourseServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def api_base_url(raw: str, named: str) -> str:
    """`raw` as an OpenAI-compatible API's base address, with `/v1` at the end (added when
    missing), or a ValueError that calls it `named` when it is no web address (no http://,
    no host, a port that is not a number)."""
    url = raw.strip().rstrip("/")
    try:
        parts = urllib.parse.urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - reading it checks it: ValueError for "8o00"
    except ValueError:
        usable = False
    if not usable:
        raise ValueError(
            f"{named} is {raw!r}, which is not a web address such as http://10.0.0.5:8000/v1"
        )
    return url if url.endswith("/v1") else url + "/v1"


def shared_server_url() -> str | None:
    """FTLAB_SERVER_URL with `/v1` at the end (added when missing), or None when it is unset."""
    raw = os.environ.get(SERVER_URL_VARIABLE, "").strip()
    if not raw:
        return None
    try:
        return api_base_url(raw, SERVER_URL_VARIABLE)
    except ValueError as error:
        raise RuntimeError(
            f"{error}. Set it to the address your instructor gave you, or unset it to start a "
            "private server on this machine."
        ) from None


def course_server(data_dir: str | Path) -> CourseServer:
    """The shared server when FTLAB_SERVER_URL is set (checked to answer and to accept
    FTLAB_SERVER_KEY), otherwise a private server started on `data_dir` (a free port).
    """
    url = shared_server_url()
    if url is None:
        return private_server(data_dir)
    key = os.environ.get(SERVER_KEY_VARIABLE, "").strip()
    if not key:
        raise RuntimeError(
            f"{SERVER_URL_VARIABLE} is set ({url}) but {SERVER_KEY_VARIABLE} is not. Set "
            f"{SERVER_KEY_VARIABLE} to the key your instructor gave you, or unset "
            f"{SERVER_URL_VARIABLE} to start a private server on this machine."
        )
    check_shared_server(url, key)
    return CourseServer(url, key)


def private_server(data_dir: str | Path) -> CourseServer:
    """A server of this notebook's own on `data_dir`: the one this process already runs there
    (a set-up cell run twice), or a new one on a free port."""
    server = running_server(data_dir)
    if server is None:
        holder = data_dir_holder(data_dir)
        if holder is not None:  # another kernel's server: a second one would be refused
            raise RuntimeError(
                f"Another process (pid {holder}) already runs a server on {data_dir}, most "
                "likely the kernel of an earlier notebook that is still open. Fix: run that "
                "notebook's 'Stop the server' cell, or shut its kernel down (Kernel > Shut Down "
                "Kernel), then run this cell again. Its files, jobs and models stay in the folder."
            )
        server = start_server(data_dir=data_dir, port=0)
    return CourseServer(server.base_url, PRIVATE_KEY, server)


def check_shared_server(url: str, key: str, timeout: float = 10.0) -> None:
    """Ask the shared server for its models, so a wrong address or key fails here, clearly."""
    request = urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        if error.code == 401:
            raise RuntimeError(
                f"The shared server at {url} refused the key in {SERVER_KEY_VARIABLE}. Check "
                "it against the one your instructor gave you (the key only, without your name)."
            ) from None
        raise RuntimeError(
            f"The shared server at {url} answered {error.code} {error.reason} to GET /models: "
            f"check {SERVER_URL_VARIABLE} with your instructor."
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        # HTTPException: something answered there, but not in HTTP (an SSH port, say)
        reason = getattr(error, "reason", error)
        raise RuntimeError(
            f"No server answered at {url} ({reason}). Check {SERVER_URL_VARIABLE} with your "
            "instructor (an address such as http://10.0.0.5:8000/v1), or unset it to start a "
            "private server on this machine."
        ) from None
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("object") != "list":
        raise RuntimeError(
            f"{url} answered GET /models, but not like an OpenAI-compatible server: check "
            f"{SERVER_URL_VARIABLE} (it should end in /v1)."
        )
