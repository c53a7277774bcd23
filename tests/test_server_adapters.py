"""`ftlab serve --adapter NAME=FOLDER`: an adapter trained with `ftlab train`, served by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import openai
import pytest
import torch
from conftest import run_ftlab
from fastapi.testclient import TestClient
from server_helpers import client, start

from ftlab.models import ADAPTER_SIDECAR, DEFAULT_MODEL
from ftlab.server import inference
from ftlab.server.app import create_app
from ftlab.server.auth import Authenticator
from ftlab.server.inference import Inference, served_adapters
from ftlab.server.store import Store
from ftlab.server.worker import Worker

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A training run's folder as `ftlab train --out` leaves it, with a real adapter of the
    base model (untrained, so it answers as the base model does)."""
    from peft import LoraConfig, get_peft_model

    from ftlab.models import load_model
    from ftlab.training.checkpoints import save_adapter

    model, _ = load_model(DEFAULT_MODEL, device="cpu")
    lora = LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")
    run = tmp_path_factory.mktemp("runs") / "mine"
    save_adapter(get_peft_model(model, lora), run / "adapter", DEFAULT_MODEL)
    return run


def test_adapters_to_serve_are_checked_with_a_fix(run_folder, tmp_path):
    served = served_adapters({"support": run_folder, "direct": run_folder / "adapter"})
    assert served == {"support": str(run_folder / "adapter"), "direct": str(run_folder / "adapter")}
    refusals = {
        "two words": (run_folder, "one word"),
        DEFAULT_MODEL: (run_folder, "another name"),
        "ft:smollm2-135m-instruct:x": (run_folder, "another name"),
        "empty": (tmp_path, "no LoRA adapter in"),
    }
    for name, (folder, said) in refusals.items():
        with pytest.raises(ValueError, match=said):
            served_adapters({name: folder})
    (tmp_path / "running" / "checkpoints").mkdir(parents=True)  # a run still training
    with pytest.raises(ValueError, match="That run has not finished"):
        served_adapters({"running": tmp_path / "running"})
    other = shutil.copytree(run_folder / "adapter", tmp_path / "other")
    (other / ADAPTER_SIDECAR).write_text(json.dumps({"base_model": "someone/bigger-model"}))
    with pytest.raises(ValueError, match="trained from someone/bigger-model"):
        served_adapters({"other": other})


def test_a_served_adapter_is_listed_answers_and_cannot_be_deleted(run_folder, tmp_path):
    store = Store(tmp_path / "data")
    adapters = served_adapters({"support": run_folder})
    app = create_app(
        store,
        auth=Authenticator(),
        worker=Worker(store),
        inference=Inference(store, adapters=adapters),
        max_upload_mb=1,
    )
    http = TestClient(app)
    listed = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert listed == [DEFAULT_MODEL, "support"]
    assert http.get("/v1/models/support").json()["id"] == "support"
    ask = {"messages": HELLO, "max_tokens": 8, "temperature": 0}
    base = http.post("/v1/chat/completions", json={"model": DEFAULT_MODEL, **ask}).json()
    mine = http.post("/v1/chat/completions", json={"model": "support", **ask}).json()
    assert mine["model"] == "support"
    # an untrained adapter changes nothing: the same answer as the base model
    assert mine["choices"][0]["message"] == base["choices"][0]["message"]
    refused = http.delete("/v1/models/support")
    assert refused.status_code == 403 and "restart the server" in refused.json()["error"]["message"]
    assert str(run_folder) not in refused.text  # other keys need not see the server's folders
    folder = http.post("/v1/chat/completions", json={"model": str(run_folder), **ask})
    assert folder.status_code == 404
    assert "--adapter NAME=FOLDER" in folder.json()["error"]["message"]
    store.close()


def serving_a_copy(run_folder: Path, tmp_path: Path, name: str) -> tuple[Path, Store, TestClient]:
    """A copy of `run_folder` the test may change, served as the model `name` by an app."""
    copy = shutil.copytree(run_folder, tmp_path / "copy")
    store = Store(tmp_path / "data")
    inference = Inference(store, adapters=served_adapters({name: copy}))
    http = TestClient(
        create_app(
            store, auth=Authenticator(), worker=Worker(store), inference=inference, max_upload_mb=1
        )
    )
    return copy, store, http


