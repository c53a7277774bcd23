"""Bad settings, folders and files around a training run: clear errors, and nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_ftlab
from training_helpers import MESSAGES, tiny

from ftlab.check import FAIL, check_device
from ftlab.course import LORA_RUN, lora_adapter
from ftlab.evaluation import evaluate
from ftlab.jsonl import write_jsonl
from ftlab.models import ADAPTER_SIDECAR, ModelNotFoundError, load_model
from ftlab.paths import support_split
from ftlab.support import make_example
from ftlab.training import LiveLossPlot, train
from ftlab.training.checkpoints import TRAINER_STATE


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished one-epoch tiny run (adapter and one checkpoint), copied fresh per test."""
    folder = tmp_path_factory.mktemp("finished")
    data = str(write_jsonl(folder / "train.jsonl", [make_example(*m) for m in MESSAGES]))
    train(tiny(data, folder / "run", epochs=1, batch_size=12))
    return data, folder / "run"


@pytest.fixture
def run(finished_run, tmp_path):
    data, original = finished_run
    copy = tmp_path / "run"
    shutil.copytree(original, copy)
    return data, copy


def _kept(run_dir) -> bool:
    return (run_dir / "adapter" / "adapter_model.safetensors").is_file() and (
        run_dir / "checkpoints" / "epoch-1" / TRAINER_STATE
    ).is_file()


@pytest.mark.slow
def test_a_new_run_that_cannot_start_leaves_the_previous_one_alone(run):
    data, run_dir = run
    with pytest.raises(ModelNotFoundError, match="No model folder"):
        train(tiny(data, run_dir, model="smollm2-135m-instruc"))
    with pytest.raises(ValueError, match="has only 30 decoder layers"):
        train(tiny(data, run_dir, adapted_layers=99))
    # Too long for max_length: refused, not cut (the cut would remove the answer).
    with pytest.raises(ValueError, match="12 training examples are longer than max_length"):
        train(tiny(data, run_dir, max_length=20))
    assert _kept(run_dir)


def _files(folder) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*") if f.is_file()}


def _stop_after_one_step():
    """A callback and a should_stop that stop a run after its first step."""
    steps = []

    def callback(event):
        steps.extend([event.step] if event.kind == "step" else [])

    return callback, lambda: bool(steps)


@pytest.mark.slow
def test_a_new_run_stopped_before_its_first_checkpoint_puts_the_earlier_run_back(run):
    data, run_dir = run
    before = _files(run_dir)
    callback, should_stop = _stop_after_one_step()
    result = train(tiny(data, run_dir, seed=1, log_every=1), callback, should_stop)
    assert result.stopped and result.kept_earlier_run and result.adapter_dir is None
    assert result.checkpoints == [] and _files(run_dir) == before  # metrics and plot too

    def interrupt(event):  # Ctrl-C in a notebook: KeyboardInterrupt out of the training loop
        if event.kind == "step":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        train(tiny(data, run_dir, seed=1, log_every=1), interrupt)
    assert _files(run_dir) == before
    assert caught.value.__notes__ == [
        f"The earlier run in {run_dir} is back as it was: this run stopped before saving."
    ]

    replaced = train(tiny(data, run_dir, seed=1, epochs=1))  # one that saves: it replaces
    assert not replaced.kept_earlier_run and _kept(run_dir)
    assert _files(run_dir) != before and not (run_dir / ".replaced-run").exists()


@pytest.mark.slow
def test_resume_with_no_checkpoint_left_keeps_the_earlier_run_until_the_new_one_saves(run):
    """Nothing to resume from (its checkpoints deleted to save disk, say) starts a new run,
    and a new run keeps the earlier one until it has saved something. Resuming skipped that,
    and cleared the finished run's metrics as soon as it started."""
    data, run_dir = run
    shutil.rmtree(run_dir / "checkpoints")
    before = _files(run_dir)
    result = train(
        tiny(data, run_dir, epochs=1, batch_size=12, resume=True), should_stop=lambda: True
    )
    assert result.stopped and result.kept_earlier_run
    assert _files(run_dir) == before


