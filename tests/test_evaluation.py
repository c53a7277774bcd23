"""Evaluation on the support task: real greedy generation, scored with the course metric."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_ftlab

from ftlab.evaluation import evaluate
from ftlab.generation import generate_batch
from ftlab.models import compute_dtype, load_model, prepare_for_inference
from ftlab.support import METRIC_NAMES, make_example

EXAMPLES = [
    make_example("Where is my order AC-12345?", "order_status", "AC-12345", "neutral"),
    make_example("I love my new boots, thank you!", "other", None, "positive"),
    make_example(
        "Cancel AC-54321 please, I ordered it twice.", "cancel_order", "AC-54321", "neutral"
    ),
]


def write_jsonl(path, examples) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return str(path)


@pytest.fixture(scope="module")
def base():
    return load_model()


@pytest.mark.slow
def test_evaluate_scores_every_example_and_writes_predictions(base, tmp_path):
    path = tmp_path / "predictions.jsonl"
    result = evaluate(base, EXAMPLES, limit=2, predictions_path=path)
    assert result.scores.n == 2
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == result.predictions
    assert [r["user"] for r in rows] == [
        "Where is my order AC-12345?",
        "I love my new boots, thank you!",
    ]
    for row in rows:
        assert set(row) == {"user", "gold", "answer", *METRIC_NAMES}
        assert isinstance(row["answer"], str)
    exact = sum(r["exact"] for r in rows) / 2
    assert result.scores.exact == exact
    assert list(result.to_frame().columns)[:3] == ["user", "gold", "answer"]
    assert "<table>" in result._repr_html_() and "exact" in result._repr_html_()


@pytest.mark.skipif(
    compute_dtype(torch.device("cpu")) == torch.float32,
    reason="this CPU has no fast bf16, so models keep their float32 weights",
)
def test_inference_models_store_bf16_weights_and_give_the_same_answers():
    from ftlab.evaluation import build_prompts

    prompts = build_prompts(EXAMPLES, [], None, 0)
    model, tokenizer = load_model(device="cpu")
    before = generate_batch(model, tokenizer, prompts, max_new_tokens=24)
    prepare_for_inference(model)
    assert model.model.layers[0].mlp.down_proj.weight.dtype == torch.bfloat16
    assert model.get_output_embeddings().weight.dtype == torch.float32  # tied to the embeddings
    assert generate_batch(model, tokenizer, prompts, max_new_tokens=24) == before


@pytest.mark.slow
def test_few_shot_prompts_are_longer_but_score_the_same_examples(base, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", EXAMPLES)
    result = evaluate(base, EXAMPLES[:1], few_shot=2, train_data=train)
    assert result.scores.n == 1
    assert result.predictions[0]["user"] == "Where is my order AC-12345?"


def test_evaluate_refuses_missing_or_empty_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="No evaluation file"):
        evaluate("smollm2-135m-instruct", tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="Nothing to evaluate"):
        evaluate("smollm2-135m-instruct", [])


@pytest.mark.slow
def test_eval_command_prints_one_json_object(tmp_path):
    data = write_jsonl(tmp_path / "test.jsonl", EXAMPLES)
    done = run_ftlab(
        "eval", "--model", "smollm2-135m-instruct", "--data", data, "--limit", "1", "--json"
    )
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    assert set(scores) == {"n", *METRIC_NAMES} and scores["n"] == 1


def test_train_command_refuses_an_invalid_file_with_the_report(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n')
    done = run_ftlab("train", "--data", str(bad), "--out", str(tmp_path / "run"))
    assert done.returncode == 1
    assert "empty_messages" in done.stderr
    assert not (tmp_path / "run" / "adapter").exists()
