"""API keys for workshops, and the `ftlab serve` command line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import httpx
import openai
import pytest
from server_helpers import client, start, tiny_examples, upload

from ftlab import cli
from ftlab.server.auth import Authenticator, KeysFileError, key_warnings, load_keys
from ftlab.server.errors import APIError
from ftlab.server.serve import is_loopback


def test_keys_file_is_read_with_comments(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("# workshop\nana  sk-a   # first row\n\nben sk-b\n")
    assert load_keys(path) == {"sk-a": "ana", "sk-b": "ben"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ana\n", "line 1: expected `name key`"),
        ("ana sk-a\nb:n sk-b\n", "line 2: the name 'b:n'"),
        ("ana sk-a\nben sk-a\n", "line 2: this key is already given to 'ana'"),
        ("ana sk-a\nana sk-b\n", "line 2: the name 'ana' appears twice"),
        ("# nothing\n", "has no keys"),
    ],
)
def test_bad_keys_files_say_what_and_where(tmp_path, text, problem):
    path = tmp_path / "keys.txt"
    path.write_text(text)
    with pytest.raises(KeysFileError, match=problem.replace("(", r"\(")):
        load_keys(path)


def test_a_keys_file_that_cannot_be_read_says_why_in_words(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("jos\xe9 sk-a\n".encode("latin-1"))
    for name, why in [
        ("missing.txt", "there is no such file"),
        (".", "it is a folder"),
        ("latin1.txt", "it is not UTF-8 text"),
    ]:
        with pytest.raises(KeysFileError, match=f": {why}.\nFix: pass a text file") as caught:
            load_keys(tmp_path / name)
        assert "Errno" not in str(caught.value)


def test_keys_readable_by_others_or_short_enough_to_guess_are_warned_about(tmp_path):
    keys = tmp_path / "keys.txt"
    strong = "sk-" + "x" * 30
    keys.write_text(f"ana sk-ana\nben {strong}\n")
    keys.chmod(0o644)
    readable, short = key_warnings(keys, load_keys(keys))
    assert "can be read or changed by other users" in readable and f"chmod 600 {keys}" in readable
    assert "1 key(s)" in short and "(ana)" in short and "secrets.token_urlsafe" in short
    keys.write_text(f"ben {strong}\n")
    keys.chmod(0o600)
    assert key_warnings(keys, load_keys(keys)) == []


def rewrite(path, text: str) -> None:
    """Change a file so that its modification time differs even on coarse clocks."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


def test_keys_file_changes_apply_without_a_restart(tmp_path, caplog):
    path = tmp_path / "keys.txt"
    path.write_text("ana sk-a\n")
    auth = Authenticator.from_file(path)
    assert auth.owner("Bearer sk-a") == "ana"

    rewrite(path, "ana sk-a\ncleo sk-c\n")  # a learner joins
    assert auth.owner("Bearer sk-c") == "cleo"

    rewrite(path, "ana sk-a\ncleo\n")  # a typo: the keys in force stay
    with caplog.at_level(logging.WARNING, logger="ftlab.server"):
        assert auth.owner("Bearer sk-c") == "cleo"
    assert "line 2: expected `name key`" in caplog.text and "2 keys read before" in caplog.text

    rewrite(path, "cleo sk-c\n")  # fixed, and ana's key withdrawn
    assert auth.owner("Bearer sk-c") == "cleo"
    with pytest.raises(APIError) as refused:
        auth.owner("Bearer sk-a")
    assert refused.value.status == 401

    rewrite(path, "cleo sk-c2\nana sk-a\n")  # cleo's key leaked: a new one; ana is back
    with caplog.at_level(logging.INFO, logger="ftlab.server"):
        assert auth.owner("Bearer sk-c2") == "cleo"
    assert "(added: ana; removed: none; new key: cleo)" in caplog.text


