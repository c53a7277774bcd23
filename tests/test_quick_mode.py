"""Quick mode (FTLAB_QUICK, set by `make test` for the notebooks): the same runs, cut short."""

import importlib

import pytest

import ftlab.course as course


@pytest.mark.parametrize(
    ("value", "quick"),
    [("", False), ("0", False), ("false", False), ("No", False), ("1", True), ("yes", True)],
)
def test_quick_mode_follows_the_variable(monkeypatch, value, quick):
    monkeypatch.setenv("FTLAB_QUICK", value)
    assert course.quick_mode() is quick


def test_quick_mode_stops_notebook_03s_run_early_and_only_then(monkeypatch):
    monkeypatch.delenv("FTLAB_QUICK", raising=False)
    assert course.lora_config().max_steps is None
    monkeypatch.setenv("FTLAB_QUICK", "1")
    assert course.lora_config().max_steps == course.QUICK_STEPS
    assert course.lora_config(max_steps=3).max_steps == 3  # a choice made in the call wins


def test_quick_mode_gives_notebook_04s_job_fewer_examples(monkeypatch):
    try:
        monkeypatch.setenv("FTLAB_QUICK", "1")
        assert importlib.reload(course).API_TRAIN_SUBSET == course.QUICK_API_SUBSET
    finally:
        monkeypatch.delenv("FTLAB_QUICK")
        importlib.reload(course)
    assert course.API_TRAIN_SUBSET == 160
