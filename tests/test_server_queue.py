"""The job queue on a shared server: several jobs side by side, sharing the cores, and
learners taking turns, so a learner's second job waits behind another learner's first."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_helpers import BASE, client, start, support_examples, upload, wait_for

from ftlab import cli
from ftlab.models import available_cores, sensible_threads
from ftlab.server import job_runner
from ftlab.server.store import Store, now
from ftlab.server.worker import RunningJob, Worker, next_job, threads_per_job


def test_next_job_prefers_learners_with_nothing_running():
    queued = [
        {"id": "ftjob-1", "owner": "ana"},
        {"id": "ftjob-2", "owner": "ana"},
        {"id": "ftjob-3", "owner": "ben"},
        {"id": "ftjob-4", "owner": "cy"},
    ]
    # Nobody has started a job yet: the oldest job.
    assert next_job(queued, running_owners=[])["id"] == "ftjob-1"
    assert next_job(queued, running_owners=["ana"])["id"] == "ftjob-3"
    assert next_job(queued, running_owners=["ana", "ben"])["id"] == "ftjob-4"
    # Everyone has one running: the learner whose last job started longest ago.
    started = {"ana": 300, "ben": 200, "cy": 100}
    assert next_job(queued, ["ana", "ben", "cy"], started)["id"] == "ftjob-4"
    assert next_job(queued, ["ana", "ben", "cy", "cy"], started)["id"] == "ftjob-3"


def test_next_job_takes_turns_by_learner_when_nothing_runs():
    queued = [
        {"id": "ftjob-1", "owner": "ana"},
        {"id": "ftjob-2", "owner": "ben"},
        {"id": "ftjob-3", "owner": "cy"},
    ]
    # A learner who never started a job goes first; among them, the oldest job.
    assert next_job(queued, [], {"ana": 100})["id"] == "ftjob-2"
    assert next_job(queued, [], {"ana": 100, "ben": 50})["id"] == "ftjob-3"
    # Everyone has started one: the learner whose last job started longest ago.
    assert next_job(queued, [], {"ana": 100, "ben": 50, "cy": 70})["id"] == "ftjob-2"
    assert next_job(queued, [], {"ana": 10, "ben": 50, "cy": 50})["id"] == "ftjob-1"


def jobs_of(folder: Path, status: str, **counts: int) -> Store:
    """A store with jobs in `status`, created learner by learner in the order given:
    `ana=2, ben=1` makes ftjob-ana1, ftjob-ana2, then ftjob-ben1."""
    store = Store(folder)
    for owner, count in counts.items():
        for number in range(1, count + 1):
            store.add_job(
                {
                    "id": f"ftjob-{owner}{number}",
                    "owner": owner,
                    "org": owner,
                    "created_at": 1,
                    "model": BASE,
                    "status": status,
                    "training_file": "file-x",
                    "seed": 0,
                    "hyperparameters": {},
                }
            )
    return store


def test_one_slot_takes_turns_so_a_learners_second_job_waits(tmp_path, monkeypatch):
    """The default, one job at a time: ana queues two jobs, then ben one. ben's runs
    between ana's two, not after both."""
    store = jobs_of(tmp_path, "queued", ana=2, ben=1)
    worker = Worker(store)
    started = []

    def start(job: dict) -> None:  # what `Worker._start` records, without a training child
        store.update_job(job["id"], status="running", started_at=now())
        worker._running[job["id"]] = RunningJob(process=None, owner=job["owner"])
        started.append(job["id"])

    monkeypatch.setattr(worker, "_start", start)
    for _ in range(3):
        worker._start_queued()
        (running,) = worker._running  # one slot: one job at a time
        store.update_job(running, status="succeeded", finished_at=now())
        del worker._running[running]
    assert started == ["ftjob-ana1", "ftjob-ben1", "ftjob-ana2"]


