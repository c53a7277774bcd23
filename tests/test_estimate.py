"""`ftlab train --estimate`: a run's time from a few real steps, with nothing written."""

from __future__ import annotations

import pytest
import torch
from training_helpers import MESSAGES, tiny

from ftlab import cli
from ftlab.training import estimate as estimate_module
from ftlab.training import train
from ftlab.training.data import collate, epoch_batches
from ftlab.training.estimate import (
    batch_tokens,
    duration,
    estimate_time,
    run_batches,
    typical_batches,
)


def test_typical_batches_are_spread_over_the_sizes():
    sizes = [50, 10, 40, 20, 30]
    assert typical_batches(sizes, 1) == [4]  # the median, 30
    assert [sizes[i] for i in typical_batches(sizes, 3)] == [10, 30, 50]
    assert typical_batches([7], 3) == [0, 0, 0]  # fewer batches than steps: repeats


def test_run_batches_follow_the_epochs_and_stop_at_max_steps():
    lengths = list(range(10, 30))
    config = tiny("d.jsonl", "out", batch_size=8, epochs=2)
    whole = run_batches(lengths, config)
    assert whole == epoch_batches(lengths, 8, 0, 1) + epoch_batches(lengths, 8, 0, 2)
    assert run_batches(lengths, tiny("d.jsonl", "out", batch_size=8, max_steps=4)) == whole[:4]


def test_batch_tokens_count_the_shared_prefix_once_and_the_padding(tokenizer):
    from ftlab.support import make_example
    from ftlab.training.data import tokenize_example

    rows = [tokenize_example(tokenizer, make_example(*m)["messages"]) for m in MESSAGES[:3]]
    batch = collate(rows, pad_id=0)
    prefix = len(batch.prefix)
    assert prefix > 0
    assert batch_tokens(rows) == prefix + 3 * (max(map(len, rows)) - prefix)


def refuse_to_load(config):
    raise AssertionError("the model was loaded to estimate a finished run")


@pytest.mark.parametrize("adapted_layers", [None, 4])
def test_an_estimate_writes_nothing_and_counts_what_a_resume_has_left(
    data, valid, tmp_path, adapted_layers, monkeypatch
):
    config = tiny(data, tmp_path / "run", epochs=3, valid=valid, adapted_layers=adapted_layers)
    estimate = estimate_time(config, timed_steps=2)
    assert not (tmp_path / "run").exists()
    assert estimate.total_steps == 9 and estimate.timed_steps == 2
    assert estimate.seconds_per_token > 0 and estimate.validation_s > 0
    assert (estimate.frozen_pass_s > 0) == (adapted_layers is not None)
    assert estimate.total_s == pytest.approx(
        estimate.steps_s + estimate.frozen_pass_s + estimate.validation_s
    )
    # Twice the epochs: twice the steps, and more tokens (each epoch batches a little
    # differently, so not exactly twice).
    longer = estimate_time(tiny(data, tmp_path / "run", epochs=6), timed_steps=1)
    assert longer.total_steps == 18
    assert 1.8 < longer.computed_tokens / estimate.computed_tokens < 2.2
    assert longer.validation_s == 0  # no validation file
    # The estimate counts the steps the real run takes; resumed, only the ones left.
    polls = []
    cut = train(config, should_stop=lambda: len(polls.append(1) or polls) > 4)  # in epoch 2
    assert cut.stopped and [step for step, _, _ in cut.checkpoints] == [3]
    resumed = tiny(
        data, tmp_path / "run", epochs=3, valid=valid, adapted_layers=adapted_layers, resume=True
    )
    left = estimate_time(resumed, timed_steps=1)
    assert (left.done_steps, left.total_steps) == (3, 6)
    assert "6 steps (of 9, resumed)" in left.summary()
    assert estimate_time(config, timed_steps=1).total_steps == 9  # not resumed: the whole run
    with pytest.raises(ValueError, match=r"Cannot resume .*\(lr: 0.003 -> 0.01\)"):
        estimate_time(
            tiny(
                data,
                tmp_path / "run",
                epochs=3,
                valid=valid,
                lr=1e-2,
                resume=True,
                adapted_layers=adapted_layers,
            )
        )
    assert cut.total_steps == train(resumed).total_steps == estimate.total_steps
    # A finished run is told so at once: the model is not even loaded.
    monkeypatch.setattr(estimate_module, "training_model", refuse_to_load)
    finished = estimate_time(resumed)
    assert (finished.done_steps, finished.total_steps, finished.total_s) == (9, 0, 0)
    assert finished.summary() == "0 s: the run is finished (9 steps); resuming trains nothing."


def test_the_command_line_estimates_without_an_output_folder(data, tmp_path, capsys):
    assert cli.main(["train", "--data", data, "--max-steps", "2", "--estimate"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("estimated time: about ") and "2 steps" in printed
    assert cli.main(["train", "--data", data]) == 2
    assert "--out is required" in capsys.readouterr().err
    assert cli.main(["train", "--data", data, "--estimate", "--resume"]) == 2  # resume what?
    assert "--out is required" in capsys.readouterr().err
    missing_run = ["--out", str(tmp_path / "no-run"), "--resume", "--max-steps", "2"]
    assert cli.main(["train", "--data", data, *missing_run, "--estimate"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"note: no checkpoint in {tmp_path / 'no-run'}: estimating a whole")
    assert "2 steps" in printed and not (tmp_path / "no-run").exists()
    assert cli.main(["train", "--data", str(tmp_path / "missing.jsonl"), "--estimate"]) == 1
    assert "No training file (data, --data) at" in capsys.readouterr().err
    valid = ["--valid", str(tmp_path / "missing.jsonl"), "--estimate"]
    assert cli.main(["train", "--data", data, *valid]) == 1
    assert "No validation file (valid, --valid) at" in capsys.readouterr().err


def test_durations_read_naturally():
    assert [duration(s) for s in (42, 95, 1500, 5400, 9000)] == [
        "42 s",
        "2 min",
        "25 min",
        "1.5 h",
        "2.5 h",
    ]


@pytest.mark.parametrize("load, warned", [(0.3, False), (3.9, True), (None, False)])
def test_an_estimate_measured_on_a_busy_cpu_says_so(monkeypatch, load, warned):
    monkeypatch.setattr(estimate_module, "available_cores", lambda: 2)
    fields = estimate_module.machine_fields(torch.device("cpu"), load)
    estimate = estimate_module.TimeEstimate(
        total_steps=10,
        computed_tokens=1000,
        timed_steps=3,
        seconds_per_token=0.01,
        frozen_pass_s=0.0,
        validation_s=0.0,
        **fields,
    )
    assert ("load average 3.9 on 2 cores" in estimate.summary()) == warned
