"""Local LoRA training: label masking, exact shortcuts, a real tiny run, resume and reload."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import MESSAGES, tiny

from ftlab import cli
from ftlab.jsonl import write_jsonl
from ftlab.models import (
    ADAPTER_SIDECAR,
    DEFAULT_MODEL,
    compute_dtype,
    load_model,
    store_weights_for_autocast,
)
from ftlab.support import load_examples, make_example
from ftlab.training import (
    InvalidDataError,
    LiveLossPlot,
    ProgressBar,
    TrainConfig,
    TrainEvent,
    train,
)
from ftlab.training.data import IGNORE, TokenizedExample, collate, epoch_batches, tokenize_example
from ftlab.training.frozen import first_adapted_layer, frozen_outputs
from ftlab.training.loop import check_data, learning_rate, lora_model, training_model
from ftlab.training.loss import PART_TOKENS, backward_in_parts, batch_loss, part_size
from ftlab.training.plots import loss_image, read_metrics


def test_only_assistant_tokens_are_learned(tokenizer):
    example = make_example(*MESSAGES[0])
    row = tokenize_example(tokenizer, example["messages"])
    learned = [t for t, label in zip(row.input_ids, row.labels, strict=True) if label != IGNORE]
    answer = example["messages"][2]["content"]
    assert tokenizer.decode(learned) == answer + "<|im_end|>\n"
    first = row.labels.index(learned[0])
    assert all(label == IGNORE for label in row.labels[:first])  # the whole prompt is masked
    assert tokenizer.decode(row.input_ids[:first]).endswith("<|im_start|>assistant\n")


def test_weight_zero_answers_are_not_learned(tokenizer):
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "BAD ANSWER", "weight": 0},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "GOOD ANSWER"},
    ]
    row = tokenize_example(tokenizer, messages)
    learned = tokenizer.decode(
        [t for t, lab in zip(row.input_ids, row.labels, strict=True) if lab != IGNORE]
    )
    assert learned == "GOOD ANSWER<|im_end|>\n"
    assert "BAD ANSWER" in tokenizer.decode(row.input_ids)


def test_batches_cover_every_example_once_and_group_by_length():
    lengths = [5, 90, 7, 88, 6, 91, 8, 87, 50]
    batches = epoch_batches(lengths, batch_size=4, seed=0, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert epoch_batches(lengths, 4, 0, 1) == batches
    assert any(epoch_batches(lengths, 4, 0, e) != batches for e in (2, 3, 4))
    for batch in batches:
        spread = max(lengths[i] for i in batch) - min(lengths[i] for i in batch)
        assert spread <= 45  # short and long examples are not mixed


def test_learning_rate_warms_up_then_decays_to_zero():
    config = TrainConfig(data="x", out="y", lr=1e-3, warmup_ratio=0.1)
    rates = [learning_rate(config, step, 100) for step in range(100)]
    assert rates[9] == pytest.approx(1e-3)
    assert rates[0] < rates[5] < rates[9]
    assert rates[10] > rates[50] > rates[99] > 0


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"epochs": 2.5}, "epochs must be a whole number, got 2.5"),
        ({"rank": True}, "rank must be a whole number, got True"),
        ({"batch_size": 4.0}, "batch_size must be a whole number, got 4.0"),
        ({"lr": "0.001"}, "lr must be a number, got '0.001'"),
        ({"seed": 2**64}, "seed must be from 0 to 2**64 - 1"),
        ({"epochs": 0}, "epochs must be at least 1, got 0"),
    ],
)
def test_settings_of_the_wrong_kind_are_refused_before_anything_runs(changes, said):
    with pytest.raises(ValueError, match=f"^Invalid training settings: {re.escape(said)}"):
        TrainConfig(data="x", out="y", **changes)


def test_numpy_numbers_become_plain_ones_that_json_can_write(tmp_path):
    config = TrainConfig(data="x", out="y", epochs=np.int64(3), lr=np.float32(0.5))
    assert (type(config.epochs), type(config.lr), config.epochs) == (int, float, 3)
    config.to_json(tmp_path / "config.json")  # would fail on numpy's int64


def test_shared_prefix_and_selected_logits_give_the_library_loss(tokenizer):
    model, _ = load_model(device="cpu")  # these tests compare CPU numerics
    model = lora_model(model, TrainConfig(data="x", out="y"))
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # make the adapters matter, so the prefix path is really tested
            parameter.data.normal_(0, 0.02)
    rows = [tokenize_example(tokenizer, make_example(*m)["messages"]) for m in MESSAGES[:4]]
    shared = collate(rows, tokenizer.pad_token_id, share_prefix=True)
    plain = collate(rows, tokenizer.pad_token_id, share_prefix=False)
    assert shared.prefix.numel() > 30  # the system prompt is shared
    with torch.no_grad():  # in float32, so the only differences are rounding
        ours_shared = batch_loss(model.get_base_model(), shared, mixed_precision=False)
        ours_plain = batch_loss(model.get_base_model(), plain, mixed_precision=False)
        library = model(input_ids=plain.input_ids, labels=plain.labels).loss
        fast = batch_loss(model.get_base_model(), shared)
    assert ours_shared.tokens == ours_plain.tokens == sum(r.trained_tokens for r in rows)
    assert float(ours_shared.loss) == pytest.approx(float(ours_plain.loss), rel=1e-4)
    assert float(ours_plain.loss) == pytest.approx(float(library), rel=1e-4)
    assert float(fast.loss) == pytest.approx(float(library), rel=2e-2)  # bf16 autocast


def test_stored_frozen_outputs_give_the_same_loss_and_gradients(tokenizer):
    model, _ = load_model(device="cpu")
    model = lora_model(model, TrainConfig(data="x", out="y", adapted_layers=10))
    base = model.get_base_model()
    assert first_adapted_layer(base) == 20
    assert not any(p.requires_grad for p in base.model.layers[19].parameters())
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.02)
    rows = [tokenize_example(tokenizer, make_example(*m)["messages"]) for m in MESSAGES[:6]]
    pad = tokenizer.pad_token_id
    trainable = [p for p in model.parameters() if p.requires_grad]

    def loss_and_gradients(batch, mixed_precision):
        model.zero_grad()
        parts = batch_loss(base, batch, mixed_precision)
        parts.loss.backward()
        return parts.loss.item(), torch.cat([p.grad.flatten() for p in trainable])

    for mixed_precision, tolerance in ((False, 1e-4), (True, 1e-2)):
        # Stored in batches of 4 while the step batches all 6: the states must not
        # depend on which rows they were computed with.
        frozen = frozen_outputs(base, rows, 20, pad, "cpu", 4, mixed_precision)
        assert [len(state) for state in frozen] == [len(row) for row in rows]
        whole_loss, whole_grad = loss_and_gradients(collate(rows, pad), mixed_precision)
        stored = collate(rows, pad, True, frozen, 20)
        stored_loss, stored_grad = loss_and_gradients(stored, mixed_precision)
        assert stored_loss == pytest.approx(whole_loss, rel=tolerance)
        cosine = torch.nn.functional.cosine_similarity(stored_grad, whole_grad, dim=0)
        assert float(cosine) > 1 - tolerance
        assert float(stored_grad.norm()) == pytest.approx(float(whole_grad.norm()), rel=tolerance)
    # Progress after each batch of 4, in tokens; a stop between batches ends the pass.
    reports, polls = [], []
    frozen_outputs(base, rows, 20, pad, "cpu", 4, progress=lambda *r: reports.append(r))
    tokens = sum(len(row) for row in rows)
    assert len(reports) == 2 and reports[-1] == (tokens, tokens) and reports[0][0] < tokens

    def second_poll() -> bool:
        polls.append(1)
        return len(polls) == 2

    assert frozen_outputs(base, rows, 20, pad, "cpu", 4, should_stop=second_poll) is None
    assert len(polls) == 2


@pytest.mark.skipif(
    compute_dtype(torch.device("cpu")) == torch.float32,
    reason="this CPU has no fast bf16, so training keeps the weights in float32",
)
def test_bf16_frozen_weights_keep_the_autocast_loss_and_gradients(tokenizer):
    model, _ = load_model(device="cpu")  # these tests compare CPU numerics
    model = lora_model(model, TrainConfig(data="x", out="y"))
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.02)
    rows = [tokenize_example(tokenizer, make_example(*m)["messages"]) for m in MESSAGES[:4]]
    batch = collate(rows, tokenizer.pad_token_id)

    def loss_and_gradient():
        model.zero_grad(set_to_none=True)
        loss = batch_loss(model.get_base_model(), batch).loss
        loss.backward()
        return loss.item(), model.base_model.model.model.layers[-1].self_attn.q_proj.lora_A[
            "default"
        ].weight.grad.clone()

    before_loss, before_grad = loss_and_gradient()
    store_weights_for_autocast(model)
    after_loss, after_grad = loss_and_gradient()
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad and p.ndim == 2}
    trained = {p.dtype for p in model.parameters() if p.requires_grad}
    assert torch.bfloat16 in frozen  # the base linear weights were converted...
    assert trained == {torch.float32}  # ...and the adapters were not
    assert after_loss == pytest.approx(before_loss, rel=1e-3)
    cosine = torch.nn.functional.cosine_similarity(before_grad.flatten(), after_grad.flatten(), 0)
    assert float(cosine) > 0.999


def test_training_model_stores_frozen_matrices_in_the_fast_dtype_and_keeps_the_rest_float32():
    # On whatever device load_model picks (the CPU here, CUDA on a GPU machine).
    model, _ = training_model(TrainConfig(data="x", out="y"))
    base = model.get_base_model()
    fast = compute_dtype(base.device)
    if fast == torch.float32 or base.device.type == "mps":
        pytest.skip(f"{base.device.type} keeps float32 weights (no fast bf16 here)")
    assert base.model.layers[0].mlp.down_proj.weight.dtype == fast  # a frozen layer (no adapter)
    assert base.model.layers[-1].self_attn.q_proj.base_layer.weight.dtype == fast
    # Norms, embeddings (tied to the output layer) and the adapters stay float32, so the
    # residual stream is not rounded and optimizer updates are not lost.
    assert base.model.norm.weight.dtype == torch.float32
    assert base.model.layers[0].input_layernorm.weight.dtype == torch.float32
    assert base.get_input_embeddings().weight.dtype == torch.float32
    assert base.get_output_embeddings().weight.dtype == torch.float32
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert base.training


def test_micro_batches_give_the_whole_batch_gradient(tokenizer):
    model, _ = load_model(device="cpu")  # these tests compare CPU numerics
    model = lora_model(model, TrainConfig(data="x", out="y"))
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # non-zero, so every adapter weight gets a gradient
            parameter.data.normal_(0, 0.02)
    # Five rows in parts of 2, 2 and 1: the parts hold different numbers of learned tokens,
    # so averaging the parts' mean losses without weights would give other gradients.
    rows = [tokenize_example(tokenizer, make_example(*m)["messages"]) for m in MESSAGES[:5]]
    assert len({r.trained_tokens for r in rows}) > 1

    def gradients(micro_batch_size):
        model.zero_grad(set_to_none=True)
        loss, tokens, _ = backward_in_parts(
            model.get_base_model(),
            rows,
            tokenizer.pad_token_id,
            torch.device("cpu"),
            micro_batch_size,
            mixed_precision=False,
        )
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return loss, tokens, grads

    whole_loss, whole_tokens, whole = gradients(None)
    part_loss, part_tokens, parts = gradients(2)
    assert part_tokens == whole_tokens == sum(r.trained_tokens for r in rows)
    assert part_loss == pytest.approx(whole_loss, rel=1e-4)
    for name, grad in whole.items():
        assert float(grad.norm()) > 0, name
        assert float((parts[name] - grad).norm()) <= 1e-3 * float(grad.norm()), name


def test_adapters_go_on_the_top_layers_and_too_many_are_refused():
    model, _ = load_model(device="cpu")
    layers = model.config.num_hidden_layers
    with pytest.raises(ValueError, match=f"has only {layers} decoder layers"):
        lora_model(model, TrainConfig(data="x", out="y", adapted_layers=layers + 1))
    wrapped = lora_model(model, TrainConfig(data="x", out="y", adapted_layers=3))
    adapted = {
        int(name.split(".layers.")[1].split(".")[0])
        for name, p in wrapped.named_parameters()
        if p.requires_grad
    }
    assert adapted == {layers - 3, layers - 2, layers - 1}
    # Every linear layer of those blocks, as with "all-linear".
    names = {n.split(".")[-4] for n, p in wrapped.named_parameters() if "lora_A" in n}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_cli_takes_a_layer_count_or_all(capsys):
    from ftlab.commands.train import _layers

    assert _layers("all") is None and _layers("12") == 12
    with pytest.raises(SystemExit):
        cli.main(["train", "--data", "x", "--out", "y", "--adapted-layers", "0"])
    assert "--adapted-layers: must be 1 or more, not 0" in capsys.readouterr().err


def test_invalid_data_is_refused_with_the_report(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user"}]}\nnot json\n')
    with pytest.raises(InvalidDataError) as caught:
        train(tiny(str(bad), tmp_path / "run"))
    assert not caught.value.report.valid
    assert "invalid_json" in str(caught.value)
    assert "auto: OpenAI's rule" not in str(caught.value), "epochs are `ftlab validate`'s business"
    assert not (tmp_path / "run" / "adapter").exists()


def test_resuming_with_other_settings_is_refused_before_any_note(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    write_jsonl(
        data,
        [make_example(f"Where is AC-1000{i}?", "order_status", None, "neutral") for i in range(10)],
    )
    out = tmp_path / "run"
    out.mkdir()
    earlier = tiny(str(data), out, epochs=3)  # the run's settings, without a checkpoint yet
    (out / "config.json").write_text(json.dumps({"config": earlier.to_dict()}))
    assert cli.main(["train", "--data", str(data), "--out", str(out), "--resume"]) == 1
    printed = capsys.readouterr()
    assert "Cannot resume the run" in printed.err and "epochs: 3 -> 2" in printed.err
    assert "learning rate falls towards zero by the last step it planned" in printed.err
    assert "no checkpoint" not in printed.out
    again = ["train", "--data", str(data), "--out", str(out), "--resume", "--epochs", "3"]
    assert cli.main([*again, "--lr", "1"]) == 1
    printed = capsys.readouterr()
    assert "lr: " in printed.err and "learning rate falls" not in printed.err  # same length


def test_a_validation_file_may_be_small_but_a_training_file_may_not(tmp_path):
    small = tmp_path / "five.jsonl"
    write_jsonl(
        small,
        [
            make_example(f"Where is AC-1000{i}?", "order_status", f"AC-1000{i}", "neutral")
            for i in range(5)
        ],
    )
    assert len(check_data(str(small), validation=True)) == 5
    with pytest.raises(InvalidDataError, match="too_few_examples"):
        check_data(str(small))


def test_config_round_trips_and_rejects_bad_values(tmp_path):
    config = tiny("d.jsonl", tmp_path, max_steps=3)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"config": config.to_dict()}))
    assert TrainConfig.from_json(path) == config
    with pytest.raises(ValueError, match="rank must be at least 1"):
        tiny("d.jsonl", tmp_path, rank=0)
    with pytest.raises(ValueError, match="Unknown training settings"):
        TrainConfig.from_dict({**config.to_dict(), "learning_rate": 1})
    with pytest.raises(ValueError, match="micro_batch_size must be at least 1"):
        tiny("d.jsonl", tmp_path, micro_batch_size=0)
    with pytest.raises(ValueError, match="adapted_layers must be at least 1"):
        tiny("d.jsonl", tmp_path, adapted_layers=0)
    # A run saved before adapted_layers existed adapted every layer, and resumes that way.
    older = {k: v for k, v in config.to_dict().items() if k != "adapted_layers"}
    path.write_text(json.dumps({"config": older}))
    assert TrainConfig.from_json(path).adapted_layers is None
    # How a step is split in memory may change on resume; what it computes may not.
    assert tiny("d.jsonl", tmp_path, max_steps=3, micro_batch_size=2).differences(config) == []
    assert tiny("d.jsonl", tmp_path, max_steps=3, lr=1e-3).differences(config) != []


@pytest.mark.slow
# With adapters on the top 4 layers only, the 26 below are frozen: their outputs are stored.
@pytest.mark.parametrize("adapted_layers", [None, 4])
def test_tiny_run_learns_and_the_adapter_reloads_to_the_same_outputs(
    data, valid, tmp_path, adapted_layers, tokenizer
):
    from peft import PeftModel

    events = []
    config = tiny(data, tmp_path / "run", epochs=3, valid=valid, adapted_layers=adapted_layers)
    result = train(config, callback=events.append)
    kinds = [e.kind for e in events]
    # The frozen layers run once, before training starts, and report how far they are.
    prepared = [(e.prepared, e.to_prepare) for e in events if e.kind == "prepare"]
    tokens = sum(len(tokenize_example(tokenizer, e["messages"])) for e in load_examples(data))
    assert prepared == ([(tokens, tokens)] if adapted_layers else [])
    assert kinds[len(prepared)] == "start" and kinds[-1] == "end"
    assert kinds.count("step") == result.total_steps == 9
    assert kinds.count("eval") == kinds.count("checkpoint") == 3
    rows = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
    losses = [r["train_loss"] for r in rows if r["kind"] == "train"]
    assert len(losses) == 9
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3
    valid = [r["valid_loss"] for r in rows if r["kind"] == "eval"]
    assert valid[-1] < valid[0]
    assert result.plot_path.read_bytes()[:4] == b"\x89PNG"
    recorded = json.loads(result.config_path.read_text())
    assert recorded["config"]["epochs"] == 3
    assert recorded["resolved"]["frozen_layers"] == (26 if adapted_layers else 0)
    assert [(s, e) for s, e, _ in result.checkpoints] == [(3, 1), (6, 2), (9, 3)]
    assert result.trained_tokens > 0 and not result.stopped
    sidecar = json.loads((result.adapter_dir / ADAPTER_SIDECAR).read_text())
    assert sidecar["base_model"] == DEFAULT_MODEL

    merged, tokenizer = load_model(result.adapter_dir)
    base, _ = load_model()
    unmerged = PeftModel.from_pretrained(base, result.adapter_dir).eval()
    batch = tokenizer(
        [tokenizer.apply_chat_template(make_example(*MESSAGES[0])["messages"], tokenize=False)],
        return_tensors="pt",
    ).to(merged.device)
    with torch.no_grad():
        expected = unmerged(**batch).logits
        got = merged(**batch).logits
    assert torch.allclose(got, expected, atol=1e-3)
    fresh, _ = load_model()
    with torch.no_grad():
        assert not torch.allclose(fresh(**batch).logits, got, atol=1e-2)  # it did change


@pytest.mark.slow
@pytest.mark.parametrize("adapted_layers", [None, 4])
def test_stop_then_resume_gives_the_uninterrupted_result(
    data, tmp_path, adapted_layers, monkeypatch
):
    from safetensors.torch import load_file

    # Each run's thread count is chosen from the machine's load when it starts, and another
    # count changes the last bits of the sums: on a busy machine the two runs compared here
    # could start with different counts. (A resumed run keeps its own; tested elsewhere.)
    from ftlab.models import available_cores
    from ftlab.training import loop

    monkeypatch.setattr(loop, "sensible_threads", available_cores)  # a quiet machine's choice

    def settings(*args, **changes) -> TrainConfig:
        return tiny(*args, adapted_layers=adapted_layers, **changes)

    whole = train(settings(data, tmp_path / "whole"))
    polls = []

    def stop_in_second_epoch() -> bool:
        polls.append(1)
        return len(polls) > 4  # epoch 1 is 3 steps

    stopped = train(settings(data, tmp_path / "cut"), should_stop=stop_in_second_epoch)
    assert stopped.stopped
    assert [(s, e) for s, e, _ in stopped.checkpoints] == [(3, 1)]
    assert stopped.adapter_dir == stopped.checkpoints[0][2]
    assert not (tmp_path / "cut" / "adapter").exists()
    load_model(stopped.adapter_dir)  # the checkpoint is a usable model

    # A stop before the first step (during the frozen layers' pass, with top layers
    # only) ends the run with nothing saved and nothing trained.
    events = []
    early = train(settings(data, tmp_path / "early"), events.append, should_stop=lambda: True)
    assert early.stopped and early.checkpoints == [] and early.adapter_dir is None
    assert [e.kind for e in events] == ["start", "end"] and early.trained_tokens == 0

    with pytest.raises(ValueError, match=r"settings or data differ \(lr: 0.003 -> 0.01\)"):
        train(settings(data, tmp_path / "cut", resume=True, lr=1e-2))
    resumed = train(settings(data, tmp_path / "cut", resume=True))
    assert not resumed.stopped
    steps = [json.loads(line)["step"] for line in resumed.metrics_path.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    a = load_file(whole.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_live_loss_plot_draws_without_a_notebook(capsys):
    plot = LiveLossPlot(every_s=0)
    for done in (320, 900):
        plot(TrainEvent("prepare", step=0, total_steps=2, epoch=0.0, prepared=done, to_prepare=900))
    assert (plot.bar.n, plot.bar.total) == (900, 900)
    plot(TrainEvent("start", step=0, total_steps=2, epoch=0.0))
    assert (plot.bar.n, plot.bar.total) == (0, 2)  # the training bar replaced it
    for step, loss in ((1, 2.0), (2, 1.0)):
        plot(
            TrainEvent(
                "step",
                step=step,
                total_steps=2,
                epoch=step / 2,
                train_loss=loss,
                learning_rate=1e-3,
            )
        )
    plot(
        TrainEvent(
            "eval", step=2, total_steps=2, epoch=1.0, valid_loss=1.5, valid_mean_token_accuracy=0.5
        )
    )
    plot(TrainEvent("end", step=2, total_steps=2, epoch=1.0))
    assert plot.rows[-1] == {"step": 2, "valid_loss": 1.5}
    shown = loss_image(plot.rows)  # what the notebooks display, a PNG (not a Figure's repr)
    assert shown.format == "png" and shown.data[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "validation loss 1.5000" in out and "Resumed" not in out
    resumed = LiveLossPlot(every_s=0)
    resumed(TrainEvent("start", step=67, total_steps=134, epoch=1.0))
    assert "Resumed from the checkpoint at step 67 of 134 (epoch 1)" in capsys.readouterr().out


def test_a_bar_without_per_epoch_lines_shows_the_validation_loss_on_the_bar(capsys):
    bar = ProgressBar(per_epoch_lines=False)
    bar(TrainEvent("start", step=0, total_steps=2, epoch=0.0))
    bar(TrainEvent("step", step=1, total_steps=2, epoch=1.0, train_loss=2.0, learning_rate=1e-3))
    bar(TrainEvent("eval", step=1, total_steps=2, epoch=1.0, valid_loss=1.25))
    bar(TrainEvent("checkpoint", step=1, total_steps=2, epoch=1.0, checkpoint_dir=Path("c")))
    bar(TrainEvent("step", step=2, total_steps=2, epoch=2.0, train_loss=0.5, learning_rate=0.0))
    assert bar.bar.postfix == "loss=0.5000, lr=0.0e+00, valid_loss=1.2500"
    bar(TrainEvent("end", step=2, total_steps=2, epoch=2.0))
    assert capsys.readouterr().out == ""  # the bar itself is drawn on stderr


def test_resume_refuses_a_run_whose_data_changed(data, tmp_path):
    from ftlab.training import StaleRunError
    from ftlab.training.loop import _write_config, data_fingerprints

    copy = tmp_path / "train.jsonl"
    copy.write_bytes(Path(data).read_bytes())
    config = tiny(copy, tmp_path / "run", resume=True)
    (tmp_path / "run").mkdir()
    _write_config(config, tmp_path / "run" / "config.json", data_fingerprints(config))
    copy.write_bytes(copy.read_bytes() + copy.read_bytes().splitlines(keepends=True)[0])
    with pytest.raises(StaleRunError, match="contents of the training data file changed"):
        train(config)


def test_resume_follows_a_moved_course_folder_but_not_a_new_validation_file(data, tmp_path):
    from ftlab.training import StaleRunError
    from ftlab.training.loop import _write_config, data_fingerprints, resume_point

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    (old / "train.jsonl").write_bytes(Path(data).read_bytes())
    config = tiny(old / "train.jsonl", old / "run", resume=True)
    (old / "run").mkdir()
    _write_config(config, old / "run" / "config.json", data_fingerprints(config))
    old.rename(new)  # the learner moved the course: every recorded path is now wrong
    moved = tiny(new / "train.jsonl", new / "run", resume=True)
    assert resume_point(moved, new / "run") is None  # accepted; no checkpoint saved yet
    with pytest.raises(StaleRunError, match="a validation file was added"):
        resume_point(tiny(new / "train.jsonl", new / "run", resume=True, valid=data), new / "run")


def test_long_batches_are_split_evenly_and_short_ones_stay_whole():
    def rows(count: int, length: int) -> list[TokenizedExample]:
        return [TokenizedExample([1] * length, [IGNORE] * length) for _ in range(count)]

    assert part_size(rows(16, PART_TOKENS // 16)) == 16  # fits: one pass, as before
    assert part_size(rows(16, PART_TOKENS // 16 + 1)) == 8  # just over: two even halves
    assert part_size(rows(16, PART_TOKENS)) == 1  # one row is the whole budget
    assert part_size(rows(9, PART_TOKENS // 4)) == 3  # 9 rows of a quarter: 3 passes of 3
    assert part_size(rows(16, PART_TOKENS), micro_batch_size=4) == 4  # an explicit size wins


@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_a_step_whose_loss_or_gradient_is_not_finite_is_refused(tokenizer, monkeypatch, poison):
    from ftlab.training import NonFiniteLossError, loop

    model, _ = load_model(device="cpu")
    config = TrainConfig(data="x", out="y", adapted_layers=1)
    model = lora_model(model, config)
    optimizer = loop.new_optimizer(model, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    rows = [tokenize_example(tokenizer, make_example(*m)["messages"]) for m in MESSAGES[:2]]

    def overflowing(*args, **kwargs):
        loss, tokens, correct = backward_in_parts(*args, **kwargs)
        if poison == "gradient":
            trainable[0].grad[0, 0] = math.inf
            return loss, tokens, correct
        return math.nan, tokens, correct

    monkeypatch.setattr(loop, "backward_in_parts", overflowing)
    expected = "training loss became nan" if poison == "loss" else "gradient norm became inf"
    with pytest.raises(NonFiniteLossError, match=f"at step 7: the {expected}") as caught:
        loop.take_step(model, optimizer, rows, tokenizer.pad_token_id, config, step=7)
    assert "lower learning rate, for example" in str(caught.value)
    assert all(torch.equal(p, b) for p, b in zip(trainable, before, strict=True))
    assert all(p.grad is None for p in trainable) and not optimizer.state


def test_train_command_refuses_a_run_whose_loss_is_not_finite(data, tmp_path, monkeypatch, capsys):
    from ftlab.training import loop

    def overflowing(*args, **kwargs):
        return math.nan, 10, 0

    monkeypatch.setattr(loop, "backward_in_parts", overflowing)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", data, "--out", str(out), "--lr", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "error: Training stopped at step 1: the training loss became nan" in err
    assert "lower learning rate, for example 0.17 (--lr for ftlab train" in err
    assert not (out / "adapter").exists() and not (out / "checkpoints").exists()


def _quick_step(model, optimizer, rows, *args, **kwargs):
    """take_step without the arithmetic, for tests of the loop's bookkeeping."""
    return 1.0, 10, 5


