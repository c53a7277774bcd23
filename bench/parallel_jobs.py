"""A class's jobs on one shared server: one at a time against several side by side.

    make bench-server                               # = .venv/bin/python bench/parallel_jobs.py
    .venv/bin/python bench/parallel_jobs.py --examples 32    # a quick look

Every learner submits notebook 04's job (its 160 training examples and
hyperparameters) at the same moment, through the official `openai` SDK. The
same jobs run twice, each time on a fresh server: with `--parallel-jobs 1`
(each job gets every core, the others wait) and with `--parallel-jobs P` (P jobs
at once, the cores shared out between them). For each it prints when the last
job was done, the mean wait from submitting to a usable model, and when the
first job was done; then the ratios. A small model uses many cores poorly, so
sharing them out between jobs gets more training done per minute.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ftlab.course import API_HYPERPARAMETERS, API_METHOD, API_TRAIN_SUBSET
from ftlab.models import DEFAULT_MODEL, available_cores
from ftlab.paths import support_split
from ftlab.server import start_server


def class_of(jobs: int, folder: Path) -> Path:
    """A keys file with one learner per job."""
    keys = folder / "keys.txt"
    keys.write_text("".join(f"learner{i} sk-learner-{i:04d}\n" for i in range(jobs)))
    return keys


def run_class(jobs: int, parallel: int, training: bytes) -> dict:
    """Submit `jobs` jobs at once to a fresh server; seconds until each had a model."""
    from openai import OpenAI

    with tempfile.TemporaryDirectory() as folder:
        keys = class_of(jobs, Path(folder))
        with start_server(Path(folder) / "data", keys=keys, parallel_jobs=parallel) as server:
            learners = [
                OpenAI(base_url=server.base_url, api_key=f"sk-learner-{i:04d}") for i in range(jobs)
            ]
            files = [
                api.files.create(file=("train.jsonl", training), purpose="fine-tune")
                for api in learners
            ]
            start = time.monotonic()
            pending = {
                api.fine_tuning.jobs.create(
                    model=DEFAULT_MODEL,
                    training_file=file.id,
                    method=API_METHOD,
                ).id: api
                for api, file in zip(learners, files, strict=True)
            }
            waits = []
            while pending:
                time.sleep(0.5)
                for job_id, api in list(pending.items()):
                    job = api.fine_tuning.jobs.retrieve(job_id)
                    if job.status in ("failed", "cancelled"):
                        raise RuntimeError(f"{job_id} {job.status}: {job.error}")
                    if job.status == "succeeded":
                        waits.append(time.monotonic() - start)
                        del pending[job_id]
    return {"last": max(waits), "mean": statistics.mean(waits), "first": min(waits)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_parallel = max(2, available_cores() // 4)
    parser.add_argument(
        "--parallel",
        type=int,
        default=default_parallel,
        help=f"jobs side by side in the second run (default here {default_parallel})",
    )
    parser.add_argument("--jobs", type=int, help="learners submitting (default 2 x --parallel)")
    parser.add_argument(
        "--examples", type=int, default=API_TRAIN_SUBSET, help="training examples per job"
    )
    args = parser.parse_args(argv)
    jobs = args.jobs or 2 * args.parallel
    lines = support_split("train").read_text(encoding="utf-8").splitlines(keepends=True)
    training = "".join(lines[: args.examples]).encode()
    hyper = ", ".join(f"{k} {v}" for k, v in API_HYPERPARAMETERS.items())
    print(f"{jobs} learners, each one job of {args.examples} examples ({hyper});")
    print(f"{available_cores()} cores\n")
    print(f"{'':<24}{'last done s':>12}{'mean wait s':>12}{'first done s':>13}")
    results = {}
    for parallel in (1, args.parallel):
        results[parallel] = run_class(jobs, parallel, training)
        row = results[parallel]
        name = f"--parallel-jobs {parallel}"
        print(f"{name:<24}{row['last']:>12.1f}{row['mean']:>12.1f}{row['first']:>13.1f}")
    one, many = results[1], results[args.parallel]
    print(
        f"\nwith --parallel-jobs {args.parallel} the whole class is done "
        f"{one['last'] / many['last']:.2f}x sooner; the mean wait is "
        f"{one['mean'] / many['mean']:.2f}x shorter"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
