"""The job queue: one worker thread validates files and runs training jobs, one at a
time by default or several side by side on a big shared server (`parallel_jobs`).

State machine: `validating_files -> queued -> running -> succeeded | failed | cancelled`.
Training runs in a child process (`job_runner`) so the HTTP server stays responsive,
a crash in training cannot take the server down, and cancelling can always stop it.
The child appends events to `progress.jsonl`; the worker turns each line into
events, checkpoints and finally a model, recording how far it has read in the same
transaction as the event, so that after a crash every line is applied exactly once.

On start, jobs left `running` by a killed server are queued again and resume from
their last checkpoint; jobs left `validating_files` are simply validated again.

When a slot frees up, learners take turns: the next job comes from the learner with
the fewest jobs running, then from the one whose last job started longest ago (or who
never started one), then the oldest job. So one learner's five jobs do not hold up
the rest of a class, even with a single slot.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ftlab.api_jobs import FINAL_STATUSES
from ftlab.files import fsync_tree, remove_path
from ftlab.models import available_cores, thread_override
from ftlab.server import job_runner
from ftlab.server.store import Store, new_id, now
from ftlab.training.checkpoints import TRAINER_STATE
from ftlab.validation import ERROR_CODES, MIN_EXAMPLES, auto_epochs, validate_file
from ftlab.wording import counted

log = logging.getLogger("ftlab.server")
CANCEL_GRACE_SECONDS = 5.0
FORMAT_CODES = {"invalid_encoding", "invalid_json", "not_an_object"}
COUNT_CODES = {"empty_file", "too_few_examples"}
RESULT_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


# Checkpoints kept per finished job, as OpenAI keeps those of the last three epochs: a tiny file
# with "auto" epochs trains up to 25, and each checkpoint (adapter and optimiser state) is ~57 MB.
KEPT_CHECKPOINTS = 3


def model_name(job: dict[str, Any]) -> str:
    """`ft:{base}:{org}:{suffix}:{8 characters}`; the characters come from the job id."""
    return f"ft:{job['model']}:{job['org']}:{job['suffix'] or ''}:{job['id'][-8:]}"


def train_defaults() -> dict[str, Any]:
    from ftlab.training import TrainConfig

    return {
        f.name: f.default
        for f in dataclasses.fields(TrainConfig)
        if f.default is not dataclasses.MISSING
    }


def resolve_hyperparameters(requested: dict[str, Any], n_examples: int) -> dict[str, Any]:
    """Replace "auto" (or missing) values with what training will really use."""
    defaults = train_defaults()

    def pick(name: str, auto: Any) -> Any:
        value = requested.get(name, "auto")
        return auto if value in (None, "auto") else value

    return {
        "n_epochs": int(pick("n_epochs", auto_epochs(n_examples))),
        "batch_size": int(pick("batch_size", defaults["batch_size"])),
        "learning_rate_multiplier": float(pick("learning_rate_multiplier", 1.0)),
    }


def threads_per_job(parallel_jobs: int) -> int | None:
    """CPU threads each training child should use, or None to let it choose (one job).

    Several jobs at once share the cores instead of all spinning on all of them;
    an explicit FTLAB_THREADS is left to apply to every job.
    """
    if parallel_jobs <= 1 or thread_override() is not None:
        return None
    return max(1, available_cores() // parallel_jobs)


def next_job(
    queued: list[dict[str, Any]],
    running_owners: list[str],
    last_started: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The queued job to start, taking turns by owner: the owner with the fewest running
    jobs, then the one whose latest job started longest ago (never is longest), then the
    oldest job (`queued` is in queue order). `last_started`: see `Store.last_started`."""
    started = last_started or {}
    return min(
        queued, key=lambda job: (running_owners.count(job["owner"]), started.get(job["owner"], -1))
    )


@dataclasses.dataclass
class RunningJob:
    """A training child and what the worker remembers about it between polls."""

    process: subprocess.Popen
    owner: str
    stop_sent_at: float | None = None
    latest: dict[str, Any] = dataclasses.field(default_factory=dict)  # last metrics seen


