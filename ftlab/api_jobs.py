"""Following a fine-tuning job through the OpenAI API: the polling loop of notebook 04.

The same code runs against the local server and against OpenAI itself, with any
`openai.OpenAI` client.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FINAL_STATUSES = {"succeeded", "failed", "cancelled"}
UNFINISHED_STATUSES = {"validating_files", "queued", "running"}
# Metadata naming the course run a job belongs to (notebook 04's: "04_api"), and a
# fingerprint of its files and settings, so that a notebook run again finds its own job
# (`reusable_job`) instead of training the same thing twice.
RUN_KEY = "course_run"
RECIPE_KEY = "course_recipe"
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


def job_recipe(files: list[Path], settings: dict[str, Any]) -> str:
    """A fingerprint of what a job trains: the files' bytes and the `jobs.create` settings
    (model, method, seed, ...). The same files and settings give the same fingerprint."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(Path(path).read_bytes())
        digest.update(b"\0")
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def reusable_job(client: Any, model: str, run: str, recipe: str | None = None):
    """The newest job for `model`, made with `metadata={RUN_KEY: run, RECIPE_KEY: recipe}`,
    that is still training or has succeeded with its model still there; None if there is none.

    Running a notebook again (after a kernel restart, or "Restart & Run All") should follow
    the job it started, or use the model that job made, rather than train, and on OpenAI pay
    for, the same thing twice. The metadata tells the course's job apart from the account's
    others; a different `recipe` (files or settings changed) is a different job. Jobs that
    failed or were cancelled are never reused."""
    for job in client.fine_tuning.jobs.list(limit=20).data:  # newest first; one page is plenty
        labels = job.metadata or {}
        if job.model != model or labels.get(RUN_KEY) != run:
            continue
        if recipe is not None and labels.get(RECIPE_KEY) != recipe:
            continue
        if job.status in UNFINISHED_STATUSES or (
            job.status == "succeeded" and _model_exists(client, job.fine_tuned_model)
        ):
            return job
    return None


def unfinished_job(client: Any, model: str, run: str):
    """The newest job of `run` that is still training, or None. Kept for copies of notebook 04
    from before `reusable_job`, which also finds finished jobs and checks their recipe."""
    job = reusable_job(client, model, run)
    return job if job is not None and job.status in UNFINISHED_STATUSES else None


def _model_exists(client: Any, name: str | None) -> bool:
    """Whether the model `name` can still be called (it may have been deleted)."""
    import openai

    try:
        return bool(name) and bool(client.models.retrieve(name))
    except openai.NotFoundError:
        return False


def is_demo(job: Any) -> bool:
    """Whether `job` is one the course makes fail on purpose (see DEMO_KEY)."""
    return DEMO_KEY in (job.metadata or {})