def test_resume_carries_on_the_token_count_and_the_time_so_far(data, tmp_path, monkeypatch):
    monkeypatch.setattr("ftlab.training.loop.take_step", _quick_step)
    # The count of tokens trained so far comes from the checkpoint, not from the metrics log
    # (which older versions left without the checkpoint's last step when log_every > 1).
    whole = train(tiny(data, tmp_path / "whole", log_every=2))
    polls = []
    cut = train(
        tiny(data, tmp_path / "cut", log_every=2),
        should_stop=lambda: polls.append(1) or len(polls) > 4,  # after step 4
    )
    assert [(s, e) for s, e, _ in cut.checkpoints] == [(3, 1)]
    state = torch.load(cut.checkpoints[0][2] / "trainer_state.pt", weights_only=False)
    assert 0 < state["trained_tokens"] < cut.trained_tokens < whole.trained_tokens
    assert 0 < state["elapsed_s"] < cut.elapsed_s
    resumed = train(tiny(data, tmp_path / "cut", log_every=2, resume=True))
    assert resumed.trained_tokens == whole.trained_tokens
    first_new = next(r for r in read_metrics(resumed.metrics_path) if r["step"] > 3)
    assert first_new["elapsed_s"] > state["elapsed_s"]

    # The time goes on from the checkpoint's; a checkpoint saved before these were
    # recorded falls back to the metrics log (and to a clock starting at zero).
    last = resumed.checkpoints[-1][2] / "trainer_state.pt"
    state = torch.load(last, weights_only=False)
    torch.save({**state, "elapsed_s": 1000.0}, last)
    again = train(tiny(data, tmp_path / "cut", log_every=2, resume=True))
    assert again.elapsed_s > 1000 and again.trained_tokens == whole.trained_tokens
    torch.save({k: v for k, v in state.items() if k not in ("trained_tokens", "elapsed_s")}, last)
    older = train(tiny(data, tmp_path / "cut", log_every=2, resume=True))
    logged = max(r["trained_tokens"] for r in read_metrics(older.metrics_path))
    assert older.trained_tokens == logged and older.elapsed_s < 1000