def pace(timeline: list[tuple[int, int]]) -> float | None:
    """Seconds per step of the latest stretch of training with two steps logged (a resumed
    run starts a new stretch, from its checkpoint's step); None before there is one."""
    stretches: list[list[tuple[int, int]]] = []
    for step, at in timeline:
        if not stretches or step < stretches[-1][-1][0]:
            stretches.append([])
        if not stretches[-1] or step > stretches[-1][-1][0]:  # an evaluation repeats a step
            stretches[-1].append((step, at))
    for stretch in reversed(stretches):
        if len(stretch) >= 2:
            (first_step, first_at), (last_step, last_at) = stretch[0], stretch[-1]
            return max(0, last_at - first_at) / (last_step - first_step)
    return None


def resumed_clock(seconds_per_step: float | None, resume_step: int, at: int) -> dict[str, int]:
    """The `started_at` and `step` of a job resuming at `at` from `resume_step`, as if it
    had trained at its pace from the start: `estimated_finish` is worked out from them, and
    would otherwise count the time the server was down as training time."""
    if seconds_per_step is None:
        return {"started_at": at, "step": resume_step}
    return {"started_at": at - round(seconds_per_step * resume_step), "step": resume_step}


# What only an unfinished job needs, in its folder: the copies of its data files (to train on
# and to resume), the run's own adapter (a succeeded job's model is a copy of it) and each
# checkpoint's optimiser state (to resume). A class's finished jobs then take a third of the
# disk, and a deleted upload is gone from the server once its jobs are over. The
# checkpoints' adapters stay: they are models too.
UNFINISHED_ONLY = (
    "train.jsonl",
    "valid.jsonl",
    "out/adapter",
    f"out/checkpoints/*/{TRAINER_STATE}",
)


def tidy_finished_job(job_dir: Path) -> int:
    """Delete what only an unfinished job needs (UNFINISHED_ONLY); returns the bytes freed."""
    freed = 0
    for pattern in UNFINISHED_ONLY:
        for path in job_dir.glob(pattern):
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            freed += sum(file.stat().st_size for file in files)
            remove_path(path, ignore_errors=True)
    return freed


def failure(code: str | None, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param}


def file_problem(report: Any, param: str, file_id: str) -> dict[str, Any] | None:
    """OpenAI's job failure for a checker report, naming the first bad line (its most basic
    problem: a legacy prompt/completion line is named as that, not for its unknown keys) and
    how many other lines have problems, or None."""
    errors = report.errors  # validation files too need 10 examples (training checks them)
    if not errors:
        return None
    what = "Training" if param == "training_file" else "Validation"
    lines = [e for e in errors if e.line is not None]
    # ERROR_CODES in order: the line's encoding, JSON, shape, then its messages.
    basic = {code: rank for rank, code in enumerate(ERROR_CODES)}
    first = (
        min(lines, key=lambda e: (e.line, basic.get(e.code, len(basic)))) if lines else errors[0]
    )
    if first.code in COUNT_CODES:
        return failure(
            "invalid_n_examples",
            f"{what} file has {counted(len(report.examples), 'example')}, but must have at "
            f"least {MIN_EXAMPLES} examples",
            param,
        )
    where = f"{first.where}: " if first.line is not None else ""  # `line 7, messages[2]: `
    code = "invalid_file_format" if first.code in FORMAT_CODES else "invalid_training_file"
    others = len({e.line for e in lines} - {first.line})
    more = (
        f" {counted(others, 'more line')} of the file {'has' if others == 1 else 'have'} "
        "problems too: `ftlab validate FILE` lists them all, so fix them before uploading the "
        "file again."
        if others
        else ""
    )
    return failure(
        code,
        f"{what} file {file_id} is invalid: {where}{first.message} ({first.code}).{more}",
        param,
    )