def test_file_checks_take_turns_by_learner(tmp_path, monkeypatch):
    """ana creates three jobs on a large file (each check reads and tokenizes all of it),
    then ben one: ben's is checked second, not after all of ana's."""
    store = jobs_of(tmp_path, "validating_files", ana=3, ben=1)
    worker = Worker(store)
    checked = []

    def validate(job: dict) -> None:  # what `Worker._validate` ends with, without the check
        checked.append(job["id"])
        store.update_job(job["id"], status="queued")

    monkeypatch.setattr(worker, "_validate", validate)
    worker.check_files()
    assert checked == ["ftjob-ana1", "ftjob-ben1", "ftjob-ana2", "ftjob-ana3"]


def test_threads_are_shared_out_only_between_parallel_jobs(monkeypatch):
    monkeypatch.delenv("FTLAB_THREADS", raising=False)
    assert threads_per_job(1) is None  # a lone job picks its own count, as `ftlab train` does
    assert threads_per_job(2) == max(1, available_cores() // 2)
    assert threads_per_job(10 * available_cores()) == 1
    monkeypatch.setenv("FTLAB_THREADS", "3")
    assert threads_per_job(2) is None  # the administrator's choice applies to every job
    assert sensible_threads() == 3


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_a_bad_thread_count_is_refused_everywhere(monkeypatch, tmp_path, capsys, value):
    monkeypatch.setenv("FTLAB_THREADS", value)
    for choose in (sensible_threads, lambda: threads_per_job(2)):
        with pytest.raises(ValueError, match=f"FTLAB_THREADS='{value}' is not a thread count"):
            choose()
    # The server refuses to start rather than fail its first job.
    assert cli.main(["serve", "--port", "0", "--data-dir", str(tmp_path)]) == 1
    assert "positive whole number" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--port", "-1", "must be a port from 1 to 65535"),
        ("--port", "99999", "must be a port from 1 to 65535"),
        ("--max-upload-mb", "-5", "must be a positive number of MB, not -5"),
        ("--max-upload-mb", "0", "must be a positive number of MB, not 0"),
        ("--max-upload-mb", "nan", "must be a positive number of MB, not nan"),
        ("--max-upload-mb", "inf", "must be a positive number of MB, not inf"),
    ],
)
def test_serve_refuses_impossible_ports_and_upload_limits(
    monkeypatch, capsys, option, value, message
):
    monkeypatch.setattr("ftlab.server.serve.serve", lambda **options: pytest.fail("served"))
    with pytest.raises(SystemExit) as exit_code:
        cli.main(["serve", option, value])
    assert exit_code.value.code == 2
    assert f"{option}: {message}" in capsys.readouterr().err


def test_parallel_jobs_must_be_positive(tmp_path, capsys):
    with pytest.raises(ValueError, match="parallel_jobs must be at least 1"):
        Worker(Store(tmp_path), parallel_jobs=0)
    with pytest.raises(SystemExit) as exit_code:
        cli.main(["serve", "--parallel-jobs", "0"])
    assert exit_code.value.code == 2
    assert "--parallel-jobs: must be 1 or more, not 0" in capsys.readouterr().err


