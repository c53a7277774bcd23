"""Notebook 04's saved record: written whole, and read back by notebook 05 without a new job."""

import json

import pytest

from ftlab.course import api_result, api_result_path, save_api_result
from ftlab.jsonl import write_jsonl
from ftlab.paths import support_split
from ftlab.support import load_examples

RECORD = {
    "provider": "local",
    "train_examples": 160,
    "fine_tuned_model": "ft:smollm2-135m-instruct:local:support:abc123",
    "server_data_dir": "04_server",
    "scores": {"n": 96, "exact": 0.5},
    "predictions": ['{"intent": "other", "note": "café ☕"}'],
}


def test_a_saved_record_is_read_back_as_it_was_without_running_a_job(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path))
    path = save_api_result(RECORD)

    (tmp_path / "04_server").mkdir()  # the private server's folder, which holds the model
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


class JobStarted(Exception):
    pass


def start_job(message: str) -> None:
    raise JobStarted(message)


@pytest.mark.parametrize("missing", ["provider", "train_examples", "scores"])
def test_a_record_without_what_notebook_05_reads_is_made_again(tmp_path, monkeypatch, missing):
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path))
    (tmp_path / "04_server").mkdir()
    save_api_result({k: v for k, v in RECORD.items() if k != missing})
    with pytest.raises(JobStarted, match=f"lacks \\['{missing}'\\]; it is kept as result"):
        api_result(on_event=start_job)


def test_a_record_whose_server_folder_is_gone_is_made_again(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path))
    save_api_result(RECORD)  # but no 04_server folder: deleted, so the model went with it
    with pytest.raises(JobStarted, match="the server folder that held it .* is gone"):
        api_result(on_event=start_job)
    shared = {**RECORD, "server_url": "http://10.0.0.5:8000/v1"}  # its model is elsewhere
    save_api_result(shared)
    assert api_result(on_event=start_job) == shared


@pytest.mark.parametrize("content", ["", '{"provider": "loc', "[]"])
def test_a_damaged_record_is_set_aside_and_made_again(tmp_path, monkeypatch, content):
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path))
    path = api_result_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)  # a crash before writes were atomic, a hand edit
    with pytest.raises(JobStarted, match="is not a readable record"):
        api_result(on_event=start_job)
    (aside,) = path.parent.glob("result.json.unusable-*")  # kept, not deleted
    assert aside.read_text() == content and not path.exists()


def test_an_openai_record_is_never_replaced_by_a_local_job(tmp_path, monkeypatch):
    """A paid hosted model is still there: notebook 04 can record it again for free."""
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path))
    hosted = {**RECORD, "provider": "openai", "server_data_dir": None}
    save_api_result({k: v for k, v in hosted.items() if k != "scores"})
    with pytest.raises(RuntimeError, match="records a fine-tuning job on OpenAI .* lacks"):
        api_result(on_event=start_job)
    assert json.loads(api_result_path().read_text())["provider"] == "openai"  # untouched


@pytest.mark.slow
def test_without_notebook_04s_record_notebook_05_runs_the_job_itself(tmp_path, monkeypatch):
    """The real fallback: a private server, an upload, a quick job, the `ft:` model scored
    through the API, and the record saved. On small splits, to keep it short."""
    for split, size in (("train", 32), ("valid", 10), ("test", 4)):
        rows = load_examples(support_split(split))[:size]
        write_jsonl(tmp_path / "data" / "support" / f"{split}.jsonl", rows)
    monkeypatch.setenv("FTLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("FTLAB_QUICK", "1")  # notebook 04's quick job: 32 examples, 8 steps
    said: list[str] = []
    record = api_result(on_event=said.append)
    assert any(line.startswith("Fine-tuning job ftjob-") for line in said)
    assert record["provider"] == "local" and record["train_examples"] == 32
    assert record["fine_tuned_model"].startswith("ft:smollm2-135m-instruct:")
    assert record["scores"]["n"] == 4 and len(record["predictions"]) == 4
    assert json.loads(api_result_path().read_text(encoding="utf-8")) == record
    assert api_result(on_event=start_job) == record  # read back: no second job
