"""`ftlab train` on base models other than the built-in SmolLM2: other layer layouts (GPT-2),
tokenizers without pad or eos tokens, short contexts, a chat template without a reply prompt,
one that leaves out system messages and one written for another tokenizer. A refused run must
leave an earlier run in its output folder as it was."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from other_models import LLAMA3, NO_GENERATION_PROMPT, tiny_model
from test_validation_templates import DROPS_SYSTEM
from training_helpers import MESSAGES, tiny

from ftlab.chat_template import render
from ftlab.generation import generate_batch
from ftlab.jsonl import write_jsonl
from ftlab.models import ADAPTER_SIDECAR, ModelNotFoundError, load_model, load_tokenizer
from ftlab.support import SYSTEM_PROMPT, load_examples, make_example
from ftlab.training import loop, train
from ftlab.training.data import IGNORE, tokenize_examples
from ftlab.training.estimate import estimate_time
from ftlab.training.frozen import decoder_blocks, first_adapted_layer
from ftlab.training.loop import StaleRunError, training_model, training_rows
from ftlab.validation.stats import context_length

# ChatML that refuses a conversation without a system message first.
SYSTEM_FIRST = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ raise_exception('A system message must come first') }}{% endif %}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MODELS = {  # name: tiny_model's settings
    "gpt2": {"arch": "gpt2"},
    "gpt2-short": {"arch": "gpt2", "context": 128},
    "llama-short": {"context": 64},
    "no-pad-or-eos": {"pad": False, "eos": False},
    "no-reply-prompt": {"template": NO_GENERATION_PROMPT},
    "system-first": {"template": SYSTEM_FIRST},
    "drops-system": {"template": DROPS_SYSTEM},
    "llama3": {"template": LLAMA3},  # the built-in tokenizer with a Llama-3 template
    "qwen2": {"arch": "qwen2"},
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """`model_dir(name)`: the folder of one of MODELS, saved on first use."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = tiny_model(tmp_path_factory.mktemp(name), **MODELS[name])
        return made[name]

    return get


def earlier_run(out: Path) -> list[Path]:
    """An earlier run's adapter and checkpoint in `out` (what a new run would replace)."""
    kept = [out / "adapter" / ADAPTER_SIDECAR, out / "checkpoints" / "epoch-1" / ADAPTER_SIDECAR]
    for path in kept:
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"base_model": "earlier"}))
    return kept


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_another_family_trains_with_every_layer_adapted_and_its_adapter_loads(
    model_dir, data, tmp_path, arch
):
    model = model_dir(arch)
    result = train(tiny(data, tmp_path / "run", model=str(model), epochs=1, max_steps=1))
    resolved = json.loads(result.config_path.read_text())["resolved"]
    assert resolved["frozen_layers"] == 0 and result.adapter_dir.is_dir()
    merged, tokenizer = load_model(tmp_path / "run", device="cpu")
    conversation = make_example(*MESSAGES[0])["messages"][:2]
    assert isinstance(generate_batch(merged, tokenizer, [conversation], max_new_tokens=2)[0], str)


def test_adapted_layers_on_a_gpt2_adapts_its_top_layers(model_dir):
    config = tiny("x", "y", model=str(model_dir("gpt2")), adapted_layers=1)
    model, _ = training_model(config)
    base = model.get_base_model()
    assert decoder_blocks(base) is base.transformer.h
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trained and all(".transformer.h.1." in name for name in trained)
    assert first_adapted_layer(base) == 1


def test_a_gpt2_run_can_be_estimated(model_dir, data):
    estimate = estimate_time(tiny(data, "", model=str(model_dir("gpt2")), max_steps=2), 1)
    assert estimate.total_steps == 2 and estimate.seconds_per_token > 0


def test_adapted_layers_are_refused_where_the_layers_cannot_be_found(
    model_dir, data, tmp_path, monkeypatch
):
    assert decoder_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2))) is None
    monkeypatch.setattr(loop, "decoder_blocks", lambda model: None)
    out = tmp_path / "run"
    kept = earlier_run(out)
    config = tiny(data, out, model=str(model_dir("gpt2")), adapted_layers=1, max_steps=1)
    with pytest.raises(ValueError, match="cannot find the decoder layers") as refused:
        train(config)
    assert "--adapted-layers all" in str(refused.value)
    assert all(path.is_file() for path in kept)


