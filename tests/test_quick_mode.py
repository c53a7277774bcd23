"""Quick mode (FTLAB_QUICK, set by `make test` for the notebooks): the same runs, cut short."""

import json
from pathlib import Path

import pytest

import ftlab.course as course
from ftlab.paths import REPO_ROOT, support_split
from ftlab.support import load_examples
from ftlab.training import TrainConfig


@pytest.mark.parametrize(
    ("value", "quick"),
    [("", False), ("0", False), ("false", False), ("No", False), ("1", True), ("yes", True)],
)
def test_quick_mode_follows_the_variable(monkeypatch, value, quick):
    monkeypatch.setenv("FTLAB_QUICK", value)
    assert course.quick_mode() is quick


def test_quick_mode_stops_notebook_03s_run_early_and_only_then(monkeypatch, tmp_path):
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path))
    monkeypatch.delenv("FTLAB_QUICK", raising=False)
    full = course.lora_config()
    assert full.max_steps is None and Path(full.out) == tmp_path / course.LORA_RUN
    monkeypatch.setenv("FTLAB_QUICK", "1")
    quick = course.lora_config()
    assert quick.max_steps == course.QUICK_STEPS
    assert Path(quick.out) != Path(full.out)  # the full run never resumes a quick one
    assert course.lora_config(max_steps=3).max_steps == 3  # a choice made in the call wins


def test_quick_mode_gives_notebook_04s_job_fewer_examples(monkeypatch, tmp_path):
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path))
    monkeypatch.delenv("FTLAB_QUICK", raising=False)
    assert len(load_examples(course.api_train_file())) == course.API_TRAIN_SUBSET
    full_record = course.api_result_path()
    monkeypatch.setenv("FTLAB_QUICK", "1")
    quick_file = course.api_train_file()
    assert len(load_examples(quick_file)) == course.QUICK_API_SUBSET
    assert course.api_result_path() != full_record  # notebook 05 never mixes the two jobs
    assert course.API_TRAIN_SUBSET == 160  # what `make bench-server` and the notebook text use


def test_the_readme_states_the_quick_numbers_in_use():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    sentence = " ".join(readme.split())  # the README wraps its lines anywhere
    assert f"stops after {course.QUICK_STEPS} steps" in sentence
    assert f"trains on {course.QUICK_API_SUBSET} examples" in sentence


def record_run(config: TrainConfig) -> None:
    """Write the config.json that `train` leaves in a run's folder, without training."""
    Path(config.out).mkdir(parents=True)
    record = {"config": config.to_dict(), "resolved": {}}
    (Path(config.out) / "config.json").write_text(json.dumps(record, default=str))


def test_notebook_05_says_how_much_the_adapter_it_scores_trained(monkeypatch, tmp_path):
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path))
    examples = len(load_examples(support_split("train")))
    per_epoch = -(-examples // 16)  # batch 16, the last batch smaller
    monkeypatch.delenv("FTLAB_QUICK", raising=False)
    record_run(course.lora_config())
    assert course.lora_run_summary() == (
        f"2 epochs over {examples:,} training examples ({2 * per_epoch} steps)"
    )
    monkeypatch.setenv("FTLAB_QUICK", "1")  # the quick run's own folder and record
    record_run(course.lora_config())
    assert course.lora_run_summary() == (
        f"stopped by max_steps after {course.QUICK_STEPS} of {2 * per_epoch} steps, "
        f"batches of 16 drawn from {examples:,} training examples"
    )