def test_a_served_adapter_whose_folder_went_away_is_a_404_that_says_so(run_folder, tmp_path):
    copy, store, http = serving_a_copy(run_folder, tmp_path, "gone")
    shutil.rmtree(copy)
    answer = http.post("/v1/chat/completions", json={"model": "gone", "messages": HELLO})
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["code"] == "model_files_missing" and "no restart is needed" in error["message"]
    store.close()


def test_a_served_folder_whose_new_run_crashed_before_saving_serves_the_earlier_run(
    run_folder, tmp_path
):
    from ftlab.training.checkpoints import RunReplacement

    copy, store, http = serving_a_copy(run_folder, tmp_path, "mine")
    ask = {"model": "mine", "messages": HELLO, "max_tokens": 4, "temperature": 0}
    before = http.post("/v1/chat/completions", json=ask).json()["choices"][0]["message"]
    RunReplacement(copy).begin()  # `ftlab train` into the folder, killed before it saved
    answer = http.post("/v1/chat/completions", json=ask)  # no run holds the folder now
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"] == before
    assert (copy / "adapter").is_dir() and not (copy / ".replaced-run").exists()
    store.close()


def test_an_adapter_trained_again_into_the_served_folder_is_served_anew(
    run_folder, tmp_path, monkeypatch
):
    """A learner retrains into the folder the server serves: the next chat uses the new
    weights, not the copy the server loaded before (no restart needed)."""
    from peft import LoraConfig, get_peft_model

    from ftlab.models import load_model
    from ftlab.training.checkpoints import save_adapter

    loads = []
    load = inference.load_for_inference
    monkeypatch.setattr(inference, "load_for_inference", lambda s: loads.append(s) or load(s))
    folder, store, http = serving_a_copy(run_folder, tmp_path, "mine")
    ask = {"model": "mine", "messages": HELLO, "max_tokens": 8, "temperature": 0}

    def answer() -> str:
        return http.post("/v1/chat/completions", json=ask).json()["choices"][0]["message"]

    before = answer()
    assert answer() == before and len(loads) == 1  # answered from the cache
    model, _ = load_model(DEFAULT_MODEL, device="cpu")
    torch.manual_seed(0)
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    save_adapter(get_peft_model(model, lora), folder / "adapter", DEFAULT_MODEL)  # random LoRA
    assert answer() != before and len(loads) == 2
    sidecar = folder / "adapter" / ADAPTER_SIDECAR
    sidecar.write_text(json.dumps({"base_model": "someone/bigger-model"}))  # --model elsewhere
    refused = http.post("/v1/chat/completions", json=ask)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_supported"
    assert "trained from someone/bigger-model" in refused.json()["error"]["message"]
    store.close()


@pytest.mark.slow
def test_ftlab_serve_adapter_with_the_openai_sdk(run_folder, tmp_path):
    server = start(tmp_path / "data", adapters={"support": run_folder})
    try:
        api = client(server)
        assert "support" in [m.id for m in api.models.list()]
        answer = api.chat.completions.create(
            model="support", messages=HELLO, max_tokens=8, temperature=0
        )
        assert answer.model == "support" and answer.choices[0].message.content
        with pytest.raises(openai.NotFoundError, match="--adapter NAME=FOLDER"):
            api.chat.completions.create(model="runs/mine", messages=HELLO, max_tokens=2)
    finally:
        server.stop()


def test_ftlab_serve_refuses_an_adapter_it_cannot_serve(tmp_path):
    done = run_ftlab("serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--adapter", "x")
    assert done.returncode == 2 and "must be NAME=FOLDER" in done.stderr
    done = run_ftlab(
        "serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--adapter", f"x={tmp_path}"
    )
    assert done.returncode == 1 and "no LoRA adapter in" in done.stderr
    done = run_ftlab(
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "d"),
        "--adapter",
        "x=a",
        "--adapter",
        "x=b",
    )
    assert done.returncode == 1 and "'x' more than once" in done.stderr