def test_an_earlier_run_set_aside_by_a_crashed_run_is_put_back_at_the_next_start(tmp_path):
    from ftlab.training.checkpoints import RUN_OUTPUTS, RunReplacement, remove_stale_staging

    def earlier_run(out):
        for name in RUN_OUTPUTS:
            if "." in name:
                (out / name).write_text(f"earlier {name}")
            else:
                (out / name / "epoch-1").mkdir(parents=True)
                (out / name / "epoch-1" / "file").write_text(f"earlier {name}")
        return _files(out)

    out = tmp_path / "crashed-early"  # the new run wrote its config and log, then died
    out.mkdir()
    before = earlier_run(out)
    RunReplacement(out).begin()
    assert sorted(p.name for p in out.iterdir()) == [".replaced-run"]
    (out / "config.json").write_text("the new run's")
    (out / "metrics.jsonl").write_text("the new run's")
    remove_stale_staging(out)
    assert _files(out) == before and not (out / ".replaced-run").exists()

    out = tmp_path / "crashed-later"  # the new run had saved its first checkpoint
    out.mkdir()
    earlier_run(out)
    RunReplacement(out).begin()
    (out / "checkpoints" / "epoch-1").mkdir(parents=True)
    (out / "checkpoints" / "epoch-1" / "file").write_text("the new run's")
    remove_stale_staging(out)
    assert _files(out) == {"checkpoints/epoch-1/file": b"the new run's"}

    out = tmp_path / "crashed-while-setting-aside"  # only the adapter had been moved
    out.mkdir()
    before = earlier_run(out)
    (out / ".replaced-run").mkdir()
    (out / "adapter").rename(out / ".replaced-run" / "adapter")
    remove_stale_staging(out)
    assert _files(out) == before and not (out / ".replaced-run").exists()

    out = tmp_path / "crashed-while-committing"  # renamed away, not all deleted yet
    out.mkdir()
    earlier_run(out)
    RunReplacement(out).begin()
    (out / "adapter").mkdir()
    (out / "adapter" / "file").write_text("the new run's")
    (out / ".replaced-run").rename(out / ".replaced-run.delete")
    remove_stale_staging(out)
    assert _files(out) == {"adapter/file": b"the new run's"}
    assert sorted(p.name for p in out.iterdir()) == ["adapter"]

    out = tmp_path / "crashed-while-putting-back"  # the new run's files gone, half moved back
    out.mkdir()
    before = earlier_run(out)
    replacement = RunReplacement(out)
    replacement.begin()
    (out / "checkpoints" / "epoch-1").mkdir(parents=True)  # saved just before the stop
    (out / "checkpoints" / "epoch-1" / "file").write_text("the new run's")
    (out / ".replaced-run" / "undoing").touch()
    shutil.rmtree(out / "checkpoints")
    (out / ".replaced-run" / "complete").unlink()
    (out / ".replaced-run" / "adapter").rename(out / "adapter")
    remove_stale_staging(out)
    assert _files(out) == before and not (out / ".replaced-run").exists()

    out = tmp_path / "crashed-while-deleting-the-new-files"  # never committed instead
    out.mkdir()
    before = earlier_run(out)
    RunReplacement(out).begin()
    (out / "checkpoints" / "epoch-1").mkdir(parents=True)
    (out / "checkpoints" / "epoch-1" / "file").write_text("the new run's")
    (out / ".replaced-run" / "undoing").touch()
    remove_stale_staging(out)
    assert _files(out) == before and not (out / ".replaced-run").exists()


def test_an_output_folder_with_other_files_is_refused(tmp_path):
    data = str(write_jsonl(tmp_path / "train.jsonl", [make_example(*m) for m in MESSAGES]))
    mine = tmp_path / "mywork"
    (mine / "adapter").mkdir(parents=True)
    (mine / "adapter" / "important.txt").write_text("notes")
    (mine / "config.json").write_text('{"my": "model config"}')
    with pytest.raises(ValueError, match="not written by a training run"):
        train(tiny(data, mine))
    assert (mine / "adapter" / "important.txt").read_text() == "notes"
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        train(tiny(data, afile))


