"""How a finished training run becomes a model: once only, never over a cancel, and
findable again when the server's data folder moves or the server starts elsewhere.

The training child is faked by writing its progress lines; only the chat tests load the
real base model (with an untrained LoRA adapter, made once for the module).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ftlab.models import DEFAULT_MODEL
from ftlab.server import job_runner
from ftlab.server.app import create_app, job_object
from ftlab.server.auth import Authenticator
from ftlab.server.inference import Inference
from ftlab.server.store import Store, now
from ftlab.server.worker import (
    Worker,
    model_name,
    pace,
    resolve_hyperparameters,
    resumed_clock,
)

HYPERPARAMETERS = {"n_epochs": 1, "batch_size": 1, "learning_rate_multiplier": 1.0}
HELLO = [{"role": "user", "content": "Hi"}]


def running_job(store: Store, job_id: str = "ftjob-finishing00000000abcd1234") -> dict[str, Any]:
    """A job the worker believes a training child is running."""
    job = {
        "id": job_id,
        "owner": "local",
        "org": "local",
        "created_at": 1,
        "model": DEFAULT_MODEL,
        "status": "running",
        "training_file": "file-x",
        "seed": 0,
        "hyperparameters": HYPERPARAMETERS,
    }
    store.add_job(job)
    return store.get_job(job_id)


def write_progress(store: Store, job_id: str, *records: dict[str, Any]) -> Path:
    """What the training child appends to the job's progress file."""
    path = store.job_dir(job_id) / job_runner.PROGRESS
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    return path


