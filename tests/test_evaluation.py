"""Evaluation on the support task: real greedy generation, scored with the course metric."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_ftlab
from other_models import GEMMA, LLAMA3, PHI3, tiny_model
from tokenizers import AddedToken

from ftlab import cli
from ftlab.chat_template import ChatTemplateError
from ftlab.evaluation import evaluate
from ftlab.generation import (
    end_of_turn_id,
    generate_batch,
    model_context,
    padded_batch,
    shared_prefix_length,
    stop_token_ids,
)
from ftlab.jsonl import write_jsonl
from ftlab.models import compute_dtype, load_model, prepare_for_inference
from ftlab.support import METRIC_NAMES, make_example

EXAMPLES = [
    make_example("Where is my order AC-12345?", "order_status", "AC-12345", "neutral"),
    make_example("I love my new boots, thank you!", "other", None, "positive"),
    make_example(
        "Cancel AC-54321 please, I ordered it twice.", "cancel_order", "AC-54321", "neutral"
    ),
]


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
    frame = result.to_frame()
    assert list(frame.columns)[:3] == ["user", "gold", "answer"]
    assert [json.loads(gold) for gold in frame["gold"]] == [row["gold"] for row in rows]
    evaluate(base, EXAMPLES, limit=1, predictions_path=path)  # earlier predictions: replaced
    assert len(path.read_text().splitlines()) == 1
    assert any("null" in gold for gold in frame["gold"])  # JSON, not a Python dict with None
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


def test_shared_prefix_stops_before_the_first_difference_and_leaves_every_row_a_token():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 9, 4], [1, 2, 3]]) == 2
    assert shared_prefix_length([[5, 6, 7], [5, 6, 7, 8]]) == 2  # the shorter keeps one token
    assert shared_prefix_length([[1, 2], [3, 4]]) == 0
    assert shared_prefix_length([]) == 0


def test_padding_sits_between_the_shared_prefix_and_each_rows_own_tokens():
    batch = padded_batch([7, 8], [[1], [2, 3, 4]], pad_id=0, device="cpu")
    assert batch["input_ids"].tolist() == [[7, 8, 0, 0, 1], [7, 8, 2, 3, 4]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]
    plain = padded_batch([], [[1], [2, 3]], pad_id=0, device="cpu")  # ordinary left padding
    assert plain["input_ids"].tolist() == [[0, 1], [2, 3]]


@pytest.mark.slow
def test_a_shared_prefix_computed_once_gives_the_same_answers(base, monkeypatch):
    """Few-shot prompts share a long beginning; reusing its cache must not change an answer.

    Run in float32 everywhere (no bf16 autocast), where both ways give the same numbers
    to rounding, so the comparison does not depend on the CPU.
    """
    import contextlib

    from ftlab.evaluation import build_prompts

    monkeypatch.setattr("ftlab.generation.autocast", lambda device: contextlib.nullcontext())
    model, tokenizer = base
    few_shot = build_prompts(EXAMPLES, shots=EXAMPLES[:2])
    plain = build_prompts(EXAMPLES)
    for prompts in (few_shot, plain):
        once = generate_batch(model, tokenizer, prompts, max_new_tokens=24)
        every_row = generate_batch(model, tokenizer, prompts, max_new_tokens=24, share_prefix=False)
        assert once == every_row
        assert all(once)
    # Rows of different lengths in one batch: padding in the middle must not leak in.
    alone = [generate_batch(model, tokenizer, [p], max_new_tokens=24)[0] for p in few_shot]
    assert generate_batch(model, tokenizer, few_shot, max_new_tokens=24) == alone


def test_answers_end_at_the_chat_templates_end_of_turn_token(base, monkeypatch):
    """A hub model's generation config may name another end token than its chat template's
    end of turn; the answer must still end where the turn does."""
    import copy

    model, tokenizer = base
    question = [[{"role": "user", "content": "What is the capital of France?"}]]
    expected = generate_batch(model, tokenizer, question, max_new_tokens=24)
    assert stop_token_ids(model, tokenizer) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    other = copy.deepcopy(tokenizer)
    other.eos_token = "<|endoftext|>"  # neither it nor the config's end is <|im_end|> now
    monkeypatch.setattr(model.generation_config, "eos_token_id", other.eos_token_id)
    assert stop_token_ids(model, other) == [other.eos_token_id, tokenizer.eos_token_id]
    assert generate_batch(model, other, question, max_new_tokens=24) == expected


def test_the_end_of_turn_token_is_read_from_the_chat_template(base):
    """Phi-3 closes a turn with <|end|>, Llama 3 with <|eot_id|>: whatever special token the
    template writes after a reply ends an answer; a plain line break does not (answers hold
    them), and neither does anything of a tokenizer without a template."""
    import copy

    model, tokenizer = base
    phi3 = copy.deepcopy(tokenizer)
    phi3.add_special_tokens({"additional_special_tokens": ["<|end|>", "<|assistant|>"]})
    phi3.chat_template = PHI3
    assert end_of_turn_id(phi3) == phi3.convert_tokens_to_ids("<|end|>")
    assert phi3.convert_tokens_to_ids("<|end|>") in stop_token_ids(model, phi3)
    phi3.chat_template = tokenizer.chat_template  # asked again when the template changes
    assert end_of_turn_id(phi3) == tokenizer.convert_tokens_to_ids("<|im_end|>")
    # Llama 3's tokenizer marks <|eot_id|> special among its added tokens only.
    llama3 = copy.deepcopy(tokenizer)
    names = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    llama3.add_tokens([AddedToken(name, special=True) for name in names])
    llama3.chat_template = LLAMA3
    assert "<|eot_id|>" not in llama3.all_special_tokens
    assert end_of_turn_id(llama3) == llama3.convert_tokens_to_ids("<|eot_id|>")
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    assert end_of_turn_id(plain) is None
    plain.chat_template = None
    assert end_of_turn_id(plain) is None
    assert stop_token_ids(model, plain) == [tokenizer.eos_token_id]


@pytest.mark.parametrize("template", [GEMMA, None], ids=["no system role", "no template"])
def test_a_template_that_cannot_render_the_prompts_is_a_clear_error(tmp_path, capsys, template):
    folder = tiny_model(tmp_path / "model", template=template)
    with pytest.raises(ChatTemplateError, match="Fix: ") as raised:
        evaluate(str(folder), EXAMPLES)
    assert str(folder) in str(raised.value)
    data = write_jsonl(tmp_path / "test.jsonl", EXAMPLES)
    assert cli.main(["eval", "--model", str(folder), "--data", str(data)]) == 1
    error = capsys.readouterr().err
    assert "Traceback" not in error and "Fix: " in error
    assert ("System role not supported" if template else "no chat template") in error


def test_answers_are_generated_without_dropout_and_the_mode_is_restored(base):
    model, tokenizer = base
    modes = []
    hook = model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    try:
        model.train()
        generate_batch(model, tokenizer, [EXAMPLES[0]["messages"][:2]], max_new_tokens=2)
        assert modes and not any(modes)
        assert model.training
    finally:
        hook.remove()
        model.eval()


def test_evaluate_refuses_missing_or_empty_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="No evaluation file"):
        evaluate("smollm2-135m-instruct", tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="Nothing to evaluate"):
        evaluate("smollm2-135m-instruct", [])


def test_evaluate_refuses_more_shots_than_the_file_has_or_prompts_too_long(base, monkeypatch):
    with pytest.raises(ValueError, match="4 few-shot examples were asked for, but the few"):
        evaluate("no-such-model", EXAMPLES[:1], few_shot=4, train_data=EXAMPLES)
    story = "I walked up the trail with my new boots and the rain came down hard. " * 300
    long_shots = [make_example(story, "other", None, "neutral") for _ in range(3)]
    with pytest.raises(
        ValueError, match=r"example 1 .* is [\d,]+ tokens.*reads at most"
    ) as too_long:
        evaluate(base, EXAMPLES[:1], few_shot=3, train_data=long_shots)
    assert "use fewer few-shot examples" in str(too_long.value)
    # Without shots the fix is the example itself (a short model context, as GPT-2's 1,024).
    monkeypatch.setattr(base[0].config, "max_position_embeddings", 1_024)
    with pytest.raises(ValueError, match=r"example 2 .*reads at most 1,024") as too_long:
        evaluate(base, [EXAMPLES[0], long_shots[0]])
    assert "shorten or remove that example" in str(too_long.value)


@pytest.mark.slow
def test_eval_command_prints_one_json_object(tmp_path):
    data = str(write_jsonl(tmp_path / "test.jsonl", EXAMPLES))
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


@pytest.mark.slow
def test_eval_command_label_guide_changes_what_the_model_is_asked(tmp_path):
    """--label-guide reaches the prompt: the same message gets another greedy answer."""
    data = str(write_jsonl(tmp_path / "test.jsonl", EXAMPLES[:1]))
    answers = {}
    for name, extra in (("plain", []), ("guided", ["--label-guide"])):
        out = tmp_path / f"{name}.jsonl"
        args = ["eval", "--model", "smollm2-135m-instruct", "--data", data, "--predictions"]
        done = run_ftlab(*args, str(out), *extra)
        assert done.returncode == 0, done.stderr
        assert ("label guide" in done.stdout) == bool(extra)
        answers[name] = json.loads(out.read_text())["answer"]
    assert answers["plain"] != answers["guided"]


def test_a_tokenizer_limit_below_the_model_positions_is_the_context(base):
    """A tokenizer may say its model reads fewer tokens than the config has positions for:
    evaluation and the server then keep to the lower figure, as the checker and training do."""
    import copy

    from ftlab.server.decoding import ContextTooLong, answer_room

    model, tokenizer = base
    assert model_context(model, tokenizer) == 8192  # SmolLM2's tokenizer sets no limit
    short = copy.deepcopy(tokenizer)
    short.model_max_length = 512
    assert model_context(model, short) == 512
    assert answer_room(model, short, [1] * 500) == 12
    with pytest.raises(ContextTooLong, match="maximum context length is 512 tokens"):
        answer_room(model, short, [1] * 600)


def test_support_only_options_on_text_answers_name_the_command_line_options(tmp_path):
    reply = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    data = tmp_path / "text.jsonl"
    data.write_text(json.dumps({"messages": reply}) + "\n")
    with pytest.raises(ValueError, match=r"label guide \(label_guide, --label-guide\)"):
        evaluate("no-such-model", data, label_guide=True)  # refused before any model loads