def too_long(report: Any, job: dict[str, Any], param: str) -> dict[str, Any] | None:
    """The job's failure when examples of the file are longer than training takes (2,048
    tokens of the job's base model), found now rather than after the job has started."""
    from ftlab.models import load_tokenizer
    from ftlab.validation.stats import TRAIN_MAX_LENGTH, count_tokens

    totals, _, _ = count_tokens(report.examples, load_tokenizer(job["model"]))
    lines = zip(report.example_lines, totals, strict=True)
    long = [(line, n) for line, n in lines if n > TRAIN_MAX_LENGTH]
    if not long:
        return None
    shown = ", ".join(f"line {line} ({n:,} tokens)" for line, n in long[:5])
    more = f" and {len(long) - 5} more" if len(long) > 5 else ""
    return failure(
        "invalid_training_file",
        f"{'An example' if len(long) == 1 else f'{len(long)} examples'} of the "
        f"{param.replace('_', ' ')} {'is' if len(long) == 1 else 'are'} longer than the "
        f"{TRAIN_MAX_LENGTH:,} tokens this server trains on: {shown}{more}. Shorten or split "
        "such examples, or leave them out, and upload the file again.",
        param,
    )


class Worker:
    """Owns the queue. `start()` recovers interrupted jobs, then polls in a thread."""

    def __init__(self, store: Store, poll_seconds: float = 0.2, parallel_jobs: int = 1) -> None:
        if parallel_jobs < 1:
            raise ValueError(f"parallel_jobs must be at least 1, got {parallel_jobs}")
        self.store = store
        self.poll_seconds = poll_seconds
        self.parallel_jobs = parallel_jobs
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._signalled = False  # set by `stopping`, from the signal handler
        self._thread = threading.Thread(target=self._loop, name="ftlab-worker", daemon=True)
        # Files are checked on a thread of their own: a large upload takes a while to read and
        # tokenize, and the queue must go on meanwhile (jobs start, progress is read, cancels).
        self._checks_due = threading.Event()
        self._checker = threading.Thread(target=self._check_loop, name="ftlab-files", daemon=True)
        self._running: dict[str, RunningJob] = {}  # by job id
        self._replayed: dict[str, dict[str, Any]] = {}  # metrics of jobs read back on recovery
        self._last_checked: dict[str, float] = {}  # by owner: whose turn it is to be checked

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.recover()
        self._thread.start()
        self._checker.start()

    def wake(self) -> None:
        self._wake.set()
        self._checks_due.set()

    def stopping(self) -> None:
        """The server is about to stop: start no job, and take no training child that ends
        now for a failed job (it resumes on the next start).

        Called from the signal handler, so it only sets a flag: an Event's lock may be held
        by the very code the signal interrupted."""
        self._signalled = True

    def shutdown(self) -> None:
        """Stop the thread and the training child; a running job resumes on the next start."""
        first = not self._stopping.is_set()  # (stopping twice is harmless, and said once)
        self._stopping.set()
        self.wake()
        for thread in (self._thread, self._checker):
            if thread.is_alive():
                thread.join(timeout=30)
        if first:  # (only now: the worker thread changes `_running` until it has stopped)
            unfinished = [job_id for job_id, r in self._running.items() if r.process.poll() is None]
            log.info(
                "stopping: %s",
                f"{', '.join(unfinished)} will resume at the next start"
                if unfinished
                else "no job is training",
            )
        for running in self._running.values():
            if running.process.poll() is None:
                running.process.kill()
                running.process.wait()

    def recover(self) -> None:
        finished = self.store.jobs_with_status(*FINAL_STATUSES)
        freed = sum(tidy_finished_job(self.store.job_dir(job["id"])) for job in finished)
        if freed:  # jobs that finished before a crash, or before servers tidied them
            log.info("deleted %.0f MB that only unfinished jobs need", freed / 2**20)
        for job in self.store.jobs_with_status("running"):
            self._guarded(job["id"], self._settle_progress, job["id"])
            self._guarded(job["id"], self._ingest, job["id"])
            if self.store.get_job(job["id"])["status"] != "running":
                self._replayed.pop(job["id"], None)  # it had finished before the restart
                continue
            step = self.store.last_checkpoint_step(job["id"])
            if step:
                message = f"Job interrupted by a server restart; resuming from step {step}"
            else:  # a run not resumed starts afresh
                message = "Job interrupted by a server restart; restarting from the beginning"
            self.store.add_event(
                job["id"],
                message,
                level="warn",
                job_updates={"status": "queued", "resume": int(step > 0)},
            )

    def _check_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.check_files()
            except Exception:  # noqa: BLE001 - as in _loop
                log.exception("file check error")
            self._checks_due.wait(self.poll_seconds)
            self._checks_due.clear()

    def check_files(self) -> None:
        """Check the files of every job in `validating_files`, queueing those that pass.

        Learners take turns, as for training: the next job checked is the oldest of the
        learner whose last check is longest ago, so one learner's many jobs on a large file
        (a check reads and tokenizes all of it) do not hold up everyone else's."""
        done: set[str] = set()
        while not self._stopping.is_set():
            waiting = self.store.jobs_with_status("validating_files")
            waiting = [job for job in waiting if job["id"] not in done]
            if not waiting:
                return
            job = min(waiting, key=lambda j: self._last_checked.get(j["owner"], -math.inf))
            self._last_checked[job["owner"]] = time.monotonic()
            done.add(job["id"])
            self._guarded(job["id"], self._validate, job)
            self._wake.set()  # a job may be queued now

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._start_queued()
                for job_id in list(self._running):
                    self._pump(job_id)
            except Exception:  # noqa: BLE001 - the worker must survive anything and go on
                log.exception("worker error")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _start_queued(self) -> None:
        """Fill the free slots from the queue."""
        while len(self._running) < self.parallel_jobs and not self._signalled:
            queued = self.store.jobs_with_status("queued")
            if not queued:
                return
            running_owners = [r.owner for r in self._running.values()]
            job = next_job(queued, running_owners, self.store.last_started())
            self._guarded(job["id"], self._start, job)
            if job["id"] not in self._running:
                return  # it did not start (failed, or cancelled meanwhile); try on the next poll

    def _guarded(self, job_id: str, step: Any, *args: Any) -> None:
        """Run one step of a job; if it raises, fail that job (never retry it forever)."""
        try:
            step(*args)
        except Exception as error:  # noqa: BLE001 - reported on the job
            log.exception("job %s", job_id)
            self._fail(
                job_id,
                failure(
                    "server_error",
                    f"Internal error while handling the job: {type(error).__name__}: {error}",
                ),
            )

    # ---- validating ---------------------------------------------------------------------

    def _fail(self, job_id: str, error: dict[str, Any], level: str = "error") -> None:
        if self.store.update_job(
            job_id,
            only_if_status=("validating_files", "queued", "running"),
            event=error["message"],
            event_level=level,
            status="failed",
            error=error,
            finished_at=now(),
        ):
            log.info("%s failed: %s", job_id, error["message"].splitlines()[0])
        if job_id not in self._running:  # no training child to read its files
            tidy_finished_job(self.store.job_dir(job_id))

    def _validate(self, job: dict[str, Any]) -> None:
        current = self.store.get_job(job["id"])
        if current is None or current["status"] != "validating_files":  # cancelled meanwhile
            return
        job_dir = self.store.job_dir(job["id"])
        job_dir.mkdir(parents=True, exist_ok=True)
        validation = job["validation_file"]
        also = f" and validation file: {validation}" if validation else ""
        message = f"Validating training file: {job['training_file']}{also}"
        self.store.add_event(job["id"], message, once=True)  # once: it may be checked again
        for param, file_id, target in (
            ("training_file", job["training_file"], "train.jsonl"),
            ("validation_file", job["validation_file"], "valid.jsonl"),
        ):
            if file_id is None:
                continue
            deleted = failure(
                "invalid_training_file",
                f"The file {file_id} was deleted before the job could use it. Upload it again "
                "and create a new job.",
                param,
            )
            if self.store.get_file(job["owner"], file_id) is None:
                return self._fail(job["id"], deleted)
            try:  # the job's own copy is what is checked and trained on: a delete cannot race it
                shutil.copyfile(self.store.file_path(file_id), job_dir / target)
            except FileNotFoundError:
                return self._fail(job["id"], deleted)
            report = validate_file(job_dir / target, count_tokens=False)
            problem = file_problem(report, param, file_id) or too_long(report, job, param)
            if problem:
                return self._fail(job["id"], problem)
            if param == "training_file":
                n_examples = len(report.examples)
        fsync_tree(job_dir)  # the copies are on disk before the job row says it may start
        resolved = resolve_hyperparameters(job["hyperparameters"], n_examples)
        if not self.store.update_job(
            job["id"],
            only_if_status=("validating_files",),
            event="Files validated, moving job to queued state",
            status="queued",
            hyperparameters=resolved,
            n_examples=n_examples,
        ):  # cancelled while its files were checked
            tidy_finished_job(job_dir)

    # ---- running --------------------------------------------------------------------------

    def _train_request(self, job: dict[str, Any]) -> dict[str, Any]:
        job_dir = self.store.job_dir(job["id"])
        hyper = job["hyperparameters"]
        valid = job_dir / "valid.jsonl"
        return {
            "data": str(job_dir / "train.jsonl"),
            "valid": str(valid) if valid.exists() else None,
            "out": str(job_dir / "out"),
            "model": job["model"],
            "epochs": hyper["n_epochs"],
            "batch_size": hyper["batch_size"],
            "lr": train_defaults()["lr"] * hyper["learning_rate_multiplier"],
            "max_steps": job["max_steps"],
            "seed": job["seed"],
            "resume": bool(job["resume"]),
        }

    def _start(self, job: dict[str, Any]) -> None:
        job_dir = self.store.job_dir(job["id"])
        (job_dir / job_runner.STOP).unlink(missing_ok=True)
        (job_dir / job_runner.REQUEST).write_text(json.dumps(self._train_request(job), indent=2))
        clock = {"started_at": job["started_at"] or now()}
        if job["started_at"]:  # started before a restart: resumed, or begun again
            clock = resumed_clock(
                pace(self.store.metrics_timeline(job["id"])),
                self.store.last_checkpoint_step(job["id"]),
                now(),
            )
        if not self.store.update_job(
            job["id"],
            only_if_status=("queued",),
            # Started once: a restart's own event says when it resumes or begins again.
            event=None if job["started_at"] else "Fine-tuning job started",
            status="running",
            **clock,
        ):
            return
        log.info(
            "%s of %s %s (%d running)",
            job["id"],
            job["owner"],
            "resumed" if job["resume"] else "started",
            len(self._running) + 1,
        )
        environment = dict(os.environ)
        if (threads := threads_per_job(self.parallel_jobs)) is not None:
            environment["FTLAB_THREADS"] = str(threads)
        with open(job_dir / "runner.log", "ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "ftlab.server.job_runner", str(job_dir), str(os.getpid())],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
            )
        self._running[job["id"]] = RunningJob(
            process, job["owner"], latest=self._replayed.pop(job["id"], {})
        )

    def _pump(self, job_id: str) -> None:
        if self._signalled or self._stopping.is_set():  # a child ending now ends with the server
            return
        running = self._running[job_id]
        self._guarded(job_id, self._ingest, job_id)
        status = self.store.get_job(job_id)["status"]
        if status != "running":  # cancelled by the user, or failed while reading its progress
            self._stop_child(job_id)
        exit_code = running.process.poll()
        if exit_code is None:
            return
        self._guarded(job_id, self._ingest, job_id)
        if self.store.get_job(job_id)["status"] == "running":
            log_tail = (self.store.job_dir(job_id) / "runner.log").read_text(errors="replace")[
                -600:
            ]
            self._fail(
                job_id,
                failure(
                    "server_error",
                    f"Training stopped unexpectedly (exit code {exit_code}). "
                    f"End of {self.store.job_dir(job_id) / 'runner.log'}:\n{log_tail}",
                ),
            )
        del self._running[job_id]
        tidy_finished_job(self.store.job_dir(job_id))  # the child has ended: its job is over
        self._wake.set()

    def _stop_child(self, job_id: str) -> None:
        """Ask the child to stop at its next step; kill it if it has not after a grace time."""
        running = self._running[job_id]
        if running.stop_sent_at is None:
            (self.store.job_dir(job_id) / job_runner.STOP).touch()
            running.stop_sent_at = time.monotonic()
        elif time.monotonic() - running.stop_sent_at > CANCEL_GRACE_SECONDS:
            running.process.kill()

    # ---- progress lines -------------------------------------------------------------------

    def _progress_path(self, job_id: str) -> Path:
        return self.store.job_dir(job_id) / job_runner.PROGRESS

    def _settle_progress(self, job_id: str) -> None:
        """Make a crashed job's progress file safe to append to again.

        A power cut can lose the file's last lines after the database recorded them as read
        (the offset then points past the end, and the resumed run's first lines would be
        skipped), or leave half a line (which the resumed run's first line would continue):
        the offset is brought back to the end, and a half line is ended."""
        path = self._progress_path(job_id)
        if not path.exists():
            return
        with open(path, "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size and (handle.seek(size - 1), handle.read(1))[1] != b"\n":
                handle.write(b"\n")
                size += 1
        if self.store.get_job(job_id)["progress_offset"] > size:
            log.warning(
                "%s: the progress file lost lines in a crash; reading on from its end", job_id
            )
            self.store.update_job(job_id, progress_offset=size)

    def _ingest(self, job_id: str) -> None:
        """Apply every complete line of the job's progress file not applied yet."""
        path = self._progress_path(job_id)
        if not path.exists():
            return
        offset = self.store.get_job(job_id)["progress_offset"]
        with open(path, "rb") as handle:
            handle.seek(offset)
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # the child is still writing this line
                offset += len(raw)
                try:
                    record = json.loads(raw)
                except ValueError:
                    log.warning("%s: unreadable progress line skipped", job_id)
                    self.store.update_job(job_id, progress_offset=offset)
                    continue
                try:
                    self._apply(self.store.get_job(job_id), record, offset)
                except Exception:
                    self.store.update_job(job_id, progress_offset=offset)
                    raise

    def _apply(self, job: dict[str, Any], record: dict[str, Any], offset: int) -> None:
        kind, job_id = record.get("kind"), job["id"]
        # Metrics seen so far in this run (after a restart, replayed lines rebuild them).
        if job_id in self._running:
            latest = self._running[job_id].latest
        else:
            latest = self._replayed.setdefault(job_id, {})
        done = {"progress_offset": offset}
        if job["status"] != "running":
            self.store.update_job(job_id, **done)
            return
        if kind == "step" and record["step"] <= self.store.last_metrics_step(job_id):
            # A run resumed from its checkpoint after a crash repeats the steps after it (with
            # the same results): their events are already there.
            self.store.update_job(job_id, **done)
            return
        if kind in ("step", "eval"):
            latest.update(
                {
                    k: record.get(k)
                    for k in (
                        "train_loss",
                        "train_mean_token_accuracy",
                        "valid_loss",
                        "valid_mean_token_accuracy",
                    )
                    if record.get(k) is not None
                }
            )
            # Validation figures belong to the step they were measured at: an epoch's last
            # step carries them (job_runner joins the two; older progress files had an
            # "eval" line of its own after the step's).
            validated = kind == "eval" or record.get("valid_loss") is not None
            data = {
                "step": record["step"],
                "total_steps": record["total_steps"],
                **{k: v for k, v in latest.items() if validated or not k.startswith("valid")},
            }
            losses = [
                f"{label} loss={record[f'{key}_loss']:.4f}"
                for label, key in (("training", "train"), ("validation", "valid"))
                if record.get(f"{key}_loss") is not None
            ]
            message = f"Step {record['step']}/{record['total_steps']}: {', '.join(losses)}"
            self.store.add_event(
                job_id,
                message,
                type="metrics",
                data=data,
                at=record.get("at"),  # when it was logged, not when it was read
                job_updates={
                    **done,
                    "step": record["step"],
                    "total_steps": record["total_steps"],
                    "trained_tokens": record.get("trained_tokens"),
                },
            )
        elif kind == "checkpoint":
            name = f"{model_name(job)}:ckpt-step-{record['step']}"
            metrics = {"step": record["step"], **latest}
            fsync_tree(self.store.located(record["checkpoint_dir"]), up_to=self.store.jobs_dir)
            self.store.add_checkpoint(
                {
                    "id": new_id("ftckpt_"),
                    "job_id": job_id,
                    "owner": job["owner"],
                    "created_at": now(),
                    "model_name": name,
                    "step_number": record["step"],
                    "metrics": metrics,
                    "path": self.store.located(record["checkpoint_dir"]),
                },
                f"Checkpoint created at step {record['step']} with Snapshot ID: {name}",
                job_updates=done,
            )
        elif kind == "result":
            self._finish(job, record, done)
        elif kind == "error":
            self.store.update_job(job_id, **done)
            self._fail(
                job_id,
                failure(
                    record.get("code") or "server_error",
                    record["message"],
                    "training_file" if record.get("code") else None,
                ),
            )
        else:
            self.store.update_job(job_id, **done)

    def _results_csv(self, job_id: str) -> bytes:
        rows: dict[int, dict[str, Any]] = {}
        for event in self.store.all_events(job_id):
            if event["type"] == "metrics" and event["data"]:
                data = event["data"]
                row = rows.setdefault(data["step"], {"step": data["step"]})
                row.update(
                    {
                        "train_loss": data.get("train_loss"),
                        "train_accuracy": data.get("train_mean_token_accuracy"),
                    }
                )
                if "valid_loss" in data:
                    row.update(
                        {
                            "valid_loss": data["valid_loss"],
                            "valid_mean_token_accuracy": data.get("valid_mean_token_accuracy"),
                        }
                    )
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[step] for step in sorted(rows))
        return buffer.getvalue().encode()

    def _results_file(self, job: dict[str, Any]) -> dict[str, Any]:
        """The job's results file: the one a crashed completion already added, or a new one."""
        name, purpose = f"{job['id']}-results.csv", "fine-tune-results"
        found = self.store.find_file(job["owner"], name, purpose)
        if found is not None:
            return found
        return self.store.add_file(job["owner"], name, purpose, [self._results_csv(job["id"])])

    def _finish(self, job: dict[str, Any], result: dict[str, Any], done: dict[str, Any]) -> None:
        job_id = job["id"]
        if result.get("stopped"):
            self.store.update_job(job_id, **done)
            return self._fail(job_id, failure("server_error", "Training stopped early."))
        # When a crash makes this line be applied twice, the adapter is copied again and
        # the results file found again. The model, its events and "succeeded" are then one
        # transaction, which does nothing if a cancel arrived meanwhile.
        # Only now: the training child reads its checkpoint folders until it ends.
        for folder in self.store.drop_old_checkpoints(job_id, KEPT_CHECKPOINTS):
            shutil.rmtree(folder, ignore_errors=True)
        name = model_name(job)
        target = self.store.models_dir / job_id[-8:]
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.store.located(result["adapter_dir"]), target)
        fsync_tree(target)  # the model row below must not outlive its files in a power cut
        results = self._results_file(job)
        completed = self.store.complete_job(
            job_id,
            model={
                "id": name,
                "owner": job["owner"],
                "org": job["org"],
                "job_id": job_id,
                "created_at": now(),
                "path": target,
            },
            messages=[
                f"New fine-tuned model created: {name}",
                "The job has successfully completed",
            ],
            job_updates={
                **done,
                "finished_at": now(),
                "fine_tuned_model": name,
                "trained_tokens": result.get("trained_tokens"),
                "result_files": [results["id"]],
            },
        )
        if completed:
            log.info("%s of %s succeeded: %s", job_id, job["owner"], name)
        if not completed:  # cancelled while finishing: keep nothing of the result
            shutil.rmtree(target, ignore_errors=True)
            self.store.delete_file(job["owner"], results["id"])
            self.store.update_job(job_id, **done)