def test_workshop_keys_isolate_files(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("ana sk-ana\nben sk-ben\n")
    with start(tmp_path / "data", keys=keys) as server:
        ana, ben = client(server, "sk-ana"), client(server, "sk-ben")
        with pytest.raises(openai.AuthenticationError) as caught:
            client(server, "sk-nobody").files.list()
        assert caught.value.body["code"] == "invalid_api_key"
        no_key = httpx.get(server.base_url + "/files")
        assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "missing_api_key"

        mine = upload(ana, tiny_examples(3))  # too few to train: its job fails at once
        assert [f.id for f in ana.files.list()] == [mine]
        assert list(ben.files.list()) == []
        for call in (ben.files.retrieve, ben.files.content, ben.files.delete):
            with pytest.raises(openai.NotFoundError):
                call(mine)
        job = ana.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=mine)
        assert job.organization_id == "org-ana"
        for call in (
            ben.fine_tuning.jobs.retrieve,
            ben.fine_tuning.jobs.cancel,
            ben.fine_tuning.jobs.list_events,
        ):
            with pytest.raises(openai.NotFoundError):
                call(job.id)
        assert list(ben.fine_tuning.jobs.list()) == []
        assert ana.fine_tuning.jobs.retrieve(job.id).id == job.id

        rewrite(keys, "ana sk-ana\nben sk-ben\ncleo sk-cleo\n")  # joins late: no restart
        assert list(client(server, "sk-cleo").files.list()) == []


def test_serve_prints_its_url_and_guards_its_data_dir(tmp_path):
    command = [
        sys.executable,
        "-m",
        "ftlab.cli",
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path),
    ]
    tmp_path.chmod(0o755)  # as mkdir makes it: every user of the machine may look in
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = first.stdout.readline()
        assert line.startswith("ftlab server ready at http://127.0.0.1:"), line
        base_url = line.split()[4]
        assert httpx.get(base_url + "/models", headers={"Authorization": "Bearer x"}).is_success
        # Learners with accounts on the machine must not read each other's data from disk.
        assert tmp_path.stat().st_mode & 0o777 == 0o700
        assert (tmp_path / "ftlab.db").stat().st_mode & 0o077 == 0
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert f"is using {tmp_path}" in second.stderr
    finally:
        first.terminate()
        first.wait(timeout=30)
    bad_keys = tmp_path / "keys.txt"
    bad_keys.write_text("only-a-name\n")
    refused = subprocess.run(
        [*command, "--keys", str(bad_keys)], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1 and "line 1" in refused.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2", "::ffff:127.0.0.1"])
def test_this_machine_only_hosts_are_loopback(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "::ffff:192.168.1.20"])
def test_hosts_other_machines_reach_are_not_loopback(host):
    assert not is_loopback(host)


@pytest.fixture
def served(monkeypatch) -> list[str]:
    """`ftlab serve` runs up to the point where it would answer requests, then returns."""
    hosts = []

    def run(server, sockets):
        hosts.append(sockets[0].getsockname()[0])
        sockets[0].close()

    monkeypatch.setattr("uvicorn.Server.run", run)
    # It would also set this test process's torch threads, which later tests would inherit.
    monkeypatch.setattr("ftlab.server.lifecycle.serving_threads", lambda: 1)
    return hosts


