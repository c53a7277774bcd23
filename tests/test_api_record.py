"""Notebook 04's saved record: written whole, and read back by notebook 05 without a new job."""

import json

from ftlab.course import api_result, api_result_path, save_api_result

RECORD = {
    "fine_tuned_model": "ft:smollm2-135m-instruct:local:support:abc123",
    "server_data_dir": "04_server",
    "scores": {"n": 96, "exact": 0.5},
    "predictions": ['{"intent": "other", "note": "café ☕"}'],
}


def test_a_saved_record_is_read_back_as_it_was_without_running_a_job(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path))
    path = save_api_result(RECORD)

    assert path == api_result_path() == tmp_path / "04_api" / "result.json"
    assert "café ☕" in path.read_text(encoding="utf-8")  # kept as typed, not \u-escaped
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no partial file left

    def no_job(message: str) -> None:
        raise AssertionError(f"a complete record must not start a job: {message}")

    assert api_result(on_event=no_job) == RECORD


def test_saving_again_replaces_the_record(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path))
    save_api_result(RECORD)
    newer = {**RECORD, "scores": {"n": 96, "exact": 0.75}}
    path = save_api_result(newer)
    assert json.loads(path.read_text(encoding="utf-8")) == newer
