"""Real fine-tuning through the local server with the official SDK: the whole workflow,
key isolation, cancellation, and a SIGKILL of the server in the middle of a job."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import threading
import time

import httpx
import openai
import pytest
from server_helpers import (
    BASE,
    alive,
    client,
    messages,
    runner_pids,
    start,
    support_examples,
    upload,
    wait_for,
)

from ftlab.api_jobs import (
    RECIPE_KEY,
    RUN_KEY,
    follow,
    job_recipe,
    reusable_job,
    unfinished_job,
)
from ftlab.course import job_results
from ftlab.support import parse_answer, prompt_messages
from ftlab.training.checkpoints import TRAINER_STATE

pytestmark = pytest.mark.slow
# 24 examples, batch 8: 3 steps an epoch.
SMALL = {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 1.0}


@pytest.fixture(scope="module")
def workshop(tmp_path_factory):
    """A server in workshop mode with two learners, ana and ben."""
    folder = tmp_path_factory.mktemp("workshop")
    keys = folder / "keys.txt"
    keys.write_text("# name key\nana sk-ana-0001\nben sk-ben-0002\n")
    with start(folder / "data", keys=keys) as handle:
        yield handle


@pytest.fixture(scope="module")
def ana(workshop):
    return client(workshop, "sk-ana-0001")


@pytest.fixture(scope="module")
def ben(workshop):
    return client(workshop, "sk-ben-0002")


@pytest.fixture(scope="module")
def finished_job(ana):
    """The seed article's workflow: upload, create, poll; run once for the module."""
    training = upload(ana, support_examples("train", 24))
    validation = upload(ana, support_examples("valid", 10), "valid.jsonl")
    job = ana.fine_tuning.jobs.create(
        model=BASE,
        training_file=training,
        validation_file=validation,
        suffix="support",
        hyperparameters=SMALL,
        metadata={RUN_KEY: "done", RECIPE_KEY: "recipe-1"},
    )
    assert job.status == "validating_files" and job.fine_tuned_model is None
    return wait_for(ana, job.id)


def test_workflow_produces_a_model_that_answers_in_json(ana, finished_job):
    job = finished_job
    assert job.status == "succeeded", job.error
    assert re.fullmatch(rf"ft:{BASE}:ana:support:[a-z0-9]{{8}}", job.fine_tuned_model)
    assert job.hyperparameters.n_epochs == 2 and job.trained_tokens > 0
    assert job.finished_at >= job.created_at
    # What a notebook run again uses instead of training the same thing twice:
    assert reusable_job(ana, BASE, "done", "recipe-1").id == job.id
    assert reusable_job(ana, BASE, "done").id == job.id
    assert reusable_job(ana, BASE, "done", "recipe-2") is None  # files or settings changed
    assert reusable_job(ana, "HuggingFaceTB/other-model", "done", "recipe-1") is None
    # jobs.list filters on metadata, as OpenAI's does.
    assert [j.id for j in ana.fine_tuning.jobs.list(metadata={RUN_KEY: "done"})] == [job.id]
    both = {RUN_KEY: "done", RECIPE_KEY: "recipe-1"}
    assert [j.id for j in ana.fine_tuning.jobs.list(metadata=both)] == [job.id]
    assert list(ana.fine_tuning.jobs.list(metadata={RUN_KEY: "other"})) == []

    log = messages(ana, job.id)
    expected = [
        f"Created fine-tuning job: {job.id}",
        f"Validating training file: {job.training_file} and validation file: {job.validation_file}",
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
    ]
    assert log[:4] == expected
    assert log[-2:] == [
        f"New fine-tuned model created: {job.fine_tuned_model}",
        "The job has successfully completed",
    ]
    metrics = [
        e for e in ana.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"
    ]
    # One event per step, newest first; the epochs' last steps (3 and 6) carry validation.
    assert [e.data["step"] for e in metrics] == list(range(6, 0, -1))
    validated = {e.data["step"]: e.message for e in metrics if "valid_loss" in e.data}
    assert list(validated) == [6, 3]
    assert all("training loss=" in m and ", validation loss=" in m for m in validated.values())

    examples = support_examples("test", 3)
    for example in examples:
        reply = ana.chat.completions.create(
            model=job.fine_tuned_model,
            temperature=0,
            messages=prompt_messages(example),
            max_tokens=40,
        )
        assert reply.model == job.fine_tuned_model
        assert parse_answer(reply.choices[0].message.content) is not None, reply