def test_a_server_other_machines_reach_needs_keys(tmp_path, capsys, served):
    command = ["serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path)]
    assert cli.main(command) == 1
    error = capsys.readouterr().err
    assert "--host 0.0.0.0 lets other machines reach this server" in error
    assert "see, download and delete each other's files, jobs and models" in error
    assert "--keys KEYS_FILE" in error and "--no-keys" in error
    assert served == []

    keys = tmp_path / "keys.txt"
    keys.write_text("ana sk-ana\n")
    assert cli.main([*command, "--keys", str(keys)]) == 0  # the README's workshop command
    assert cli.main([*command, "--no-keys"]) == 0  # one shared space, on purpose
    assert served == ["0.0.0.0", "0.0.0.0"]
    with pytest.raises(SystemExit):
        cli.main([*command, "--keys", str(keys), "--no-keys"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_data_dir_that_is_a_file_or_a_host_that_does_not_resolve_is_named(tmp_path, capsys):
    not_a_folder = tmp_path / "data.jsonl"
    not_a_folder.write_text("{}\n")
    assert cli.main(["serve", "--port", "0", "--data-dir", str(not_a_folder)]) == 1
    assert f"--data-dir {not_a_folder} is a file" in capsys.readouterr().err
    nowhere = ["serve", "--host", "nosuchhost.invalid", "--port", "0", "--data-dir", str(tmp_path)]
    for keys in ([], ["--no-keys"]):  # the host is the problem, not the missing keys
        assert cli.main([*nowhere, *keys]) == 1
        error = capsys.readouterr().err
        assert "no address for 'nosuchhost.invalid'" in error and "--port" not in error


def test_a_class_data_folder_is_refused_without_keys_and_keys_name_what_they_hide(
    tmp_path, capsys, caplog, served
):
    from ftlab.server.store import Store

    data = tmp_path / "data"
    store = Store(data)
    for learner in ("ana", "ben"):  # their uploads on the class server, started with --keys
        store.add_file(learner, "train.jsonl", "fine-tune", [b"{}\n"])
    store.close()
    command = ["serve", "--port", "0", "--data-dir", str(data)]
    assert cli.main(command) == 1  # without --keys, each learner's lists would come back empty
    error = capsys.readouterr().err
    assert "holds the files, jobs and models of 2 learners (ana, ben)" in error
    assert "Fix: start it with the same keys file (--keys FILE)" in error and served == []

    store = Store(data)
    store.add_file("local", "mine.jsonl", "fine-tune", [b"{}\n"])  # made without keys
    store.close()
    keys = tmp_path / "keys.txt"
    keys.write_text("ana sk-ana-0123456789abcdef\nben sk-ben-0123456789abcdef\n")
    keys.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="ftlab.server"):
        assert cli.main([*command, "--keys", str(keys)]) == 0
    assert "also holds 1 object (files, jobs and models) made without --keys" in caplog.text


def test_a_keys_file_or_data_folder_of_another_user_gets_a_fix_about_owners(
    tmp_path, capsys, monkeypatch
):
    """A workshop run as root, a server run as its own user: files the server may not touch.
    (Root may read anything, so the operating system's refusal is stood in for.)"""
    from pathlib import Path

    from ftlab.server import serve as serving

    keys, data = tmp_path / "keys.txt", tmp_path / "data"
    keys.write_text("ana sk-ana-0001\n")
    read_text = Path.read_text

    def refused(path, *args, **kwargs):
        if path == keys:
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refused)
    with pytest.raises(KeysFileError, match="you may not read it.\nFix: make it the server's"):
        load_keys(keys)
    monkeypatch.setattr(Path, "read_text", read_text)

    def no_writing(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(serving, "open", no_writing, raising=False)
    assert cli.main(["serve", "--port", "0", "--data-dir", str(data)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"ftlab serve: This user may not write in the data folder {data}")
    assert f"`sudo install -d -o USER -m 700 {data}`" in error


def test_more_parallel_jobs_than_cores_is_warned_about(tmp_path, caplog, served):
    from ftlab.models import available_cores

    cores = available_cores()
    command = ["serve", "--port", "0", "--data-dir", str(tmp_path)]
    with caplog.at_level(logging.WARNING, logger="ftlab.server"):
        assert cli.main([*command, "--parallel-jobs", str(cores)]) == 0
        assert "more than this machine's" not in caplog.text
        assert cli.main([*command, "--parallel-jobs", str(cores + 1)]) == 0
    assert f"--parallel-jobs {cores + 1} is more than this machine's {cores} cores" in caplog.text