def fake_adapter(folder: Path) -> Path:
    """An adapter folder for tests that never load it."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    return folder


def result(adapter: Path) -> dict[str, Any]:
    return {"kind": "result", "adapter_dir": str(adapter), "trained_tokens": 10}


def http(store: Store) -> TestClient:
    """The app on `store`; the worker thread is not started (its lifespan never runs)."""
    app = create_app(
        store,
        auth=Authenticator(),
        worker=Worker(store),
        inference=Inference(store),
        max_upload_mb=1,
    )
    return TestClient(app)


def chat(client: TestClient, model: str):
    return client.post(
        "/v1/chat/completions", json={"model": model, "messages": HELLO, "max_tokens": 1}
    )


def event_messages(store: Store, job_id: str) -> list[str]:
    return [e["message"] for e in store.all_events(job_id)]


# ---- a cancel while the job finishes -------------------------------------------------------


def test_a_cancel_that_arrives_while_the_job_finishes_stays_cancelled(tmp_path, monkeypatch):
    store = Store(tmp_path / "data")
    job = running_job(store)
    progress = write_progress(store, job["id"], result(fake_adapter(tmp_path / "adapter")))
    client = http(store)
    copy = shutil.copytree
    answers = []

    def copy_then_cancel(*args: Any, **kwargs: Any) -> Any:
        copied = copy(*args, **kwargs)  # the worker is now inside the completion
        answers.append(client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel"))
        return copied

    monkeypatch.setattr("ftlab.server.worker.shutil.copytree", copy_then_cancel)
    Worker(store).recover()  # applies the result line
    monkeypatch.undo()

    (answer,) = answers
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled", answer.text
    final = store.get_job(job["id"])
    assert (final["status"], final["fine_tuned_model"]) == ("cancelled", None)
    assert final["progress_offset"] == progress.stat().st_size  # a restart applies nothing
    assert store.list_models("local") == []
    assert list(store.models_dir.iterdir()) == []  # the adapter's copy is gone too
    results = store.list_files("local", "fine-tune-results", None, 10, newest_first=True)
    assert results.rows == []
    messages = event_messages(store, job["id"])
    assert "Fine-tuning job cancelled" in messages
    assert not any(m.startswith("New fine-tuned model created") for m in messages)
    assert "The job has successfully completed" not in messages
    assert model_name(job) not in [m["id"] for m in client.get("/v1/models").json()["data"]]


def test_a_finished_job_cannot_be_cancelled(tmp_path):
    store = Store(tmp_path / "data")
    job = running_job(store)
    write_progress(store, job["id"], result(fake_adapter(tmp_path / "adapter")))
    Worker(store).recover()
    assert store.get_job(job["id"])["status"] == "succeeded"

    answer = http(store).post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_job_state"
    assert error["message"] == f"Job {job['id']} has already succeeded: it cannot be cancelled."
    assert store.get_job(job["id"])["status"] == "succeeded"
    assert "Fine-tuning job cancelled" not in event_messages(store, job["id"])


def test_a_completion_replayed_after_a_crash_adds_nothing_twice(tmp_path):
    """An older version committed the completion's steps one by one: a SIGKILL between the
    "New fine-tuned model created" commit and the last one left the job running with its
    result line unapplied. The next start applies that line again."""
    store = Store(tmp_path / "data")
    job = running_job(store, "ftjob-replayed0000000000000")
    step = {"kind": "step", "step": 1, "total_steps": 1, "train_loss": 0.5}
    write_progress(store, job["id"], step, result(fake_adapter(tmp_path / "adapter")))
    Worker(store).recover()  # the first start after the child finished: completes the job
    done = store.get_job(job["id"])
    assert done["status"] == "succeeded"

    with store.transaction() as db:  # undo the last commit only
        db.execute("DELETE FROM events WHERE message = 'The job has successfully completed'")
    store.update_job(
        job["id"],
        status="running",
        progress_offset=len(json.dumps(step)) + 1,
        fine_tuned_model=None,
        result_files=[],
        finished_at=None,
    )
    Worker(store).recover()
    replayed = store.get_job(job["id"])
    assert replayed["status"] == "succeeded"
    assert replayed["result_files"] == done["result_files"]
    results = store.list_files("local", "fine-tune-results", None, 10, newest_first=True)
    assert [f["id"] for f in results.rows] == done["result_files"]
    messages = event_messages(store, job["id"])
    assert messages.count(f"New fine-tuned model created: {model_name(done)}") == 1
    assert messages.count("The job has successfully completed") == 1
    assert len(store.list_models("local")) == 1


def test_a_progress_file_cut_short_by_a_power_cut_is_read_on_from_its_end(tmp_path):
    store = Store(tmp_path / "data")
    job = running_job(store, "ftjob-powercut00000000000000")
    first = {"kind": "step", "step": 1, "total_steps": 3, "train_loss": 0.9}
    write_progress(store, job["id"], first)
    path = store.job_dir(job["id"]) / job_runner.PROGRESS
    # The database had read two more lines that the disk never got, and half a third was on it.
    store.update_job(job["id"], progress_offset=path.stat().st_size + 60)
    with open(path, "ab") as handle:
        handle.write(b'{"kind": "st')
    Worker(store).recover()
    size = path.stat().st_size
    assert path.read_bytes().endswith(b'{"kind": "st\n')  # the half line is ended...
    assert store.get_job(job["id"])["progress_offset"] == size  # ...and the offset is the end
    resumed = {"kind": "step", "step": 2, "total_steps": 3, "train_loss": 0.7}
    with open(path, "ab") as handle:  # what the resumed run writes next is read whole
        handle.write((json.dumps(resumed) + "\n").encode())
    store.update_job(job["id"], status="running")  # as when the queue starts it again
    Worker(store)._ingest(job["id"])
    assert "Step 2/3: training loss=0.7000" in event_messages(store, job["id"])


def test_only_the_last_three_checkpoints_are_kept(tmp_path):
    store = Store(tmp_path / "data")
    job = running_job(store, "ftjob-manyepochs000000000000")
    folders = []
    for epoch in range(1, 6):  # a tiny file with "auto" epochs trains many
        folder = store.job_dir(job["id"]) / "out" / "checkpoints" / f"epoch-{epoch}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        folders.append(folder)
        record = {"kind": "checkpoint", "step": 3 * epoch, "checkpoint_dir": str(folder)}
        write_progress(store, job["id"], record)
    Worker(store)._ingest(job["id"])
    assert all(f.exists() for f in folders)  # none goes while the training child may read them
    write_progress(store, job["id"], result(fake_adapter(tmp_path / "adapter")))
    Worker(store)._ingest(job["id"])
    assert store.get_job(job["id"])["status"] == "succeeded"
    kept = store.list_checkpoints(job["id"], None, 10).rows
    assert [c["step_number"] for c in kept] == [15, 12, 9]  # newest first, as listed
    assert [f.exists() for f in folders] == [False, False, True, True, True]
    assert store.last_checkpoint_step(job["id"]) == 15  # what a restart resumes from


def test_a_crash_before_an_event_is_written_leaves_neither_it_nor_its_change(tmp_path, monkeypatch):
    """A checkpoint's row, a new status and the events announcing them are one transaction:
    a crash between them once left a checkpoint (or a cancelled job) whose event never came,
    since the line read again finds the row and adds nothing."""
    store = Store(tmp_path / "data")
    job = running_job(store, "ftjob-eventless000000000000")
    folder = store.job_dir(job["id"]) / "out" / "checkpoints" / "epoch-1"
    folder.mkdir(parents=True)
    write_progress(
        store, job["id"], {"kind": "checkpoint", "step": 3, "checkpoint_dir": str(folder)}
    )

    class Killed(BaseException):
        """The server dies here: no `except Exception` runs (a line that fails to apply is
        skipped, but a killed server applies it at its next start)."""

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Killed

    monkeypatch.setattr(store, "_insert_event", crash)
    with pytest.raises(Killed):
        Worker(store)._ingest(job["id"])
    monkeypatch.setattr(store, "_insert_event", lambda *a, **k: 1 / 0)  # a web request's death
    with pytest.raises(ZeroDivisionError):
        http(store).post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    monkeypatch.undo()
    assert store.list_checkpoints(job["id"], None, 10).rows == []
    assert store.get_job(job["id"])["status"] == "running"

    Worker(store)._ingest(job["id"])  # the next start reads the line again
    Worker(store)._ingest(job["id"])  # and once more: nothing twice
    (checkpoint,) = store.list_checkpoints(job["id"], None, 10).rows
    said = [m for m in event_messages(store, job["id"]) if m.startswith("Checkpoint created")]
    assert said == [f"Checkpoint created at step 3 with Snapshot ID: {checkpoint['model_name']}"]
    assert http(store).post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").status_code == 200
    assert event_messages(store, job["id"]).count("Fine-tuning job cancelled") == 1


def test_an_event_said_once_is_not_said_again(tmp_path):
    store = Store(tmp_path / "data")
    job = running_job(store)
    for _ in range(2):  # as when a restart checks a job's files a second time
        store.add_event(job["id"], "Validating training file: file-x", once=True)
    store.add_event(job["id"], "Validating training file: file-y", once=True)
    assert [m for m in event_messages(store, job["id"]) if m.startswith("Validating")] == [
        "Validating training file: file-x",
        "Validating training file: file-y",
    ]
    assert not store.update_job(job["id"], only_if_status=("queued",), event="no", status="x")
    assert "no" not in event_messages(store, job["id"])  # no change, no event


# ---- what a job trains with ----------------------------------------------------------------


def test_auto_settings_become_what_training_uses_and_the_multiplier_scales_the_rate(tmp_path):
    auto = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
    # OpenAI's rule: 3 epochs, more for a tiny file (10 examples: 10), fewer for a huge one.
    assert resolve_hyperparameters(auto, 10) == {
        "n_epochs": 10,
        "batch_size": 16,  # notebook 03's batch
        "learning_rate_multiplier": 1.0,
    }
    assert resolve_hyperparameters(auto, 1059)["n_epochs"] == 3
    assert resolve_hyperparameters(auto, 30_000)["n_epochs"] == 1
    assert resolve_hyperparameters({"n_epochs": 2}, 10)["n_epochs"] == 2  # a missing key: auto

    store = Store(tmp_path / "data")
    job = running_job(store)
    store.update_job(job["id"], hyperparameters={**HYPERPARAMETERS, "learning_rate_multiplier": 2})
    request = Worker(store)._train_request(store.get_job(job["id"]))
    assert request["lr"] == pytest.approx(2 * 3e-3)  # notebook 03's rate, doubled
    assert (request["epochs"], request["batch_size"]) == (1, 1)


# ---- a data folder that moves ----------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """A real, untrained LoRA adapter of the base model (it answers as the base model)."""
    from peft import LoraConfig, get_peft_model

    from ftlab.models import load_model
    from ftlab.training.checkpoints import save_adapter

    model, _ = load_model(DEFAULT_MODEL, device="cpu")
    lora = LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    return save_adapter(get_peft_model(model, lora), folder, DEFAULT_MODEL)


def test_models_and_checkpoints_answer_after_the_data_folder_moves(tmp_path, monkeypatch, adapter):
    monkeypatch.chdir(tmp_path)
    store = Store(Path("course/data"))  # relative, as `ftlab serve --data-dir data` passes it
    job = running_job(store)
    checkpoint = store.job_dir(job["id"]) / "out" / "checkpoints" / "epoch-1"
    shutil.copytree(adapter, checkpoint)
    write_progress(
        store,
        job["id"],
        {"kind": "checkpoint", "step": 1, "checkpoint_dir": str(checkpoint)},
        result(adapter),
    )
    Worker(store).recover()
    name = store.get_job(job["id"])["fine_tuned_model"]
    assert name == model_name(job)
    with store.transaction() as db:  # recorded inside the data folder, wherever that is
        paths = [
            row[0]
            for row in db.execute("SELECT path FROM models UNION SELECT path FROM checkpoints")
        ]
    assert sorted(paths) == ["jobs/" + job["id"] + "/out/checkpoints/epoch-1", "models/abcd1234"]
    store.close()

    (tmp_path / "moved").mkdir()
    shutil.move("course", "moved/course")  # the learner moved the course folder
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # and started the server from another folder
    client = http(Store(tmp_path / "moved" / "course" / "data"))
    assert client.get(f"/v1/models/{name}").status_code == 200
    for model in (name, f"{name}:ckpt-step-1"):
        answer = chat(client, model)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == model


@pytest.mark.parametrize("recorded", ["absolute", "relative to the old working directory"])
def test_paths_recorded_by_older_versions_are_found_in_the_moved_folder(
    tmp_path, monkeypatch, recorded
):
    """Older versions recorded folders as the server was given them. Parents named like the
    data folder's own folders must not confuse the lookup."""
    store = Store(tmp_path / "jobs" / "models" / "data")
    job_id = "ftjob-oldrows0000000000abcd1234"
    model = store.models_dir / "abcd1234"
    checkpoint = store.job_dir(job_id) / "out" / "checkpoints" / "epoch-3"
    for folder in (model, checkpoint):
        folder.mkdir(parents=True)
    old = Path("/gone/models/data") if recorded == "absolute" else Path("data")
    monkeypatch.chdir(tmp_path)  # where `data/...` does not exist
    with store.transaction() as db:
        db.execute(
            "INSERT INTO models (id, owner, org, job_id, created_at, path) "
            "VALUES ('ft:m', 'local', 'local', ?, 1, ?)",
            (job_id, str(old / "models" / "abcd1234")),
        )
        db.execute(
            "INSERT INTO checkpoints (id, job_id, owner, created_at, model_name, step_number, "
            "metrics, path) VALUES ('ftckpt_1', ?, 'local', 1, 'ft:m:ckpt-step-3', 3, '{}', ?)",
            (job_id, str(old / "jobs" / job_id / "out" / "checkpoints" / "epoch-3")),
        )
    inference = Inference(store)
    assert inference.source("local", "ft:m") == str(model)
    assert inference.source("local", "ft:m:ckpt-step-3") == str(checkpoint)


