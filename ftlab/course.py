"""The course's shared runs: what one notebook produces and a later one reuses.

Notebook 03 trains the course's LoRA adapter and notebook 04 fine-tunes a model
through the (local) OpenAI-compatible API; notebook 05 compares both. Each
later notebook must also run on its own, so the helpers here return the earlier
notebook's result when it is on disk and otherwise produce it the same way the
earlier notebook does (same settings, same folders), so nothing differs
between "ran 03 first" and "did not".
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftlab.api_jobs import RECIPE_KEY, RUN_KEY, follow, job_recipe, reusable_job
from ftlab.evaluation import MAX_ANSWER_TOKENS
from ftlab.files import write_text_atomically
from ftlab.models import DEFAULT_MODEL, is_adapter_dir
from ftlab.paths import data_dir, runs_dir, support_split
from ftlab.support import load_examples
from ftlab.training import StaleRunError, TrainConfig, TrainEvent, train
from ftlab.training.loop import run_length

if TYPE_CHECKING:
    from ftlab.course_server import CourseServer
    from ftlab.support import Scores

QUICK_VARIABLE = "FTLAB_QUICK"
# In quick mode: notebook 03's run stops after this many steps, notebook 04's job trains on
# this many examples.
QUICK_STEPS = 8
QUICK_API_SUBSET = 32


def quick_mode() -> bool:
    """Whether FTLAB_QUICK is set (to anything but 0): the course's runs are cut short.

    `make test` sets it for the notebooks, so that checking that every cell runs takes minutes
    on a slow CPU, not an hour. Every cell still trains, answers and scores for real, but the
    scores of such short runs say little about fine-tuning: learners leave it unset.
    """
    return os.environ.get(QUICK_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


LORA_RUN = "03_lora"
API_RUN = "04_api"
API_SERVER = "04_server"
API_SUFFIX = "support"
# Notebook 04's local job: the settings it sends, and how many training examples (a subset,
# so that the job finishes in a few minutes on a laptop CPU).
API_HYPERPARAMETERS = {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 1.0}
API_METHOD = {"type": "supervised", "supervised": {"hyperparameters": API_HYPERPARAMETERS}}
API_TRAIN_SUBSET = 160
# Chat requests in flight while scoring through an API: one local server batch
# (`ftlab serve --chat-batch`), and well inside a hosted API's rate limits.
API_CONCURRENCY = 16


def course_run_dir(name: str) -> Path:
    """A course run's folder: `runs/NAME`, or `runs/NAME_quick` in quick mode, so that runs
    cut short and full ones never meet (neither resumes nor reuses the other)."""
    return runs_dir() / (f"{name}_quick" if quick_mode() else name)


def lora_run_dir() -> Path:
    """Notebook 03's run folder (`runs/03_lora`)."""
    return course_run_dir(LORA_RUN)


def lora_config(**overrides: Any) -> TrainConfig:
    """The course's LoRA run: the support train split, validated on the valid split.

    `resume=True`, so running it again continues an interrupted run from its
    last finished epoch, and a finished run is not trained twice. In quick mode
    (`quick_mode()`), the run stops after QUICK_STEPS steps, in a folder of its own.
    """
    settings: dict[str, Any] = {
        "data": support_split("train"),
        "valid": support_split("valid"),
        "out": lora_run_dir(),
        "resume": True,
    }
    if quick_mode():
        settings["max_steps"] = QUICK_STEPS
    settings.update(overrides)
    return TrainConfig(**settings)


def lora_adapter(callback: Callable[[TrainEvent], None] | None = None) -> Path:
    """The adapter of the course's LoRA run (notebook 03), training it first if it is missing.

    A run that notebook 03 finished with other settings (a learner who chose
    `adapted_layers=15` to save time) is used as it is, with a note: it is never
    deleted to train the default one. An unfinished run with other settings stops
    with an error that says how to go on.
    """
    folder = lora_run_dir()
    adapter = folder / "adapter"
    if not adapter.is_dir():
        print(
            f"Notebook 03's adapter is not in {folder} yet: training it now with notebook 03's "
            "settings. On a 2-core CPU that takes 4 to 9 minutes with bf16 and 13 to 23 "
            "without (section 4 of notebook 00 estimates it for this machine)."
        )
    try:  # resume=True: a finished run with the same settings and data returns at once
        result = train(lora_config(), callback=callback)
    except StaleRunError as error:  # the learner's own settings, or the data changed since
        reason = str(error).splitlines()[0]
        if is_adapter_dir(adapter):
            print(
                f"{reason}\nUsing that finished run's adapter as it is. To use the course's "
                f"default run instead, delete {folder} and run this cell again."
            )
            return adapter
        raise RuntimeError(
            f"{reason}\nFix: finish that run in notebook 03 (run its training cell again), "
            f"or delete {folder} to train the course's default run here."
        ) from error
    if result.adapter_dir is None:
        raise RuntimeError(f"The LoRA run in {folder} stopped before finishing an epoch.")
    return result.adapter_dir


