"""Helpers for the server tests: real servers in subprocesses, driven by the official SDK."""

from __future__ import annotations

import json
import time
from pathlib import Path

from openai import OpenAI

from ftlab.paths import support_split
from ftlab.server import ServerHandle, start_server
from ftlab.support import load_examples, make_example

BASE = "smollm2-135m-instruct"
FINISHED = ("succeeded", "failed", "cancelled")


def client(server: ServerHandle, key: str = "any-key") -> OpenAI:
    """The unmodified SDK pointed at `server`; no retries, so a 5xx fails the test at once."""
    return OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=120)


def jsonl(examples: list[dict]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in examples).encode()


def tiny_examples(n: int) -> list[dict]:
    """`n` valid chat-format examples (for tests that never train on them)."""
    return [
        make_example(
            f"Where is my order AC-{10000 + i}?", "order_status", f"AC-{10000 + i}", "neutral"
        )
        for i in range(n)
    ]


def support_examples(split: str, n: int) -> list[dict]:
    """The first `n` examples of a support-task split (real, varied training data)."""
    return load_examples(support_split(split))[:n]


def upload(api: OpenAI, examples: list[dict], name: str = "train.jsonl") -> str:
    return api.files.create(file=(name, jsonl(examples)), purpose="fine-tune").id


def wait_for(api: OpenAI, job_id: str, statuses=FINISHED, timeout: float = 300.0):
    """Poll the job like a learner would, until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        job = api.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"job still {job.status} after {timeout} s"
        time.sleep(0.3)


def messages(api: OpenAI, job_id: str) -> list[str]:
    """Every event message of a job, oldest first (the SDK pages through them)."""
    return [e.message for e in api.fine_tuning.jobs.list_events(job_id, limit=100)][::-1]


def runner_pids(server_pid: int) -> list[int]:
    """Training child processes (`ftlab.server.job_runner`) of a server process."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server_pid and b"ftlab.server.job_runner" in cmdline:
            found.append(int(proc.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(data_dir: Path, **options) -> ServerHandle:
    return start_server(data_dir, port=0, **options)