def test_follow_prints_the_events_and_returns_the_finished_job(ana, finished_job):
    said: list[str] = []
    job = follow(ana, finished_job.id, every=0.1, loss_every=1000, say=said.append)
    assert job.status == "succeeded" and job.fine_tuned_model == finished_job.fine_tuned_model
    assert any("Fine-tuning job started" in line for line in said)
    assert said[-1].endswith("The job has successfully completed")
    losses = [line for line in said if "loss=" in line]
    assert losses and all("Step 6/6:" in line for line in losses)  # only the last step's


def test_checkpoints_results_file_and_models(ana, finished_job):
    job = finished_job
    checkpoints = list(ana.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in checkpoints] == [6, 3]  # newest first
    assert checkpoints[1].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-3"
    assert checkpoints[1].metrics.train_loss is not None
    reply = ana.chat.completions.create(
        model=checkpoints[1].fine_tuned_model_checkpoint,
        temperature=0,
        max_tokens=5,
        messages=prompt_messages(support_examples("test", 1)[0]),
    )
    assert reply.choices[0].message.content

    (results,) = job.result_files
    assert ana.files.retrieve(results).purpose == "fine-tune-results"
    rows = list(csv.DictReader(io.StringIO(ana.files.content(results).text)))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert set(rows[0]) == {
        "step",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
    }
    numbers = job_results(ana, job)  # what notebook 04 plots
    assert [r["step"] for r in numbers] == [float(step) for step in range(1, 7)]
    assert all(r["train_loss"] > 0 for r in numbers)
    assert job.fine_tuned_model in [m.id for m in ana.models.list()]


def test_a_finished_job_keeps_only_what_its_models_need(ana, workshop, finished_job):
    job_dir = workshop.data_dir / "jobs" / finished_job.id
    deadline = time.monotonic() + 60  # tidied once the training child has ended
    while (job_dir / "train.jsonl").exists():
        assert time.monotonic() < deadline, "the finished job's data copy was kept"
        time.sleep(0.2)
    assert not (job_dir / "valid.jsonl").exists() and not (job_dir / "out" / "adapter").exists()
    kept = sorted((job_dir / "out" / "checkpoints").iterdir())
    assert [folder.name for folder in kept] == ["epoch-1", "epoch-2"]
    for folder in kept:  # usable as models, no longer resumable
        assert (folder / "adapter_model.safetensors").is_file()
        assert not (folder / TRAINER_STATE).exists()
    reply = ana.chat.completions.create(
        model=f"{finished_job.fine_tuned_model}:ckpt-step-3",
        max_tokens=3,
        messages=[{"role": "user", "content": "x"}],
    )
    assert reply.choices[0].message.content is not None


def test_a_checkpoint_model_can_be_retrieved_like_the_model(ana, ben, finished_job):
    name = f"{finished_job.fine_tuned_model}:ckpt-step-3"
    checkpoint = ana.models.retrieve(name)  # chat takes this name too
    model = ana.models.retrieve(finished_job.fine_tuned_model)
    assert (checkpoint.id, checkpoint.object, checkpoint.owned_by) == (name, "model", "org-ana")
    assert model.owned_by == "org-ana" == finished_job.organization_id
    assert 0 < checkpoint.created <= model.created
    with pytest.raises(openai.NotFoundError):
        ben.models.retrieve(name)


def test_keys_keep_learners_apart(ana, ben, workshop, finished_job):
    job = finished_job
    with pytest.raises(openai.AuthenticationError):
        client(workshop, "sk-wrong").models.list()
    with pytest.raises(openai.NotFoundError):
        ben.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        ben.files.retrieve(job.training_file)
    with pytest.raises(openai.BadRequestError):
        ben.fine_tuning.jobs.create(model=BASE, training_file=job.training_file)
    assert job.id not in [j.id for j in ben.fine_tuning.jobs.list()]
    assert job.training_file not in [f.id for f in ben.files.list()]
    assert job.fine_tuned_model not in [m.id for m in ben.models.list()]
    for model in (job.fine_tuned_model, f"{job.fine_tuned_model}:ckpt-step-3"):
        with pytest.raises(openai.NotFoundError):
            ben.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        ben.models.delete(job.fine_tuned_model)
    with pytest.raises(openai.NotFoundError):
        ben.fine_tuning.jobs.checkpoints.list(job.id)
    (results,) = job.result_files
    with pytest.raises(openai.NotFoundError):
        ben.files.content(results)