def test_a_model_whose_folder_is_missing_says_which_folder(tmp_path):
    store = Store(tmp_path / "data")
    job = running_job(store)
    write_progress(store, job["id"], result(fake_adapter(tmp_path / "adapter")))
    Worker(store).recover()
    name = store.get_job(job["id"])["fine_tuned_model"]
    folder = store.models_dir / job["id"][-8:]
    shutil.rmtree(folder)

    client = http(store)
    assert client.get(f"/v1/models/{name}").status_code == 200  # it is still recorded
    answer = chat(client, name)
    assert answer.status_code == 404, answer.text  # a 5xx would make the SDK retry
    error = answer.json()["error"]
    assert (error["code"], error["param"]) == ("model_files_missing", "model")
    assert f"there is no folder {folder}." in error["message"]
    assert "does not exist" not in error["message"]
    assert "fine-tune it again" in error["message"]


# ---- a job resumed after a restart ---------------------------------------------------------


def test_a_resumed_job_is_timed_without_the_hours_the_server_was_down(tmp_path, monkeypatch):
    restarted = now()  # hours later; the run resumes from its checkpoint at step 6
    monkeypatch.setattr("ftlab.server.app.now", lambda: restarted)  # no tick between two reads
    store = Store(tmp_path / "data")
    job_id = running_job(store)["id"]
    store.update_job(job_id, started_at=1_000, step=10, total_steps=20)
    for step in range(1, 11):  # 10 s a step, the times the child logged them
        data = {"step": step}
        store.add_event(job_id, f"Step {step}/20", type="metrics", data=data, at=1_000 + 10 * step)
        if step == 5:  # an evaluation logs the same step again, later
            store.add_event(job_id, "Step 5/20: validation", type="metrics", data=data, at=1_057)
    assert pace(store.metrics_timeline(job_id)) == 10.0

    clock = resumed_clock(pace(store.metrics_timeline(job_id)), resume_step=6, at=restarted)
    assert clock == {"started_at": restarted - 60, "step": 6}
    store.update_job(job_id, **clock)
    estimate = job_object(store.get_job(job_id))["estimated_finish"] - restarted
    assert estimate == 140  # 14 steps to go at 10 s each

    # Restarted again after one step of the resumed run: the pace is still the last known.
    store.add_event(job_id, "Step 7/20", type="metrics", data={"step": 7}, at=restarted + 10)
    assert pace(store.metrics_timeline(job_id)) == 10.0
    assert resumed_clock(None, resume_step=0, at=restarted) == {"started_at": restarted, "step": 0}