def test_a_row_logged_every_few_steps_averages_those_steps(data, tmp_path, monkeypatch):
    losses = iter([4.0, 2.0, 1.0, 3.0, 5.0, 7.0])  # learned tokens 10, 30, 10, 30, ...
    learned = iter([10, 30] * 3)

    def step(*args, **kwargs):
        return next(losses), (n := next(learned)), n // 2

    monkeypatch.setattr("ftlab.training.loop.take_step", step)
    run = train(tiny(data, tmp_path / "run", log_every=2, max_steps=5))
    rows = [r for r in read_metrics(run.metrics_path) if r["kind"] == "train"]
    # Every 2nd step, the epoch's last (3 steps an epoch: a window never spans a checkpoint,
    # so a resumed run logs the same rows) and the last.
    assert [r["step"] for r in rows] == [2, 3, 4, 5]
    # Means over the window's learned tokens: (4*10 + 2*30) / 40, 1, 3, 5.
    assert [r["train_loss"] for r in rows] == [2.5, 1.0, 3.0, 5.0]
    assert [r["train_mean_token_accuracy"] for r in rows] == [0.5] * 4
    assert run.final_train_loss == 5.0


def test_resuming_a_finished_run_without_its_metrics_log_reports_no_loss(
    data, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr("ftlab.training.loop.take_step", _quick_step)
    out = tmp_path / "run"
    args = ["train", "--data", data, "--out", str(out), "--batch-size", "4", "--rank", "4"]
    assert cli.main(args) == 0
    (out / "metrics.jsonl").unlink()
    capsys.readouterr()
    assert cli.main([*args, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "no training loss to report" in printed and "adapter:" in printed


def test_a_resumed_run_keeps_the_thread_count_it_started_with(data, tmp_path, monkeypatch):
    from ftlab.training import loop

    monkeypatch.setattr(loop, "take_step", _quick_step)
    monkeypatch.delenv("FTLAB_THREADS", raising=False)
    threads = torch.get_num_threads()
    config_path = tmp_path / "run" / "config.json"

    def recorded() -> int:
        return json.loads(config_path.read_text())["resolved"]["threads"]

    try:
        monkeypatch.setattr(loop, "sensible_threads", lambda: 1)  # a busy machine at first
        polls = []
        train(tiny(data, tmp_path / "run"), should_stop=lambda: polls.append(1) or len(polls) > 3)
        assert recorded() == 1
        monkeypatch.setattr(loop, "sensible_threads", lambda: 2)  # a quiet one on resume
        train(tiny(data, tmp_path / "run", resume=True))
        assert recorded() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("FTLAB_THREADS", "2")  # ... unless FTLAB_THREADS says otherwise
        train(tiny(data, tmp_path / "run", resume=True))
        assert recorded() == 2
    finally:
        torch.set_num_threads(threads)
    assert loop.recorded_threads(tmp_path / "missing.json") is None


def test_an_interrupted_replacement_is_undone_at_the_next_start(tmp_path):
    from ftlab.training.checkpoints import remove_stale_staging

    out = tmp_path / "run"
    checkpoints = out / "checkpoints"
    for folder in (
        checkpoints / ".epoch-1.old",  # crashed between the two renames: put back
        checkpoints / ".epoch-2.old",  # crashed while deleting it after the swap: deleted
        checkpoints / "epoch-2",
        checkpoints / ".epoch-3.tmp-abc123",  # never finished: deleted
        out / ".adapter.old",  # put back
        out / ".notes.old",  # not ours: left alone
    ):
        folder.mkdir(parents=True)
        (folder / "file").write_text(folder.name)
    remove_stale_staging(out)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-1", "epoch-2"]
    assert (checkpoints / "epoch-1" / "file").read_text() == ".epoch-1.old"
    assert (checkpoints / "epoch-2" / "file").read_text() == "epoch-2"
    assert sorted(p.name for p in out.iterdir()) == [".notes.old", "adapter", "checkpoints"]
    assert (out / "adapter" / "file").read_text() == ".adapter.old"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_folder_that_cannot_be_made_gets_the_fix_not_an_errno(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    write_jsonl(
        data,
        [make_example(f"Where is AC-1000{i}?", "order_status", None, "neutral") for i in range(10)],
    )
    out = "/proc/ftlab-no-such-run"  # no folder can be made in /proc, even by root
    assert cli.main(["train", "--data", str(data), "--out", out, "--max-steps", "1"]) == 1
    printed = capsys.readouterr().err
    assert f"cannot write the run to {out}" in printed and "Fix: choose a folder" in printed


def test_the_training_file_is_refused_as_its_own_validation_file(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    write_jsonl(
        data,
        [make_example(f"Where is AC-1000{i}?", "order_status", None, "neutral") for i in range(10)],
    )
    same = ["--data", str(data), "--valid", str(tmp_path / "." / "train.jsonl")]
    for extra in (["--out", str(tmp_path / "run")], ["--estimate"]):
        assert cli.main(["train", *same, *extra]) == 1
        assert "is the training file: its loss would measure" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