def test_metadata_can_cap_a_jobs_steps_for_a_quick_demo(ben):
    job = ben.fine_tuning.jobs.create(
        model=BASE,
        training_file=upload(ben, support_examples("train", 24)),
        hyperparameters=SMALL,
        metadata={"ftlab_max_steps": "2"},
    )
    said: list[str] = []  # followed live, from validating_files to the end
    done = follow(ben, job.id, every=0.2, loss_every=1, say=said.append)
    assert done.status == "succeeded", done.error
    assert said[0].endswith(f"Created fine-tuning job: {job.id}")
    assert any("Step 1/2: training loss=" in line for line in said)
    assert said[-1].endswith("The job has successfully completed")
    events = [line for line in said if "... still" not in line]  # (a slow machine's notes)
    assert len(events) == len(set(events)) == len(messages(ben, job.id))  # each event once
    with pytest.raises(openai.BadRequestError) as caught:
        ben.fine_tuning.jobs.create(
            model=BASE, training_file=job.training_file, metadata={"ftlab_max_steps": "many"}
        )
    assert caught.value.body["param"] == "metadata.ftlab_max_steps"
    for odd in ("²", "10000000000000000000000000"):  # a digit to isdigit(); past SQLite's ints
        with pytest.raises(openai.BadRequestError, match="from 1 to 1,000,000") as caught:
            ben.fine_tuning.jobs.create(
                model=BASE, training_file=job.training_file, metadata={"ftlab_max_steps": odd}
            )
    with pytest.raises(openai.BadRequestError, match="Did you mean it") as caught:
        ben.fine_tuning.jobs.create(  # a typo would train the whole job
            model=BASE, training_file=job.training_file, metadata={"ftlab_max_step": "2"}
        )
    assert "'ftlab_max_steps'" in caught.value.body["message"]


def test_cancel_stops_training_promptly(ana, workshop):
    job = ana.fine_tuning.jobs.create(
        model=BASE,
        training_file=upload(ana, support_examples("train", 24)),
        hyperparameters={**SMALL, "n_epochs": 20},
        metadata={RUN_KEY: "long"},
    )
    deadline = time.monotonic() + 240
    while not any(e.type == "metrics" for e in ana.fine_tuning.jobs.list_events(job.id)):
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.3)
    assert reusable_job(ana, BASE, "long").id == job.id  # what a restarted notebook follows
    assert reusable_job(ana, BASE, "other") is None
    assert unfinished_job(ana, BASE, "long").id == job.id  # what older copies of notebook 04 call
    waiting = ana.fine_tuning.jobs.create(  # one slot: it waits behind the long one
        model=BASE, training_file=upload(ana, support_examples("train", 10))
    )
    assert wait_for(ana, waiting.id, statuses=("queued",)).status == "queued"
    job_dir = workshop.data_dir / "jobs" / waiting.id
    assert (job_dir / "train.jsonl").is_file()
    assert ana.fine_tuning.jobs.cancel(waiting.id).status == "cancelled"
    assert not (job_dir / "train.jsonl").exists()  # its copy of the data is gone at once
    (runner,) = runner_pids(workshop.process.pid)
    cancelled = ana.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    deadline = time.monotonic() + 30
    while alive(runner):
        assert time.monotonic() < deadline, "the training process kept running after cancel"
        time.sleep(0.2)
    final = ana.fine_tuning.jobs.retrieve(job.id)
    assert final.status == "cancelled" and final.fine_tuned_model is None
    assert reusable_job(ana, BASE, "long") is None  # a cancelled job is not reused
    assert "Fine-tuning job cancelled" in messages(ana, job.id)