def test_progress_read_after_a_restart_keeps_the_time_it_was_logged(tmp_path):
    store = Store(tmp_path / "data")
    job = running_job(store)
    step = {"kind": "step", "step": 1, "total_steps": 4, "train_loss": 0.5, "at": 1_234}
    write_progress(store, job["id"], step)
    Worker(store).recover()
    assert store.metrics_timeline(job["id"]) == [(1, 1_234)]


def test_steps_a_resumed_run_repeats_after_a_crash_are_shown_once(tmp_path):
    store = Store(tmp_path / "data")
    job = running_job(store, "ftjob-repeated0000000000000")

    def step(number: int, loss: float, **more) -> dict[str, Any]:
        return {"kind": "step", "step": number, "total_steps": 4, "train_loss": loss, **more}

    # The first run logged steps 1-3 (its epoch checkpoint is at 2) and then was killed.
    write_progress(store, job["id"], step(1, 0.9), step(2, 0.8, valid_loss=0.85), step(3, 0.7))
    Worker(store)._ingest(job["id"])
    # Resumed from step 2's checkpoint (a restart sets the job's step back to it, as
    # `resumed_clock` does), the run does step 3 again, then goes on.
    store.update_job(job["id"], step=2)
    write_progress(store, job["id"], step(3, 0.7), step(4, 0.6, valid_loss=0.65))
    Worker(store)._ingest(job["id"])
    metrics = [e for e in store.all_events(job["id"]) if e["type"] == "metrics"]
    assert [e["data"]["step"] for e in metrics] == [1, 2, 3, 4]
    shown = event_messages(store, job["id"])
    assert "Step 2/4: training loss=0.8000, validation loss=0.8500" in shown
    assert shown.count("Step 3/4: training loss=0.7000") == 1
