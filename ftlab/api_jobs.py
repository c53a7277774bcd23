"""Following a fine-tuning job through the OpenAI API: the polling loop of notebook 04.

The same code runs against the local server and against OpenAI itself, with any
`openai.OpenAI` client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

FINAL_STATUSES = {"succeeded", "failed", "cancelled"}
UNFINISHED_STATUSES = {"validating_files", "queued", "running"}
# Metadata naming the course run a job belongs to (notebook 04's: "04_api"), so that the
# notebook can find its own unfinished job again after a restart.
RUN_KEY = "course_run"
# Metadata that marks a job the course makes fail on purpose (notebook 04's five-example
# file), so that `ftlab room` does not report it as a learner's failed job.
DEMO_KEY = "course_demo"


def new_events(client: Any, job_id: str, seen: set[str]) -> list:
    """The events of a job not in `seen` (which is updated), oldest first."""
    fresh = []
    for event in client.fine_tuning.jobs.list_events(job_id, limit=50):
        if event.id in seen:
            break
        fresh.append(event)
    seen.update(event.id for event in fresh)
    return fresh[::-1]


def follow(
    client: Any,
    job_id: str,
    every: float = 2.0,
    loss_every: int = 5,
    quiet_for: float = 60.0,
    say: Callable[[str], None] = print,
):
    """Print a job's events until it reaches a final status; return the finished job.

    Prints every message, every `loss_every`-th loss, and a line saying the job is still
    going when nothing has been printed for `quiet_for` seconds.
    """
    seen: set[str] = set()
    last_print = time.perf_counter()
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)  # read the status before the events
        for event in new_events(client, job_id, seen):
            step = (event.data or {}).get("step", 0) if event.type == "metrics" else 0
            total = (event.data or {}).get("total_steps")
            if event.type != "metrics" or step % loss_every == 0 or step == total:
                say(f"[{event.level:5}] {event.message}")
                last_print = time.perf_counter()
        if job.status in FINAL_STATUSES:
            return job
        if time.perf_counter() - last_print > quiet_for:
            say(f"        ... still {job.status}")
            last_print = time.perf_counter()
        time.sleep(every)


def unfinished_job(client: Any, model: str, run: str):
    """The newest unfinished job for `model` that was created with `metadata={RUN_KEY: run}`.

    After a kernel restart the job a notebook started may still be running (the server,
    or OpenAI, carries on with it): following it beats starting, and paying for, a second.
    The metadata tells the course's job apart from others of the same account."""
    for job in client.fine_tuning.jobs.list(limit=20).data:  # newest first; one page is plenty
        if job.status in UNFINISHED_STATUSES and job.model == model:
            if (job.metadata or {}).get(RUN_KEY) == run:
                return job
    return None


def is_demo(job: Any) -> bool:
    """Whether `job` is one the course makes fail on purpose (see DEMO_KEY)."""
    return DEMO_KEY in (job.metadata or {})
