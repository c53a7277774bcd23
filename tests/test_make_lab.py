"""`make lab` really serves JupyterLab with the course and its kernel."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture()
def kernel(repo) -> Path:
    """The kernel folder `make setup` registers; the test is skipped where it is missing, as
    in a conda environment, where `make lab` would first build a .venv from the network."""
    folder = repo / ".venv" / "share" / "jupyter" / "kernels" / "ftlab"
    if not (folder / "kernel.json").is_file():
        pytest.skip("this checkout's .venv was not made by `make setup` (a conda environment?)")
    stamp = subprocess.run(["make", "-q", ".venv/.ftlab-installed"], cwd=repo)
    if stamp.returncode != 0:  # `make setup` would reinstall packages into the running tests
        pytest.skip("the installed packages are older than the pins: run `make setup` first")
    return folder


@pytest.mark.slow
def test_make_lab_serves_the_course(repo, kernel, tmp_path):
    port = free_port()
    log = tmp_path / "lab.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "lab", f"LAB_PORT={port}", "LAB_ARGS=--no-browser"],
            cwd=repo,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")},
        )
    try:
        token = None
        deadline = time.monotonic() + 120
        while token is None and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            found = re.search(rf"127\.0\.0\.1:{port}/lab\?token=(\w+)", log.read_text())
            token = found.group(1) if found else None
            time.sleep(0.5)
        assert token, f"no URL printed:\n{log.read_text()}"
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/lab?token={token}", timeout=10) as response:
            assert response.status == 200
        listing = get_json(f"{base}/api/contents/notebooks?token={token}")
        names = {item["name"] for item in listing["content"]}
        assert "00_setup.ipynb" in names
        kernels = get_json(f"{base}/api/kernelspecs?token={token}")["kernelspecs"]
        assert "ftlab" in kernels
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.slow
def test_make_setup_registers_a_missing_kernel_again(repo, kernel):
    """The README's fix for "a notebook cannot find the kernel" is `make setup`: it must
    register the kernel even when the installed packages are up to date."""
    saved = kernel.with_name("ftlab.saved-by-test")
    shutil.rmtree(saved, ignore_errors=True)
    kernel.rename(saved)
    try:
        done = subprocess.run(
            ["make", "--no-print-directory", "setup"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        spec = json.loads((kernel / "kernel.json").read_text())
        assert spec["display_name"] == "Python 3 (ftlab)"
    finally:
        if kernel.exists():
            shutil.rmtree(saved, ignore_errors=True)
        else:
            saved.rename(kernel)