@pytest.mark.slow
def test_a_damaged_checkpoint_is_named_when_resuming(run):
    data, run_dir = run
    checkpoint = run_dir / "checkpoints" / "epoch-1"
    (checkpoint / TRAINER_STATE).write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"epoch-1 is damaged.*\n.*delete that checkpoint"):
        train(tiny(data, run_dir, epochs=1, batch_size=12, resume=True))
    (checkpoint / ADAPTER_SIDECAR).unlink()
    with pytest.raises(ValueError, match="epoch-1 is damaged"):
        train(tiny(data, run_dir, epochs=1, batch_size=12, resume=True))
    (run_dir / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"config.json, the record of .*\n.*delete that file"):
        train(tiny(data, run_dir, epochs=1, batch_size=12, resume=True))


@pytest.mark.slow
def test_a_run_folder_stands_for_its_adapter_and_a_damaged_adapter_gets_a_fix(run, tmp_path):
    data, run_dir = run
    adapter = run_dir / "adapter"
    via_run, _ = load_model(run_dir, device="cpu")
    via_adapter, _ = load_model(adapter, device="cpu")
    for (name, value), (_, expected) in zip(
        via_run.state_dict().items(), via_adapter.state_dict().items(), strict=True
    ):
        assert torch.equal(value, expected), name
    with pytest.raises(ValueError, match="train from its base model"):
        train(tiny(data, tmp_path / "again", model=str(run_dir)))
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelNotFoundError, match="Could not apply the adapter"):
        load_model(adapter)
    weights.unlink()
    with pytest.raises(ModelNotFoundError, match="has no weights"):
        load_model(adapter)


@pytest.mark.slow
def test_a_finished_run_trained_again_reports_its_logged_losses(data, valid, tmp_path, capsys):
    config = tiny(data, tmp_path / "run", epochs=1, batch_size=12, valid=valid, resume=True)
    first = train(config)
    plot = LiveLossPlot(every_s=0)
    again = train(config, callback=plot)
    assert (again.final_train_loss, again.final_valid_loss) == (
        first.final_train_loss,
        first.final_valid_loss,
    )
    assert plot.rows == [] and plot.handle is None  # no empty plot drawn
    assert "This run had already finished all its steps" in capsys.readouterr().out


@pytest.mark.slow
def test_notebook_05_uses_a_finished_run_with_other_settings_and_never_deletes_it(
    finished_run, tmp_path, monkeypatch, capsys
):
    _, original = finished_run
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path))
    shutil.copytree(original, tmp_path / LORA_RUN)  # a learner's run with its own settings
    assert lora_adapter() == tmp_path / LORA_RUN / "adapter"
    assert "Using that finished run's adapter as it is" in capsys.readouterr().out
    assert _kept(tmp_path / LORA_RUN)
    shutil.rmtree(tmp_path / LORA_RUN / "adapter")  # stopped after epoch 1 of 2, say
    with pytest.raises(RuntimeError, match=r"settings or data differ.*\n.*finish that run"):
        lora_adapter()
    assert (tmp_path / LORA_RUN / "checkpoints" / "epoch-1" / TRAINER_STATE).is_file()


def test_examples_that_cannot_be_scored_are_named_before_loading_a_model(tmp_path):
    good = make_example("Where is AC-12345?", "order_status", "AC-12345", "neutral")
    no_answer = {"messages": good["messages"][:2]}
    human = {"messages": [{"role": "human", "content": "hi"}, good["messages"][2]]}
    path = tmp_path / "eval.jsonl"
    write_jsonl(path, [good, no_answer, human])
    path.write_text("\n" + path.read_text())  # a blank first line: places are file lines
    with pytest.raises(ValueError) as caught:
        evaluate("no-such-model", path)
    message = str(caught.value)
    assert "line 3: it has no assistant message" in message
    assert "line 4: it has no user message" in message
    path.write_text(path.read_text().replace('"messages"', "'messages'", 1))
    with pytest.raises(ValueError, match=r"eval.jsonl line 2 is not valid JSON"):
        evaluate("no-such-model", path)
    for where in (tmp_path, path / "predictions.jsonl"):  # a folder; inside a file
        with pytest.raises(ValueError, match="Cannot write predictions"):
            evaluate("no-such-model", [good], predictions_path=where)
    path.write_bytes(b'{"messages": "caf\xe9"}\n')
    with pytest.raises(ValueError, match="line 1 is not UTF-8 text"):
        evaluate("no-such-model", path)
    # The checker's errors: these failed half-way through generation, or scored a blank prompt.
    number, parts = json.loads(json.dumps(good)), json.loads(json.dumps(good))
    number["messages"][1]["content"] = 123
    parts["messages"][1]["content"] = [{"type": "text", "text": "Where is AC-12345?"}]
    write_jsonl(path, [number, parts])
    with pytest.raises(ValueError) as caught:
        evaluate("no-such-model", path)
    assert "line 1: messages[1]: content is a number; it must be a string" in str(caught.value)
    assert "line 2: messages[1]: content is a list; it must be a string" in str(caught.value)


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc")
def test_an_unreadable_file_is_an_error_that_names_its_role(data, tmp_path):
    done = run_ftlab("eval", "--model", "x", "--data", "/proc/self/mem")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: cannot read the data file /proc/self/mem: ")
    assert "Traceback" not in done.stderr
    out = str(tmp_path / "run")
    done = run_ftlab("train", "--data", data, "--valid", "/proc/self/mem", "--out", out)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: cannot read the validation file /proc/self/mem: ")


