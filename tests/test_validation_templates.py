"""The data checker with other base models' chat templates: it says what `ftlab train` with that
model will refuse (a template that cannot render the examples, or has none; one that does not
render a conversation as one message after another) or silently leave out (system messages),
and never claims to have counted tokens with a template it could not use."""

from __future__ import annotations

import json

import pytest
from other_models import GEMMA, tiny_model
from test_validation import good, jsonl

from ftlab import cli
from ftlab.chat_template import ChatRenderer, keeps_system, render
from ftlab.models import load_tokenizer
from ftlab.training.data import tokenize_example
from ftlab.validation import validate_bytes, validate_file

TEMPLATE_CODES = {"template_error", "reply_not_located"}

# ChatML that renders every assistant message but the last as "[earlier reply]": like Qwen3's
# template, which drops the thinking of earlier replies, it does not append message after message.
EARLIER = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' and not loop.last %}{{ '[earlier reply]' }}"
    "{% else %}{{ message['content'] }}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Renders any conversation, but refuses to add a generation prompt: training needs one before
# every reply but an opening one, so it stops on every example.
NO_PROMPT = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ raise_exception('No generation prompt here') }}{% endif %}"
)
# Prompts a reply with `<start_of_turn>model` but renders replies as `<start_of_turn>assistant`.
MISMATCHED = (
    "{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\n' + "
    "message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
# ChatML without a system role.
NO_SYSTEM = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# ChatML that leaves out system messages without a word, as some older templates do.
DROPS_SYSTEM = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TEMPLATES = {
    "gemma": GEMMA,
    "dropsystem": DROPS_SYSTEM,
    "mismatched": MISMATCHED,
    "nosystem": NO_SYSTEM,
    "bare": None,
    "earlier": EARLIER,
    "noprompt": NO_PROMPT,
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """name -> folder of a tiny model whose tokenizer has that chat template."""
    root = tmp_path_factory.mktemp("models")
    return {name: tiny_model(root / name, template=t) for name, t in TEMPLATES.items()}


def no_system(i: int) -> dict:
    example = good(i)
    example["messages"].pop(0)
    return example


def two_turns(i: int, weight: int | None = None) -> dict:
    example = good(i)
    first = dict(example["messages"][2])
    if weight is not None:
        first["weight"] = weight
    example["messages"][2:] = [
        first,
        {"role": "user", "content": "And when will it arrive?"},
        {"role": "assistant", "content": "Within three working days."},
    ]
    return example


def refusal(folder, example: dict) -> str | None:
    """What `ftlab train` with this model says about the example (None: it accepts it)."""
    try:
        tokenize_example(load_tokenizer(folder), example["messages"])
    except ValueError as error:
        return str(error)
    return None


def template_problems(report) -> list:
    return [p for p in report.problems if p.code in TEMPLATE_CODES]


def test_a_template_that_refuses_every_example_is_one_file_warning(models, tmp_path, capsys):
    """Gemma's template raises on a system message: the report said 'valid, 0 warnings' and
    'tokens counted with gemma's tokenizer and chat template' while `ftlab train` stopped."""
    lines = [good(i) for i in range(10)]
    assert "System role not supported" in refusal(models["gemma"], lines[0])
    report = validate_bytes(jsonl(lines), tokenizer=str(models["gemma"]))
    assert report.valid  # fine for OpenAI: a warning, like over_train_max_length
    [warning] = template_problems(report)
    assert (warning.code, warning.line, warning.is_error) == ("template_error", None, False)
    for words in (
        "System role not supported",
        "all 10 examples",
        "line 1, 2, 3, 4, 5, ...",
        "first user message",
        "--no-tokens",
        "`ftlab train` with this model refuses",
    ):
        assert words in warning.message
    assert report.stats["template_fallbacks"] == 10
    text = report.format_text()
    assert "tokenizer and chat template" not in text and "as plain text, NOT" in text
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(lines))
    assert cli.main(["validate", "--json", str(path), "--model", str(models["gemma"])]) == 0
    [shown] = json.loads(capsys.readouterr().out)["warnings"]
    assert shown["code"] == "template_error" and shown["line"] is None


def test_examples_a_template_refuses_are_warned_about_line_by_line(models):
    lines = [no_system(i) for i in range(10)]
    lines[2], lines[6] = good(2), good(6)  # lines 3 and 7 have a system message
    assert refusal(models["nosystem"], lines[0]) is None
    assert "System role not supported" in refusal(models["nosystem"], lines[2])
    report = validate_bytes(jsonl(lines), tokenizer=str(models["nosystem"]))
    found = template_problems(report)
    assert [(p.code, p.line) for p in found] == [("template_error", 3), ("template_error", 7)]
    assert all('it says "System role not supported"' in p.message for p in found)
    assert report.stats["template_fallbacks"] == 2
    assert "chat template, except 2 examples counted as plain text" in report.format_text()


def test_a_tokenizer_without_a_chat_template_is_one_file_warning(models):
    lines = [good(i) for i in range(10)]
    assert "no chat template" in refusal(models["bare"], lines[0])
    report = validate_file(_write(lines, models["bare"]), tokenizer=str(models["bare"]))
    [warning] = template_problems(report)
    assert (warning.code, warning.line) == ("template_error", None)
    assert "has no chat template" in warning.message and "--no-tokens" in warning.message
    assert "tokenizer and chat template" not in report.format_text()


def test_a_template_that_fails_only_on_the_prompt_before_a_reply_is_a_template_error(models):
    """The whole conversation renders, but the prompt before a reply does not: `ftlab train`
    stops on it with the template's error, not with a label-masking one."""
    lines = [good(i) for i in range(10)]
    assert "No generation prompt here" in refusal(models["noprompt"], lines[0])
    report = validate_bytes(jsonl(lines), tokenizer=str(models["noprompt"]))
    [warning] = template_problems(report)
    assert warning.code == "template_error" and "No generation prompt here" in warning.message


def test_a_template_that_rewrites_earlier_replies_is_warned_about(models):
    """Like Qwen3's: `ftlab train` refuses multi-turn examples ('cannot be located for label
    masking'); the checker said 'valid, 0 warnings'."""
    lines = [good(i) for i in range(10)]
    lines[3], lines[8] = two_turns(3), two_turns(8)
    assert refusal(models["earlier"], lines[0]) is None
    assert "answer of message 2 cannot be located" in refusal(models["earlier"], lines[3])
    report = validate_bytes(jsonl(lines), tokenizer=str(models["earlier"]))
    assert report.valid
    found = template_problems(report)
    assert [(p.code, p.line, p.message_index) for p in found] == [
        ("reply_not_located", 4, 2),
        ("reply_not_located", 9, 2),
    ]
    for words in (
        "`ftlab train` with this model refuses",
        "message 2 cannot be located",
        'messages[2] "weight": 0',
    ):
        assert words in found[0].message
    assert "tokenizer and chat template" in report.format_text()  # it was used


def test_the_fix_it_gives_for_a_reply_it_cannot_locate_works(models):
    lines = [two_turns(i, weight=0) for i in range(10)]
    assert refusal(models["earlier"], lines[0]) is None
    report = validate_bytes(jsonl(lines), tokenizer=str(models["earlier"]))
    assert not template_problems(report)
    renderer = ChatRenderer(load_tokenizer(models["earlier"]))
    messages = lines[0]["messages"]
    text = renderer(messages)
    assert [renderer.locate_reply(messages, i, text)[2] for i in (2, 4)] == [False, True]


def _write(lines: list, folder) -> str:
    path = folder.parent / f"{folder.name}.jsonl"
    path.write_bytes(jsonl(lines))
    return str(path)


def test_a_template_whose_reply_prompt_differs_from_its_replies_is_warned_about(models):
    """MISMATCHED prompts a reply with `<start_of_turn>model` but renders it as
    `...assistant`: `ftlab train` refuses every example, which one warning says (not ten)."""
    lines = [no_system(i) for i in range(10)]
    assert "answer of message 1 cannot be located" in refusal(models["mismatched"], lines[0])
    report = validate_bytes(jsonl(lines), tokenizer=str(models["mismatched"]))
    [problem] = template_problems(report)
    assert (problem.code, problem.line) == ("reply_not_located", None)
    assert "all 10 examples (line 1, 2, 3, 4, 5, ...)" in problem.message
    assert "Fix: use a model whose chat template appends each message" in problem.message
    # Some of the examples: each on its line, with the reply's message index.
    few = validate_bytes(jsonl(lines[:4]), tokenizer=str(models["mismatched"]))
    found = {(p.code, p.line, p.message_index) for p in template_problems(few)}
    assert found == {("reply_not_located", line, 1) for line in range(1, 5)}


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words")


class MoodyTokenizer:
    """A chat template that fails oddly: an error that cannot be printed, or no text at all."""

    name_or_path = "moody"
    model_max_length = 1_000
    chat_template = "(not jinja)"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        if "odd" in messages[0]["content"]:
            raise Unprintable()
        return 42

    def __call__(self, texts, **_):
        return {"input_ids": [t.split() for t in texts]}


def test_a_template_that_fails_oddly_never_crashes_the_checker():
    lines = [
        {"messages": [{"role": "user", "content": "odd" if i % 2 else "even"}] + [reply]}
        for i, reply in enumerate([{"role": "assistant", "content": "ok"}] * 10)
    ]
    report = validate_bytes(jsonl(lines), tokenizer=MoodyTokenizer())
    found = template_problems(report)
    assert [(p.code, p.line) for p in found] == [("template_error", None)] * 2  # two reasons
    assert all("5 of the 10 examples" in p.message for p in found)
    assert report.stats["total_tokens"] > 0 and report.stats["template_fallbacks"] == 10


def system_dropped(report) -> list:
    return [p for p in report.problems if p.code == "system_dropped"]


def test_a_template_that_drops_system_messages_is_one_file_warning(models, tmp_path, capsys):
    """Nothing fails with such a template: training ran without the system prompt, and the
    checker said 'valid, 0 warnings', so the learner never knew the model does not read it."""
    lines = [good(i) for i in range(10)]
    lines[1], lines[4] = no_system(1), no_system(4)  # 8 examples with a system message
    messages = lines[0]["messages"]
    assert refusal(models["dropsystem"], lines[0]) is None  # `ftlab train` takes it...
    rendered = render(load_tokenizer(models["dropsystem"]), messages)
    assert messages[0]["content"] not in rendered and messages[1]["content"] in rendered  # ...so
    report = validate_bytes(jsonl(lines), tokenizer=str(models["dropsystem"]))
    assert report.valid and not template_problems(report)
    [warning] = system_dropped(report)
    assert (warning.line, warning.is_error) == (None, False)
    for words in (
        "leaves out system messages",
        "the 8 examples with one (line 1, 3, 4, 6, 7, ...)",
        "never reads it, neither in `ftlab train` nor when it is asked",
        "Fix: put the system prompt at the start of the first user message, or use another model",
    ):
        assert words in warning.message
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(lines))
    model = str(models["dropsystem"])
    assert cli.main(["validate", "--json", str(path), "--model", model]) == 0
    shown = json.loads(capsys.readouterr().out)["warnings"]
    assert [w["line"] for w in shown if w["code"] == "system_dropped"] == [None]
    # Only when counting tokens with the model, and only for a file with system messages.
    assert cli.main(["validate", "--json", str(path), "--model", model, "--no-tokens"]) == 0
    shown = json.loads(capsys.readouterr().out)["warnings"]
    assert shown and not [w for w in shown if w["code"] == "system_dropped"]
    none = validate_bytes(jsonl([no_system(i) for i in range(10)]), tokenizer=model)
    assert none.stats["total_tokens"] and not system_dropped(none)


def test_templates_that_keep_or_refuse_system_messages_give_no_system_dropped(models, tokenizer):
    """The built-in model's template keeps the system prompt; Gemma's refuses it, which
    `template_error` says (and `ftlab train` stops), so it is not dropped silently."""
    assert keeps_system(tokenizer)
    assert not system_dropped(validate_bytes(jsonl([good(i) for i in range(10)])))
    for name in ("gemma", "nosystem", "bare"):
        assert keeps_system(load_tokenizer(models[name])), name
    report = validate_bytes(jsonl([good(i) for i in range(10)]), tokenizer=str(models["gemma"]))
    assert template_problems(report) and not system_dropped(report)
    assert keeps_system(MoodyTokenizer())  # a template that gives no text cannot tell