def test_a_tokenizer_without_pad_or_eos_trains_and_generates(model_dir, data, tmp_path):
    model = model_dir("no-pad-or-eos")
    tokenizer = load_tokenizer(model)
    assert tokenizer.eos_token is None and tokenizer.pad_token_id is not None
    result = train(tiny(data, tmp_path / "run", model=str(model), epochs=1, max_steps=1))
    assert result.adapter_dir.is_dir()
    merged, tokenizer = load_model(tmp_path / "run", device="cpu")
    conversations = [make_example(*m)["messages"][:2] for m in MESSAGES[:3]]  # padded rows
    assert len(generate_batch(merged, tokenizer, conversations, max_new_tokens=2)) == 3


def test_examples_past_the_models_context_are_refused(model_dir):
    tokenizer = load_tokenizer(model_dir("llama-short"))
    examples = [make_example(*m) for m in MESSAGES[:2]]  # about 100 tokens each
    with pytest.raises(ValueError, match=r"context of the model .*\(64 tokens") as refused:
        tokenize_examples(tokenizer, examples)
    assert f"ftlab validate FILE --model {tokenizer.name_or_path}" in str(refused.value)
    with pytest.raises(ValueError, match="longer than max_length=50 tokens"):
        tokenize_examples(tokenizer, examples, max_length=50)  # the tighter limit is named


def test_a_gpt2_run_past_its_context_is_refused_and_keeps_the_earlier_run(model_dir, tmp_path):
    long = make_example("my order " * 80, "other", None, "neutral")  # past GPT-2's 128 positions
    data = write_jsonl(tmp_path / "train.jsonl", [make_example(*m) for m in MESSAGES] + [long])
    out = tmp_path / "run"
    kept = earlier_run(out)
    config = tiny(str(data), out, model=str(model_dir("gpt2-short")), max_steps=1)
    with pytest.raises(ValueError, match=r"(?s)\(128 tokens.*example 13 .*Fix: shorten or split"):
        train(config)
    assert all(path.is_file() for path in kept)