def test_resume_into_a_file_says_only_what_is_wrong(data, tmp_path):
    (tmp_path / "afile").write_text("not a run")
    done = run_ftlab("train", "--data", data, "--out", str(tmp_path / "afile"), "--resume")
    assert done.returncode != 0 and "is a file. Fix: pass a folder" in done.stderr
    assert "no checkpoint" not in done.stdout + done.stderr  # no note before the error


def test_eval_options_out_of_range_are_refused_by_the_command_line(tmp_path):
    data = str(write_jsonl(tmp_path / "t.jsonl", [make_example(*MESSAGES[0])]))
    for option, value in [("--batch-size", "0"), ("--limit", "-1"), ("--few-shot", "-3")]:
        done = run_ftlab("eval", "--model", "x", "--data", data, option, value)
        assert done.returncode == 2 and f"{option}: must be" in done.stderr, done.stderr
    done = run_ftlab("eval", "--model", "nosuchmodel", "--data", data)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error: No model folder at 'nosuchmodel'" in done.stderr


def test_train_command_says_when_there_is_nothing_to_resume(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n')
    done = run_ftlab("train", "--data", str(bad), "--out", str(tmp_path / "r"), "--resume")
    assert "note: no checkpoint in" in done.stdout
    assert done.returncode == 1 and "empty_messages" in done.stderr


def test_an_infinite_learning_rate_is_refused(tmp_path):
    with pytest.raises(ValueError, match="lr must be a positive number, got inf"):
        tiny("d.jsonl", tmp_path, lr=float("inf"))
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        tiny("d.jsonl", tmp_path, alpha=float("nan"))


def test_check_fails_on_a_thread_count_that_training_would_refuse(monkeypatch):
    monkeypatch.setenv("FTLAB_THREADS", "two")
    result = check_device()
    assert result.status == FAIL and "FTLAB_THREADS='two'" in result.detail
    assert "positive whole number" in result.fix


def test_predictions_never_overwrite_the_data_and_unwritable_places_are_refused(tmp_path):
    data = write_jsonl(tmp_path / "mydata.jsonl", [make_example(*MESSAGES[0])])
    before = data.read_bytes()
    done = run_ftlab("eval", "--model", "x", "--data", str(data), "--predictions", str(data))
    assert done.returncode == 1 and "is the --data file" in done.stderr, done.stderr
    other = tmp_path / "shots.jsonl"
    other.write_bytes(before)
    with pytest.raises(ValueError, match="is the --train-data file"):
        evaluate("no-such-model", data, train_data=other, predictions_path=other)
    with pytest.raises(ValueError, match="is the --train-data file"):  # the default shots' file
        evaluate("no-such-model", data, predictions_path=support_split("train"))
    copy = tmp_path / "copy_of_my_data.jsonl"  # another learner's examples, or a backup
    copy.write_bytes(b"\n" + before)
    done = run_ftlab("eval", "--model", "x", "--data", str(data), "--predictions", str(copy))
    assert done.returncode == 1 and "holds chat examples" in done.stderr, done.stderr
    assert data.read_bytes() == before and other.read_bytes() == before
    assert copy.read_bytes() == b"\n" + before
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root may write anywhere: nothing to refuse then
            with pytest.raises(ValueError, match="you may not write in"):
                evaluate("no-such-model", data, predictions_path=locked / "p.jsonl")
    finally:
        locked.chmod(0o700)
    inside_a_file = data / "run"  # cannot be made, by anyone
    done = run_ftlab("train", "--data", str(data), "--out", str(inside_a_file))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"Cannot write the run to {inside_a_file}: {data} is a file" in done.stderr


def test_a_folder_given_as_training_data_is_named_a_folder(tmp_path):
    done = run_ftlab("train", "--data", str(tmp_path), "--out", str(tmp_path / "r"))
    assert done.returncode == 1 and f"{tmp_path} is a folder" in done.stderr, done.stderr


def test_too_long_examples_are_refused_with_the_command_that_finds_them(tmp_path):
    data = str(write_jsonl(tmp_path / "train.jsonl", [make_example(*m) for m in MESSAGES]))
    done = run_ftlab("train", "--data", data, "--out", str(tmp_path / "r"), "--max-length", "20")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "longer than max_length=20 tokens" in done.stderr
    assert "`ftlab validate FILE --max-tokens 20` lists them" in done.stderr
    assert "`--max-length` for `ftlab train`" in done.stderr
    assert not (tmp_path / "r").exists()  # refused after loading the model: no empty folder


def test_starting_over_in_a_run_folder_says_what_it_replaces(run, tmp_path):
    _, run_dir = run
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n')
    done = run_ftlab("train", "--data", str(bad), "--out", str(run_dir))
    assert f"note: {run_dir} holds an earlier run: once the data and settings" in done.stderr
    assert done.returncode == 1 and _kept(run_dir)  # refused data: nothing was replaced


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_before_the_first_checkpoint_keeps_the_earlier_run(run):
    data, run_dir = run
    before = _files(run_dir)
    command = [sys.executable, "-m", "ftlab.cli", "train", "--data", data, "--out", str(run_dir)]
    with subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        for line in process.stderr:  # Ctrl-C once the command has said what it replaces
            if "holds an earlier run" in line:
                process.send_signal(signal.SIGINT)
                break
        out, _ = process.communicate(timeout=300)
    assert process.returncode == 130
    assert f"stopped. The earlier run in {run_dir} is back as it was" in out
    assert _files(run_dir) == before


@pytest.mark.slow
def test_resuming_after_a_crash_that_left_the_earlier_run_set_aside_resumes_that_run(run):
    from ftlab.training.checkpoints import RunReplacement

    data, run_dir = run
    RunReplacement(run_dir).begin()  # a new run with another rank, killed before it saved
    (run_dir / "config.json").write_text(
        (run_dir / ".replaced-run" / "config.json").read_text().replace('"rank": 4', '"rank": 8')
    )
    settings = ["--epochs", "1", "--batch-size", "12", "--rank", "4", "--alpha", "8"]
    done = run_ftlab("train", "--data", data, "--out", str(run_dir), *settings, "--resume")
    assert done.returncode == 0, done.stderr  # not "its settings or data differ (rank ...)"
    assert "had already finished all its steps" in done.stdout and _kept(run_dir)


def test_a_data_file_that_cannot_be_read_is_not_blamed_on_the_output_folder(
    tmp_path, monkeypatch, capsys
):
    from ftlab import cli
    from ftlab.validation.checker import UnreadableFileError

    def unreadable(*args, **kwargs):
        raise UnreadableFileError("cannot read the data file x.jsonl: Permission denied")

    monkeypatch.setattr("ftlab.commands.train.train", unreadable)
    assert cli.main(["train", "--data", "x.jsonl", "--out", str(tmp_path / "run")]) == 1
    error = capsys.readouterr().err
    assert "error: cannot read the data file x.jsonl" in error and "cannot write" not in error


def _hold_lock_in_another_process(folder):
    """A process that holds the folder's training lock, as a run training there does."""
    code = (
        "import sys, time\n"
        "from ftlab.training.run_lock import RunFolderLock\n"
        "RunFolderLock(sys.argv[1]).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "held\n"
    return holder


def _folder_is_busy(out) -> bool:
    """True while a training run (in any process, or another thread) holds the folder's lock."""
    from ftlab.training.run_lock import RunFolderBusyError, RunFolderLock

    try:
        with RunFolderLock(out):
            return False
    except RunFolderBusyError:
        return True


def test_the_run_lock_lets_one_thread_in_and_is_released_when_its_process_dies(tmp_path):
    import threading

    from ftlab.training.run_lock import RunFolderBusyError, RunFolderLock

    lock, again = RunFolderLock(tmp_path), RunFolderLock(tmp_path / "." / "")
    lock.acquire()
    again.acquire()  # the same thread (the command line, then `train`): allowed
    with pytest.raises(RunFolderBusyError):  # but never a crash's clean-up beside a run
        RunFolderLock(tmp_path, reentrant=False).acquire()
    assert not _folder_is_busy(tmp_path)  # (asked from the thread that holds it)
    refused = []

    def other_thread():
        try:
            RunFolderLock(tmp_path).acquire()
        except RunFolderBusyError as error:
            refused.append(str(error))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert refused and refused[0].startswith(f"Another training run is writing to {tmp_path}")
    again.release()
    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert len(refused) == 2  # still held once
    lock.release()
    lock.release()  # (twice is harmless)
    assert not list(tmp_path.iterdir())  # no lock file left behind

    holder = _hold_lock_in_another_process(tmp_path)
    try:
        assert _folder_is_busy(tmp_path)
        with pytest.raises(RunFolderBusyError, match="Fix: wait for that run to finish"):
            RunFolderLock(tmp_path).acquire()
    finally:
        holder.kill()  # a crash: the operating system releases the lock
        holder.wait()
    assert not _folder_is_busy(tmp_path)


def test_a_file_system_without_locks_still_trains(tmp_path, monkeypatch):
    import errno

    from ftlab.training import run_lock

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_lock.fcntl, "flock", no_locks)
    with run_lock.RunFolderLock(tmp_path):
        pass


@pytest.mark.slow
def test_a_run_folder_being_trained_is_left_alone_and_a_crashed_runs_set_aside_run_comes_back(run):
    from ftlab.training.checkpoints import RunReplacement
    from ftlab.training.run_lock import RunFolderBusyError

    data, run_dir = run
    before = _files(run_dir)
    RunReplacement(run_dir).begin()  # a new run is training: the earlier one is set aside
    (run_dir / "config.json").write_text(  # the new run's, with its own seed
        (run_dir / ".replaced-run" / "config.json").read_text().replace('"seed": 0', '"seed": 1')
    )
    during = _files(run_dir)
    holder = _hold_lock_in_another_process(run_dir)
    try:
        with pytest.raises(RunFolderBusyError, match="Another training run is writing to"):
            train(tiny(data, run_dir, seed=1))
        done = run_ftlab("train", "--data", data, "--out", str(run_dir), "--resume")
        assert done.returncode == 1
        assert f"error: Another training run is writing to {run_dir} right now" in done.stderr
        with pytest.raises(ModelNotFoundError, match="a training run is writing to it now"):
            load_model(run_dir / "adapter")
        with pytest.raises(ValueError, match="a training run's folder.*train from its base"):
            train(tiny(data, run_dir.parent / "other", model=str(run_dir)))  # a slip
        assert _files(run_dir) == during  # neither took the set-aside run for a crash's
    finally:
        holder.kill()  # the new run crashes before it saves anything
        holder.wait()
    model, _ = load_model(run_dir)  # the earlier run is put back, and its adapter loads
    assert model is not None and _files(run_dir) == before


@pytest.mark.slow
def test_loading_a_run_folder_from_its_own_training_callback_leaves_the_run_alone(run):
    data, run_dir = run
    refused = []

    def callback(event):  # e.g. a callback that evaluates the folder's adapter as it trains
        if event.kind == "step" and not refused:
            with pytest.raises(ModelNotFoundError, match="a training run is writing to it now"):
                load_model(run_dir)
            refused.append(event.step)

    result = train(tiny(data, run_dir, seed=1, epochs=1), callback)
    assert refused == [1] and not result.stopped and _kept(run_dir)
    assert not (run_dir / ".replaced-run").exists()
