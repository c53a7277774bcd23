"""Which server notebooks talk to: a private one, or a workshop's shared one (FTLAB_SERVER_URL)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest
from openai import OpenAI
from server_helpers import BASE, start

from ftlab.course import api_model_server
from ftlab.course_server import check_shared_server, course_server, shared_server_url
from ftlab.server.launcher import running_server
from ftlab.server.serve import DataDirInUse, exclusive


@pytest.fixture
def no_shared_server(monkeypatch):
    monkeypatch.delenv("FTLAB_SERVER_URL", raising=False)
    monkeypatch.delenv("FTLAB_SERVER_KEY", raising=False)


@pytest.fixture
def shared(tmp_path):
    """A workshop server with two learners' keys, as `ftlab serve --keys` runs it."""
    keys = tmp_path / "keys.txt"
    keys.write_text("ana sk-ana\nben sk-ben\n")
    with start(tmp_path / "shared", keys=keys) as server:
        yield server


def test_without_a_shared_server_a_private_one_is_started_and_stopped(tmp_path, no_shared_server):
    server = course_server(tmp_path / "private")
    try:
        assert not server.shared
        assert server.data_dir == tmp_path / "private"
        client = OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
        assert BASE in [m.id for m in client.models.list()]
        again = course_server(tmp_path / "private")  # the set-up cell run a second time
        assert again.local is server.local
    finally:
        said = server.stop()
    assert not server.local.running
    assert str(tmp_path / "private") in said
    restarted = course_server(tmp_path / "private")  # after a stop, a new one starts
    assert restarted.local is not server.local and restarted.local.running
    restarted.stop()


@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "", "/"])
def test_a_shared_server_is_used_with_the_learners_key(tmp_path, monkeypatch, shared, suffix):
    root = shared.base_url.removesuffix("/v1")
    monkeypatch.setenv("FTLAB_SERVER_URL", root + suffix)
    monkeypatch.setenv("FTLAB_SERVER_KEY", "sk-ben")
    server = course_server(tmp_path / "never-used")
    assert server.shared and server.base_url == shared.base_url and server.api_key == "sk-ben"
    client = OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    client.files.create(file=("mine.jsonl", b"{}\n"), purpose="fine-tune")
    assert "keeps running" in server.stop()
    assert shared.running  # a learner's notebook never stops the class's server
    assert not (tmp_path / "never-used").exists()
    other = OpenAI(base_url=shared.base_url, api_key="sk-ana", max_retries=0)
    assert other.files.list().data == []  # each key sees only its own files


def test_a_wrong_key_or_address_is_named_before_any_work(tmp_path, monkeypatch, shared):
    monkeypatch.setenv("FTLAB_SERVER_URL", shared.base_url)
    monkeypatch.setenv("FTLAB_SERVER_KEY", "sk-wrong")
    with pytest.raises(RuntimeError, match="refused the key in FTLAB_SERVER_KEY"):
        course_server(tmp_path)

    monkeypatch.delenv("FTLAB_SERVER_KEY")
    with pytest.raises(RuntimeError, match="FTLAB_SERVER_KEY is not"):
        course_server(tmp_path)

    monkeypatch.setenv("FTLAB_SERVER_KEY", "sk-ana")
    monkeypatch.setenv("FTLAB_SERVER_URL", "http://127.0.0.1:9/v1")  # nothing listens on port 9
    with pytest.raises(RuntimeError, match="No server answered at http://127.0.0.1:9/v1"):
        course_server(tmp_path)

    monkeypatch.setenv("FTLAB_SERVER_URL", "10.0.0.5:8000")
    with pytest.raises(RuntimeError, match="not a web address"):
        shared_server_url()
    monkeypatch.setenv("FTLAB_SERVER_URL", "http://10.0.0.5:80o0/v1")  # a typo in the port
    with pytest.raises(RuntimeError, match="not a web address"):
        shared_server_url()
    monkeypatch.setenv("FTLAB_SERVER_URL", "http://10.0.0.5:8000/")
    assert shared_server_url() == "http://10.0.0.5:8000/v1"


def test_an_address_where_something_else_answers_is_no_server(monkeypatch):
    """Not HTTP at all (an SSH port, say): a plain error, not http.client's traceback."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()

    def banner() -> None:
        connection, _ = listening.accept()
        connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
        connection.close()

    threading.Thread(target=banner, daemon=True).start()
    url = f"http://127.0.0.1:{listening.getsockname()[1]}/v1"
    try:
        with pytest.raises(RuntimeError, match=f"No server answered at {url}"):
            check_shared_server(url, "sk-ana")
    finally:
        listening.close()


def test_notebook_05_finds_the_model_where_notebook_04_trained_it(monkeypatch, no_shared_server):
    on_openai = {"fine_tuned_model": "ft:gpt-4.1-nano:acme", "server_data_dir": None}
    assert api_model_server(on_openai) is None
    record = {
        "fine_tuned_model": "ft:smollm2-135m-instruct:local:support:abc123",
        "server_data_dir": "04_server",
        "server_url": "http://10.0.0.5:8000/v1",
    }
    with pytest.raises(RuntimeError, match="on the shared server at http://10.0.0.5:8000/v1"):
        api_model_server(record)  # trained on the class's server, which is not set now


def test_a_folder_another_kernels_server_holds_gets_a_fix(tmp_path, no_shared_server):
    folder = tmp_path / "04_server"
    folder.mkdir()
    holder = subprocess.Popen(  # stands for notebook 04's kernel, still running its server
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"lock = open({str(folder / 'server.lock')!r}, 'a+')\n"
            "fcntl.flock(lock, fcntl.LOCK_EX)\n"
            "lock.write(str(os.getpid())); lock.flush(); print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=f"pid {holder.pid}.*'Stop the server' cell"):
            course_server(folder)
        with pytest.raises(DataDirInUse, match=f"pid {holder.pid}"), exclusive(folder):
            pass  # the server itself refuses the folder too
    finally:
        holder.kill()
        holder.wait()
    server = course_server(folder)  # once that kernel is gone, the folder is free again
    server.stop()


def test_a_model_the_server_no_longer_has_is_named(tmp_path, monkeypatch, no_shared_server):
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path))
    record = {
        "fine_tuned_model": "ft:smollm2-135m-instruct:local:support:gone",
        "server_data_dir": "04_server",
    }
    with pytest.raises(RuntimeError, match="no longer has ft:smollm2.*Fix: delete"):
        api_model_server(record)
    assert running_server(tmp_path / "04_server") is None  # the server it started is stopped