def test_a_template_without_reply_prompt_warns_once_per_file(model_dir, tokenizer):
    examples = [make_example(*m) for m in MESSAGES[:4]]
    config = tiny("train.jsonl", "y")
    plain = load_tokenizer(model_dir("no-reply-prompt"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = training_rows(plain, examples, config)
        training_rows(tokenizer, examples, config)  # SmolLM2's template adds a reply prompt
    told = [w for w in caught if "adds no reply prompt" in str(w.message)]
    assert len(told) == 1 and "Fix:" in str(told[0].message)
    learned = plain.decode([t for t in rows[0].labels if t != IGNORE])
    assert learned.startswith("<|im_start|>assistant\n")  # what the warning is about
    # A template that wants a system message first has a reply prompt: no warning, no error.
    strict = load_tokenizer(model_dir("system-first"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(training_rows(strict, examples, config)) == 4
    assert not [w for w in caught if "reply prompt" in str(w.message)]


def caught_warnings(run, *args, **kwargs) -> tuple[object, list[str]]:
    """What `run(*args, **kwargs)` returns, and the text of every warning it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(*args, **kwargs)
    return result, [str(w.message) for w in caught]


def says_all(message: str, *words: str) -> None:
    missing = [w for w in words if w not in message]
    assert not missing, f"{missing} not in {message!r}"


def test_a_template_that_drops_system_messages_warns_once_per_file(model_dir, tokenizer):
    """Such a template renders [system, user] as the user message alone: training ran without
    the system prompt, unwarned, and the learner never knew the model does not read it."""
    examples = [make_example(*m) for m in MESSAGES[:4]]
    config = tiny("train.jsonl", "y")
    dropping = load_tokenizer(model_dir("drops-system"))
    rows, told = caught_warnings(training_rows, dropping, examples, config)
    assert SYSTEM_PROMPT not in dropping.decode(rows[0].input_ids)  # what it is about
    [message] = [t for t in told if "leaves out system messages" in t]
    says_all(
        message,
        "the 4 training examples with one",
        "never reads it, neither in training nor when it is asked",
        "Fix: put the system prompt at the start of the first user message",
    )
    _, told = caught_warnings(training_rows, tokenizer, examples, config)  # SmolLM2 keeps it
    assert not [t for t in told if "system" in t]
    without = [{"messages": e["messages"][1:]} for e in examples]  # no system prompt to lose
    _, told = caught_warnings(training_rows, dropping, without, config)
    assert not [t for t in told if "system" in t]


def test_a_prompt_that_tokenizes_differently_alone_warns_once_per_file(model_dir):
    """SmolLM2's tokenizer with a Llama-3 template: inside the conversation the reply prompt
    ends '\\n', '\\n', alone (as the model is asked) '\\n\\n', so the model would be asked
    with a token it was never trained on at the start of its reply."""
    llama = load_tokenizer(model_dir("llama3"))
    examples = [make_example(*m) for m in MESSAGES[:4]]
    messages = examples[0]["messages"]
    prompt = render(llama, messages[:2], generation_prompt=True)
    alone = llama(prompt, add_special_tokens=False)["input_ids"]
    inside = llama(render(llama, messages), add_special_tokens=False)["input_ids"]
    assert inside[: len(alone)] != alone and llama.decode(alone[-1:]) == "\n\n"
    rows, told = caught_warnings(training_rows, llama, examples, tiny("train.jsonl", "y"))
    assert len(rows) == 4
    [message] = [t for t in told if "other tokens alone" in t]
    says_all(
        message,
        "In 4 of the 4 training examples (example 1 is one,",
        "trained on one token sequence at the start of its reply and asked with another",
        "Fix: use the model's own chat template",
    )
    # Once per run: not again for the validation file.
    _, told = caught_warnings(tokenize_examples, llama, examples, what="validation")
    assert not told


def test_the_builtin_model_warns_nothing_on_the_course_data(tokenizer, repo):
    examples = load_examples(repo / "data" / "support" / "train.jsonl")
    rows, told = caught_warnings(tokenize_examples, tokenizer, examples)
    assert len(rows) == len(examples) == 1_059 and not told


def test_replies_that_start_with_spaces_are_blamed_not_the_template(tokenizer):
    """With the built-in model's own template, a reply starting with two spaces has them
    joined to the prompt's last line break inside the conversation, not when asked: the
    warning says to strip the replies, not to change the template."""
    examples = [make_example(*m) for m in MESSAGES[:4]]
    examples[2]["messages"][-1]["content"] = "  " + examples[2]["messages"][-1]["content"]
    _, told = caught_warnings(tokenize_examples, tokenizer, examples)
    [message] = told
    says_all(message, "In 1 of the 4 training examples (example 3 is one,", "reply.strip()")
    assert "chat template" not in message


def test_the_context_is_the_smaller_of_the_tokenizers_and_the_models(model_dir):
    tokenizer = load_tokenizer(model_dir("llama-short"))
    tokenizer.model_max_length = 8_192  # a tokenizer that claims more than the model has
    assert context_length(tokenizer) == 64


def test_an_adapter_whose_base_folder_moved_says_so(data, tmp_path):
    base = tiny_model(tmp_path / "base")
    result = train(tiny(data, tmp_path / "run", model=str(base), epochs=1, max_steps=1))
    base.rename(tmp_path / "moved")
    with pytest.raises(ModelNotFoundError, match="trained from the base model folder") as moved:
        load_tokenizer(tmp_path / "run")
    assert str(base) in str(moved.value) and ADAPTER_SIDECAR in str(moved.value)
    assert str(result.adapter_dir) in str(moved.value)


def test_an_adapter_is_refused_as_the_model_to_train_or_time(model_dir, data, tmp_path):
    run = tmp_path / "run"
    train(tiny(data, run, model=str(model_dir("gpt2")), epochs=1, max_steps=1))
    again = tiny(data, tmp_path / "again", model=str(run))
    for attempt in (train, estimate_time):
        with pytest.raises(ValueError, match="is a fine-tuned adapter"):
            attempt(again)
    assert not (tmp_path / "again").exists()


def test_resuming_notices_another_model_in_the_base_model_folder(data, tmp_path):
    """Any change to any file of the folder, one layer's weights or the chat template; a file
    only touched (same bytes, new time) is not a change."""
    import os

    from safetensors.torch import load_file, save_file

    base = tiny_model(tmp_path / "base")
    train(tiny(data, tmp_path / "run", model=str(base), epochs=2, max_steps=1))

    def resume() -> None:
        train(tiny(data, tmp_path / "run", model=str(base), epochs=2, max_steps=1, resume=True))

    weights = base / "model.safetensors"
    os.utime(weights)  # touched: the bytes are hashed again and are the same
    template = (base / "chat_template.jinja").read_text()
    (base / "chat_template.jinja").write_text(template.replace("<|im_start|>", "<|im_start|> "))
    with pytest.raises(StaleRunError, match=r"another model now \(chat_template.jinja changed"):
        resume()
    (base / "chat_template.jinja").write_text(template)
    original = weights.read_bytes()
    tensors = load_file(weights)
    name = next(n for n in tensors if "layers.1." in n and n.endswith("q_proj.weight"))
    tensors[name] = tensors[name] + 0.01  # one matrix deep inside the file
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(StaleRunError, match=r"another model now \(model.safetensors changed"):
        resume()
    base.rename(tmp_path / "moved")
    with pytest.raises(StaleRunError, match="the base model folder .* is missing"):
        resume()
    (tmp_path / "moved").rename(base)
    weights.write_bytes(original)
    resume()  # the same model again: the run goes on