@pytest.mark.slow
def test_two_jobs_train_side_by_side_and_queue_is_fair(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("ana sk-ana-0001\nben sk-ben-0002\n")
    with start(tmp_path / "data", keys=keys, parallel_jobs=2) as server:
        ana, ben = client(server, "sk-ana-0001"), client(server, "sk-ben-0002")
        short = {"n_epochs": 1, "batch_size": 10}  # 10 examples (the minimum): 1 step

        def create(api, examples: int, **hyperparameters):
            file_id = upload(api, support_examples("train", examples))
            job = api.fine_tuning.jobs.create(
                model=BASE, training_file=file_id, hyperparameters=hyperparameters
            )
            return job.id

        long_job = create(ana, 24, n_epochs=30, batch_size=8)  # 90 steps
        first = create(ana, 24, n_epochs=1, batch_size=8)  # 3 steps
        wait_for(ana, long_job, statuses=("running",))
        wait_for(ana, first, statuses=("running",))  # both slots taken
        second = create(ana, 10, **short)
        bens = create(ben, 10, **short)
        seen = set()
        deadline = time.monotonic() + 300
        while (done := ben.fine_tuning.jobs.retrieve(bens)).status != "succeeded":
            assert done.status in ("validating_files", "queued", "running"), done.error
            assert time.monotonic() < deadline, "ben's job did not finish"
            seen.add(
                (
                    ana.fine_tuning.jobs.retrieve(long_job).status,
                    done.status,
                    ana.fine_tuning.jobs.retrieve(second).status,
                )
            )
            time.sleep(0.2)
        # When ana's first short job ended, ben's job took the free slot before ana's
        # second (queued earlier) and trained beside ana's long job.
        assert ("running", "running", "queued") in seen
        assert ana.fine_tuning.jobs.retrieve(long_job).status == "running"
        finished = wait_for(ana, second)
        assert finished.status == "succeeded", finished.error
        ana.fine_tuning.jobs.cancel(long_job)
        store = Store(server.data_dir)
        for job_id in (first, bens, second):
            request = json.loads((store.job_dir(job_id) / job_runner.REQUEST).read_text())
            config = json.loads((Path(request["out"]) / "config.json").read_text())
            assert config["resolved"]["threads"] == max(1, available_cores() // 2)


def test_a_restarted_server_tidies_jobs_that_finished_and_leaves_a_running_one_whole(tmp_path):
    from ftlab.training.checkpoints import TRAINER_STATE

    store = jobs_of(tmp_path, "succeeded", ana=1)
    store.add_job(
        {
            **store.get_job("ftjob-ana1"),
            "seq": None,
            "id": "ftjob-ben1",
            "owner": "ben",
            "status": "running",
        }
    )
    layout = [
        "train.jsonl",
        "out/adapter/adapter_model.safetensors",
        "out/config.json",
        f"out/checkpoints/epoch-1/{TRAINER_STATE}",
        "out/checkpoints/epoch-1/adapter_model.safetensors",
    ]
    for job_id in ("ftjob-ana1", "ftjob-ben1"):
        for name in layout:
            (store.job_dir(job_id) / name).parent.mkdir(parents=True, exist_ok=True)
            (store.job_dir(job_id) / name).write_bytes(b"x" * 1000)
    worker = Worker(store)
    worker.recover()  # what `start` does first
    left = sorted(
        str(p.relative_to(store.job_dir("ftjob-ana1")))
        for p in store.job_dir("ftjob-ana1").rglob("*")
        if p.is_file()
    )
    assert left == ["out/checkpoints/epoch-1/adapter_model.safetensors", "out/config.json"]
    for name in layout:  # the running job resumes from all of it
        assert (store.job_dir("ftjob-ben1") / name).is_file()


def test_a_training_child_killed_with_a_stopping_server_is_not_taken_for_a_failed_job(tmp_path):
    """Ctrl-C or a service manager's stop signals the training child too (if it did not ignore
    them); the worker must leave its job running, to resume, and its files whole."""
    store = jobs_of(tmp_path, "running", ana=2)
    worker = Worker(store)
    for job_id in ("ftjob-ana1", "ftjob-ana2"):
        (store.job_dir(job_id) / "train.jsonl").parent.mkdir(parents=True)
        (store.job_dir(job_id) / "train.jsonl").write_text("{}\n")
        (store.job_dir(job_id) / "runner.log").write_text("Terminated\n")
        gone = subprocess.Popen([sys.executable, "-c", "raise SystemExit(-15)"])
        gone.wait()
        worker._running[job_id] = RunningJob(process=gone, owner="ana")
    worker.stopping()  # the signal handler, then the child's end seen by the worker
    worker._pump("ftjob-ana1")
    assert store.get_job("ftjob-ana1")["status"] == "running"
    assert (store.job_dir("ftjob-ana1") / "train.jsonl").is_file()
    worker._signalled = False  # without the signal, the same end is a failure
    worker._pump("ftjob-ana2")
    assert "stopped unexpectedly" in store.get_job("ftjob-ana2")["error"]["message"]
    assert not (store.job_dir("ftjob-ana2") / "train.jsonl").exists()