def test_deleted_model_is_gone_but_its_checkpoints_still_answer(ana, finished_job):
    """Kept after every other test of `finished_job` (pytest runs a file in order): it
    deletes the model that they use, and one more training job would cost a minute."""
    name = finished_job.fine_tuned_model
    assert ana.models.delete(name).deleted
    assert reusable_job(ana, BASE, "done") is None, "its model is gone: train again"
    with pytest.raises(openai.NotFoundError):
        ana.chat.completions.create(model=name, messages=[{"role": "user", "content": "x"}])
    assert name not in [m.id for m in ana.models.list()]
    checkpoint = f"{name}:ckpt-step-3"
    reply = ana.chat.completions.create(
        model=checkpoint, max_tokens=3, messages=[{"role": "user", "content": "x"}]
    )
    assert reply.model == checkpoint and reply.choices[0].message.content is not None
    with pytest.raises(openai.BadRequestError, match="is a checkpoint of job ftjob-"):
        ana.models.delete(checkpoint)  # retrievable, so not "does not exist"


@pytest.mark.parametrize("how", ["sigkill", "ctrl-c", "service stop"])
def test_a_server_stopped_mid_job_then_restarted_resumes_it(tmp_path, how):
    """SIGKILL to the server alone (no chance to clean up), or what a terminal's Ctrl-C and a
    service manager's stop send: SIGINT or SIGTERM to the server and its training child."""
    data = tmp_path / "data"
    server = start(data)
    api = client(server)
    training = upload(api, support_examples("train", 12))  # batch 4: 3 steps an epoch
    job = api.fine_tuning.jobs.create(
        model=BASE, training_file=training, hyperparameters={**SMALL, "batch_size": 4}
    )
    deadline = time.monotonic() + 240
    while not list(api.fine_tuning.jobs.checkpoints.list(job.id)):
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    before = messages(api, job.id)
    runners = runner_pids(server.process.pid)
    if how == "sigkill":
        server.process.kill()
    else:  # the server leads its own process group (start_new_session)
        # A chat in flight: uvicorn waits for it before the app shuts down, which gave the
        # worker time to take a training child killed by the signal for a failed job.
        chat = threading.Thread(
            target=lambda: httpx.post(
                f"{server.base_url}/chat/completions",
                json={
                    "model": BASE,
                    "max_tokens": 2048,
                    "messages": [{"role": "user", "content": "Write a long story about a fox."}],
                },
                timeout=60,
            )
        )
        chat.start()
        time.sleep(2.0)
        os.killpg(server.process.pid, signal.SIGINT if how == "ctrl-c" else signal.SIGTERM)
        chat.join()
    server.process.wait()
    log = server.log_path.read_text()
    assert f"{job.id} of " in log and " started (1 running)" in log  # the instructor's view
    if how != "sigkill":  # (a killed server says nothing)
        assert f"stopping: {job.id} will resume at the next start" in log
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in runners):
        assert time.monotonic() < deadline, "the training process outlived the server"
        time.sleep(0.1)

    with start(data) as restarted:
        api = client(restarted)
        assert api.files.retrieve(training).bytes > 0
        assert api.fine_tuning.jobs.retrieve(job.id).status in ("queued", "running")
        done = wait_for(api, job.id)
        assert done.status == "succeeded", done.error
        after = messages(api, job.id)
        assert after[: len(before)] == before
        assert not any("stopped unexpectedly" in message for message in after)
        log = restarted.log_path.read_text()
        assert " resumed (1 running)" in log and f"{job.id} of " in log
        assert f"succeeded: {done.fine_tuned_model}" in log
        if how == "sigkill":  # a stopped server may finish a step or two first
            assert "Job interrupted by a server restart; resuming from step 3" in after
        steps = [c.step_number for c in api.fine_tuning.jobs.checkpoints.list(job.id)]
        assert steps == [6, 3]
        reply = api.chat.completions.create(
            model=done.fine_tuned_model, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content is not None


def test_a_job_recipe_changes_with_the_files_bytes_and_settings_not_their_order(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": []}\n')
    settings = {"model": BASE, "seed": 0, "method": {"type": "supervised"}}
    recipe = job_recipe([data], settings)
    assert recipe == job_recipe([data], dict(reversed(settings.items())))
    assert recipe != job_recipe([data], {**settings, "seed": 1})
    data.write_text('{"messages": [] }\n')
    assert recipe != job_recipe([data], settings)