def lora_run_summary() -> str:
    """How much notebook 03's run trained, read from the config.json in its folder.

    Notebook 05 prints it beside the adapter's scores: a run cut short (quick mode, or a
    learner's own `max_steps`) scores lower for that reason alone.
    """
    config = TrainConfig.from_json(lora_run_dir() / "config.json")
    examples = len(load_examples(config.data))
    per_epoch, total, _ = run_length(config, examples)
    planned = per_epoch * config.epochs
    if total < planned:
        return (
            f"stopped by max_steps after {total} of {planned} steps, batches of "
            f"{config.batch_size} drawn from {examples:,} training examples"
        )
    return f"{config.epochs} epochs over {examples:,} training examples ({total} steps)"


def api_result_path() -> Path:
    """Where notebook 04 records its fine-tuned model: `runs/04_api/result.json`."""
    return course_run_dir(API_RUN) / "result.json"


def save_api_result(record: dict[str, Any]) -> Path:
    """Write notebook 04's record to `api_result_path()`, all or nothing, and return the path.

    A crash part-way never leaves half a file for notebook 05 to trip over.
    """
    path = api_result_path()
    write_text_atomically(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path


# What notebook 05 reads from notebook 04's record (`api_record` writes these and more).
API_RESULT_NEEDS = ("provider", "fine_tuned_model", "server_data_dir", "scores", "train_examples")


def api_record(
    client: Any,
    job: Any,
    server: CourseServer | None,
    scores: Scores,
    predictions: list[str],
    train_examples: int,
    evaluation_seconds: float,
) -> dict[str, Any]:
    """Notebook 04's record of its finished job, for `save_api_result` (notebook 05 reads it).

    Keys: `provider` ("local" or "openai"); `base_model`; `fine_tuned_model`, the `ft:` name to
    call; `checkpoint_model`, the earliest checkpoint kept (the last three are); `job_id`;
    `server_data_dir`, the local server's data folder relative to `runs_dir()` (None exactly
    when the job ran on OpenAI, whose `server` is None); `server_url`, a workshop's shared
    server if the job ran there (else None); `hyperparameters` as the job resolved them;
    `trained_tokens`; `train_examples`; `test_file`, relative to `data_dir()`; `scores` on the
    test split (`Scores.as_dict()`) and the raw `predictions` in the test file's order;
    `job_seconds`, from the job's creation to its end by the provider's clock (queueing
    included), and `evaluation_seconds`.
    """
    checkpoints = sorted(
        client.fine_tuning.jobs.checkpoints.list(job.id), key=lambda c: c.step_number
    )
    return {
        "provider": "openai" if server is None else "local",
        "base_model": job.model,
        "fine_tuned_model": job.fine_tuned_model,
        "checkpoint_model": checkpoints[0].fine_tuned_model_checkpoint if checkpoints else None,
        "job_id": job.id,
        "server_data_dir": None if server is None else API_SERVER,
        "server_url": server.base_url if server is not None and server.shared else None,
        "hyperparameters": job.method.supervised.hyperparameters.to_dict(),
        "trained_tokens": job.trained_tokens,
        "train_examples": train_examples,
        "test_file": support_split("test").relative_to(data_dir()).as_posix(),
        "scores": scores.as_dict(),
        "predictions": predictions,
        "job_seconds": (job.finished_at or job.created_at) - job.created_at,
        "evaluation_seconds": round(evaluation_seconds, 1),
    }


def api_result(on_event: Callable[[str], None] = print) -> dict[str, Any]:
    """Notebook 04's API fine-tune: its record if saved, else the same job run on the local server.

    The record's keys are described in `api_record`. A record that is damaged, lacks a key
    notebook 05 reads, or whose private server folder is gone (the model with it), is set
    aside (`result.json.unusable-<time>`, nothing is deleted) and made again on the local
    server; except that of a job on OpenAI, which is paid for and still there: that raises,
    saying how to record it again, rather than put a local model in its place.
    """
    path = api_result_path()
    if not path.is_file():
        record = run_api_job(on_event)
        save_api_result(record)
        return record
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        record, why = {}, "is not a readable record (not JSON)"
    else:
        if not isinstance(record, dict):
            record, why = {}, "is not a readable record (not a JSON object)"
        elif missing := set(API_RESULT_NEEDS) - set(record):
            why = f"lacks {sorted(missing)}"
        elif (
            (folder := record.get("server_data_dir"))
            and not record.get("server_url")
            and not (runs_dir() / folder).is_dir()
        ):
            why = (
                f"names {record['fine_tuned_model']}, but the server folder that held it "
                f"({runs_dir() / folder}) is gone"
            )
        else:
            return record
    if record.get("provider") == "openai":
        raise RuntimeError(
            f"{path} records a fine-tuning job on OpenAI ({record.get('fine_tuned_model')}) "
            f"but {why}.\nFix: run notebook 04 again with the same settings: it finds that "
            "job instead of paying for another, and records it anew. (Notebook 05 does not "
            "put a local model in the place of a paid one.)"
        )
    aside = path.with_name(f"{path.name}.unusable-{time.strftime('%Y%m%d-%H%M%S')}")
    path.replace(aside)
    on_event(f"{path} {why}; it is kept as {aside.name}, and the API job runs again.")
    record = run_api_job(on_event)
    save_api_result(record)
    return record


def api_model_server(record: dict[str, Any]) -> CourseServer | None:
    """The server that holds the model of notebook 04's `record`: None when the job ran on
    OpenAI itself, the workshop's shared server when it ran there, else its private server,
    started again on the same data folder.
    """
    from ftlab.course_server import (
        SERVER_URL_VARIABLE,
        course_server,
        private_server,
        shared_server_url,
    )

    if record["server_data_dir"] is None:
        return None
    trained_on, now = record.get("server_url"), shared_server_url()
    if trained_on is None:
        return _holding(private_server(runs_dir() / record["server_data_dir"]), record)
    if trained_on != now:
        raise RuntimeError(
            f"Notebook 04 trained {record['fine_tuned_model']} on the shared server at "
            f"{trained_on}, but {SERVER_URL_VARIABLE} is "
            f"{'not set' if now is None else now} now. Set {SERVER_URL_VARIABLE} and "
            f"FTLAB_SERVER_KEY as they were for notebook 04, or delete {api_result_path()} "
            "to train the model again."
        )
    return _holding(course_server(runs_dir() / record["server_data_dir"]), record)


def _holding(server: CourseServer, record: dict[str, Any]) -> CourseServer:
    """`server`, after checking that it still has the record's model (else a clear error)."""
    from openai import NotFoundError, OpenAI

    try:
        OpenAI(base_url=server.base_url, api_key=server.api_key).models.retrieve(
            record["fine_tuned_model"]
        )
    except NotFoundError:
        if not server.shared:
            server.stop()
        raise RuntimeError(
            f"The server at {server.base_url} no longer has {record['fine_tuned_model']}, the "
            f"model notebook 04 saved in {api_result_path()} (it was deleted, or the server's "
            f"data folder was replaced). Fix: delete {api_result_path()} and run this notebook "
            "again, which trains the model again, or run notebook 04 again."
        ) from None
    return server


def api_answers(
    client: Any,
    model: str,
    conversations: list[list[dict]],
    at_once: int = API_CONCURRENCY,
    max_tokens: int = MAX_ANSWER_TOKENS,
) -> list[str]:
    """Greedy answers from an OpenAI-compatible endpoint, in the order of `conversations`,
    at most `max_tokens` long (by default the same cap as `ftlab.evaluation.evaluate`).

    One request per conversation, `at_once` of them in flight: the local server answers
    requests that arrive together in one batch, and a hosted API runs them side by side.
    """

    def answer(messages: list[dict]) -> str:
        response = client.chat.completions.create(
            model=model, messages=messages, temperature=0, max_completion_tokens=max_tokens
        )
        return response.choices[0].message.content or ""

    with ThreadPoolExecutor(max_workers=max(1, at_once)) as pool:
        return list(pool.map(answer, conversations))


def parse_results_csv(raw: bytes) -> list[dict[str, float]]:
    """A fine-tuning job's result file as rows of numbers, one per logged step.

    OpenAI serves this CSV base64-encoded, the local server as plain text; both are
    read here. Empty cells (a step without a validation loss) are left out of the row.
    """
    text = raw.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
    if not text.startswith("step"):
        try:
            packed = "".join(text.split())  # base64 may come wrapped in lines
            text = base64.b64decode(packed, validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            text = ""
    if not text.startswith("step"):
        raise ValueError(
            f"The result file is not the CSV a fine-tuning job writes (it starts {raw[:40]!r}).\n"
            "Fix: pass the id from job.result_files of a job that succeeded."
        )
    return [
        {key: float(value) for key, value in row.items() if value}
        for row in csv.DictReader(io.StringIO(text))
    ]


def job_results(client: Any, job: Any) -> list[dict[str, float]]:
    """A finished job's metrics (`step`, `train_loss`, `valid_loss`, ...) from its result file."""
    if not job.result_files:
        raise ValueError(f"Job {job.id} has no result file yet (status {job.status!r}).")
    return parse_results_csv(client.files.content(job.result_files[0]).content)


def api_train_file() -> Path:
    """The first API_TRAIN_SUBSET lines of the train split (already shuffled, so a fair sample).

    In quick mode (`quick_mode()`), the first QUICK_API_SUBSET lines.
    """
    from ftlab.jsonl import write_jsonl
    from ftlab.support import load_examples

    size = QUICK_API_SUBSET if quick_mode() else API_TRAIN_SUBSET
    subset = load_examples(support_split("train"))[:size]
    return write_jsonl(course_run_dir(API_RUN) / f"train_first_{len(subset)}.jsonl", subset)


def api_job_settings(model: str, hyperparameters: dict[str, Any] | None = None) -> dict:
    """The `jobs.create` settings of notebook 04's job, other than its files and metadata."""
    chosen = API_HYPERPARAMETERS if hyperparameters is None else hyperparameters
    return {
        "model": model,
        "suffix": API_SUFFIX,
        "method": {"type": "supervised", "supervised": {"hyperparameters": chosen}},
        "seed": 0,
    }


def upload(client: Any, path: Path) -> Any:
    """Upload `path` for fine-tuning; returns the file object."""
    with open(path, "rb") as handle:
        return client.files.create(file=handle, purpose="fine-tune")


def run_api_job(on_event: Callable[[str], None] = print, poll_s: float = 2.0) -> dict[str, Any]:
    """Notebook 04's local workflow, compactly: upload, fine-tune, wait, score the `ft:` model."""
    from openai import OpenAI

    from ftlab.course_server import course_server
    from ftlab.support import gold_answer, load_examples, prompt_messages, score

    with course_server(runs_dir() / API_SERVER) as server:
        client = OpenAI(base_url=server.base_url, api_key=server.api_key)
        files = [api_train_file(), support_split("valid")]
        settings = api_job_settings(DEFAULT_MODEL)
        recipe = job_recipe(files, settings)
        job = reusable_job(client, DEFAULT_MODEL, API_RUN, recipe)  # notebook 04's, say
        if job is None:
            training, validation = (upload(client, path) for path in files)
            job = client.fine_tuning.jobs.create(
                training_file=training.id,
                validation_file=validation.id,
                metadata={RUN_KEY: API_RUN, RECIPE_KEY: recipe},
                **settings,
            )
        where = "the shared server" if server.shared else "a local server"
        on_event(f"Fine-tuning job {job.id} on {where}; following its events.")
        job = follow(client, job.id, every=poll_s, say=on_event)
        if job.status != "succeeded":
            raise RuntimeError(
                f"Fine-tuning job {job.id} ended {job.status}: {job.error}. {server.log_hint}"
            )
        examples = load_examples(support_split("test"))
        started = time.perf_counter()
        answers = api_answers(client, job.fine_tuned_model, [prompt_messages(e) for e in examples])
        seconds = time.perf_counter() - started
        scores = score(answers, [gold_answer(e) for e in examples])
        trained_on = len(load_examples(files[0]))
        return api_record(client, job, server, scores, answers, trained_on, seconds)
