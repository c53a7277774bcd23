"""The data checker: one test per problem code, the command line, stats, cost, shipped files."""

from __future__ import annotations

import codecs
import copy
import functools
import gzip
import io
import json
import os
import sys
import zlib
from pathlib import Path

import pytest
from conftest import REPO, run_ftlab

from ftlab import cli
from ftlab.chat_template import generation_cue
from ftlab.labs.data_lab import broken_files_source
from ftlab.paths import support_split
from ftlab.support import SYSTEM_PROMPT, make_example
from ftlab.training.config import TrainConfig
from ftlab.training.data import IGNORE, tokenize_example
from ftlab.validation import (
    ERROR_CODES,
    WARNING_CODES,
    InvalidDataError,
    PriceError,
    auto_epochs,
    cached_tokenizer,
    price_table,
    resolve_price,
    validate_bytes,
    validate_file,
)
from ftlab.validation.stats import count_tokens

BROKEN = REPO / "data" / "broken"


def good(i: int) -> dict:
    order = f"AC-{10000 + i}"
    return make_example(
        f"Where is my order {order}? Asked {i} times now.", "order_status", order, "negative"
    )


def jsonl(lines: list) -> bytes:
    """A file from dicts (dumped), strings (as they are) and bytes (raw)."""
    out = []
    for entry in lines:
        if isinstance(entry, dict | list):
            entry = json.dumps(entry)
        out.append(entry if isinstance(entry, bytes) else entry.encode("utf-8"))
    return b"".join(entry + b"\n" for entry in out)


def with_bad(bad, at: int = 3, n: int = 10) -> bytes:
    """`n` sound examples with `bad` inserted as line `at`."""
    lines: list = [good(i) for i in range(n)]
    lines.insert(at - 1, bad)
    return jsonl(lines)


def edited(change) -> dict:
    """A sound example after `change(example)` edits it in place."""
    example = good(99)
    change(example)
    return example


def check(data: bytes, **options):
    options.setdefault("count_tokens", False)
    return validate_bytes(data, name="t.jsonl", **options)


def found(report) -> set[tuple]:
    return {(p.line, p.code) for p in report.problems}


def test_sound_examples_give_no_problems():
    report = check(jsonl([good(i) for i in range(12)]))
    assert report.problems == []
    assert report.valid
    assert report.examples == [good(i) for i in range(12)]
    assert report.example_lines == list(range(1, 13))


def test_tool_calls_may_replace_content_and_crlf_is_fine():
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "lookup_order", "arguments": '{"order_id": "AC-10001"}'},
    }
    tool_use = {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "where is AC-10001"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": '{"status": "shipped"}'},
            {"role": "assistant", "content": None, "tool_calls": [call], "weight": 0},
            {"role": "assistant", "content": "It shipped.", "weight": 1, "name": "triage"},
        ],
        "tools": [],
        "parallel_tool_calls": False,
    }
    data = with_bad(tool_use).replace(b"\n", b"\r\n")
    report = check(data)
    assert report.problems == []
    assert len(report.examples) == 11


# (file bytes, line, code, message index or None, a phrase the fix must mention)
ERROR_CASES = {
    "invalid_encoding": (with_bad(b'{"messages": "caf\xe9"}'), 3, None, "save it as UTF-8"),
    "invalid_json": (with_bad('{"messages": [{"role": "user",}]}'), 3, None, "trailing comma"),
    "not_an_object": (with_bad("[1, 2]"), 3, None, '{"messages"'),
    "missing_messages": (
        with_bad({"prompt": "hi", "completion": "ho"}),
        3,
        None,
        "legacy prompt/completion",
    ),
    "messages_not_list": (with_bad({"messages": {"role": "user"}}), 3, None, "list"),
    "empty_messages": (with_bad({"messages": []}), 3, None, "add the system"),
    "message_not_object": (
        with_bad(edited(lambda e: e["messages"].__setitem__(1, 42))),
        3,
        1,
        '{"role": ..., "content": ...}',
    ),
    "missing_role": (
        with_bad(edited(lambda e: e["messages"][2].pop("role"))),
        3,
        2,
        "add one of system, user, assistant, tool",
    ),
    "unknown_role": (
        with_bad(edited(lambda e: e["messages"][2].update(role="bot"))),
        3,
        2,
        'probably mean "assistant"',
    ),
    "missing_content": (
        with_bad(edited(lambda e: e["messages"][1].pop("content"))),
        3,
        1,
        '"content"',
    ),
    "invalid_content": (
        with_bad(edited(lambda e: e["messages"][1].update(content=42))),
        3,
        1,
        "must be a string",
    ),
    "unrecognized_key": (
        with_bad(edited(lambda e: e["messages"][1].update(metadata={}))),
        3,
        1,
        "use only role, content, name, weight, tool_calls, tool_call_id",
    ),
    "no_assistant_message": (
        with_bad(edited(lambda e: e["messages"].pop())),
        3,
        None,
        "nothing to learn",
    ),
    "invalid_weight": (
        with_bad(edited(lambda e: e["messages"][2].update(weight=2))),
        3,
        2,
        "0 (do not learn this reply) or 1",
    ),
    "invalid_field": (
        with_bad(edited(lambda e: e["messages"][1].update(name=5))),
        3,
        1,
        "it must be a string",
    ),
    "weight_not_on_assistant": (
        with_bad(edited(lambda e: e["messages"][0].update(weight=1))),
        3,
        0,
        "remove it",
    ),
    "empty_file": (b"", None, None, "no examples"),
    "too_few_examples": (jsonl([good(i) for i in range(9)]), None, None, "at least 10"),
}

WARNING_CASES = {
    "blank_line": (with_bad("   "), 3, None, "delete it"),
    "bom": (codecs.BOM_UTF8 + jsonl([good(i) for i in range(10)]), 1, None, "without BOM"),
    "no_system_message": (
        with_bad(edited(lambda e: e["messages"].pop(0))),
        3,
        None,
        "add the system prompt",
    ),
    "last_not_assistant": (
        with_bad(edited(lambda e: e["messages"].append({"role": "user", "content": "thanks"}))),
        3,
        3,
        "end with the assistant",
    ),
    "empty_reply": (
        with_bad(edited(lambda e: e["messages"][2].update(content=" \n"))),
        3,
        2,
        '"weight": 0',
    ),
    "duplicate_example": (
        jsonl([good(i) for i in range(10)] + [good(4)]),
        11,
        None,
        "same example as line 5",
    ),
}


def test_every_code_has_a_case():
    assert set(ERROR_CASES) == set(ERROR_CODES)
    # These need a tokenizer, a second file or another model: tested below and in
    # test_validation_hostile and test_validation_templates.
    needs_more = {"too_long", "over_train_max_length", "overlap_with_split", "against_unreadable"}
    needs_more |= {"template_error", "reply_not_located", "system_dropped"}
    assert set(WARNING_CASES) | needs_more == set(WARNING_CODES)


@pytest.mark.parametrize("code", sorted(ERROR_CASES))
def test_error_code(code):
    data, line, index, fix = ERROR_CASES[code]
    report = check(data)
    assert not report.valid
    matches = [p for p in report.errors if p.code == code]
    assert [(p.line, p.message_index) for p in matches] == [(line, index)], report.format_text()
    assert fix in matches[0].message
    if line is not None:  # the other lines still pass, and only the broken line has errors
        assert {p.line for p in report.errors} == {line}
        assert len(report.examples) == 10


@pytest.mark.parametrize("code", sorted(WARNING_CASES))
def test_warning_code(code):
    data, line, index, fix = WARNING_CASES[code]
    report = check(data)
    assert report.valid, report.format_text()
    matches = [p for p in report.warnings if p.code == code]
    assert [(p.line, p.message_index) for p in matches] == [(line, index)], report.format_text()
    assert fix in matches[0].message


def test_duplicate_detail_names_both_lines():
    report = check(jsonl([good(i) for i in range(10)] + [good(4)]))
    assert report.duplicates == [(11, 5)]
    assert report.warnings[0].to_dict()["related_line"] == 5


def test_too_long_uses_the_token_count(tokenizer):
    long = make_example(
        "my order AC-12345 " + "is late and I am upset " * 40,
        "order_status",
        "AC-12345",
        "negative",
    )
    report = validate_bytes(with_bad(long, at=7), tokenizer=tokenizer, max_tokens=150)
    assert [(p.line, p.code) for p in report.problems] == [(7, "too_long")]
    assert "more than your --max-tokens limit of 150" in report.problems[0].message
    assert report.stats["context_tokens"] == 150 and report.stats["context_source"] == "given"
    text = report.format_text()
    assert "token limit (--max-tokens)" in text
    assert report.stats["total_tokens"] == sum(_lengths(report, tokenizer))  # a limit only flags


def test_default_context_is_the_models(tokenizer):
    report = validate_bytes(jsonl([good(i) for i in range(10)]), tokenizer=tokenizer)
    assert report.stats["context_tokens"] == 8192 and report.stats["context_source"] == "model"
    assert report.stats["over_train_max_length"] == 0
    assert "model context (tokens)" in report.format_text()


def test_examples_ftlab_train_would_refuse_are_counted(tokenizer):
    """Within the model's context but over `ftlab train`'s default --max-length: valid for
    OpenAI, refused by local training, so the report says so before training does."""
    long = make_example("please help " * 1200, "other", None, "neutral")
    report = validate_bytes(with_bad(long), tokenizer=tokenizer)
    assert report.valid and [(p.line, p.code) for p in report.problems] == [
        (3, "over_train_max_length")
    ]
    tokens = report.stats["tokens_per_example"]["max"]
    assert 2048 < tokens <= report.stats["context_tokens"]
    message = report.problems[0].message
    assert f"{tokens:,} tokens" in message and "over 2,048 tokens" in message
    assert "`ftlab train` and the course server refuse" in message and "split" in message
    assert report.stats["over_train_max_length"] == 1
    assert report.stats["train_max_length"] == TrainConfig(data="x", out="y").max_length
    assert "1 example is longer than 2,048 tokens" in report.format_text()
    # Past the model's own context, a larger given limit lets it through, but it is not
    # "within the model's context".
    longer = make_example("please help " * 4200, "other", None, "neutral")
    report = validate_bytes(with_bad(longer), tokenizer=tokenizer, max_tokens=100_000)
    assert report.valid and report.problems == []


def test_what_the_checker_counts_is_what_training_learns(tokenizer):
    """A tool call, and a reply that opens the conversation (the template puts its default
    system prompt before it): training reads both, and learns the tokens the stats count."""
    tool_turn = edited(
        lambda e: e["messages"][2:2].extend(
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
            ]
        )
    )
    opening = {
        "messages": [
            {"role": "assistant", "content": "Hi! How can I help?"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "ok"},
        ]
    }
    for example in (tool_turn, opening):
        report = validate_bytes(jsonl([example] * 10), tokenizer=tokenizer)
        assert report.valid, report.format_text()
        row = tokenize_example(tokenizer, example["messages"])
        assert report.stats["tokens_per_example"]["max"] == len(row)
        assert report.stats["assistant_tokens_per_example"]["max"] == row.trained_tokens
    learned = tokenizer.decode([t for t in row.labels if t != IGNORE])
    assert learned.startswith("Hi! How can I help?") and "SmolLM" not in learned
    # Replies that start with white space, which merges with the line break before them:
    # counted from the whole rendering's tokens, as training labels them.
    for reply in ("  indented code", "\n\nafter a blank line", "\n"):
        turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": reply}]
        example = {"messages": turns}
        totals, replies, _ = count_tokens([example], tokenizer)
        row = tokenize_example(tokenizer, example["messages"])
        assert (totals[0], replies[0]) == (len(row), row.trained_tokens), repr(reply)
    # A character the tokenizer cannot encode (a lone surrogate) in one example of a batch
    # leaves the others counted as training labels them.
    bad = {"messages": [{"role": "user", "content": "q \ud800"}, turns[1]]}
    totals, replies, _ = count_tokens([bad, example], tokenizer)
    assert (totals[1], replies[1]) == (len(row), row.trained_tokens) and replies[0] > 0


def test_an_opening_reply_the_template_cannot_locate_is_learned_whole_with_a_warning(tokenizer):
    plain = copy.deepcopy(tokenizer)  # a template with no generation prompt of its own
    plain.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    messages = [{"role": "assistant", "content": "Hi!"}, {"role": "user", "content": "hi"}]
    assert generation_cue(plain) == "" and generation_cue(tokenizer).endswith("assistant\n")
    with pytest.warns(UserWarning, match="reply prompt was not found"):
        row = tokenize_example(plain, messages)
    assert plain.decode([t for t in row.labels if t != IGNORE]).startswith("assistant: Hi!")


def test_overlap_with_another_split(tmp_path):
    other = tmp_path / "valid.jsonl"
    leaked = good(4)
    leaked["messages"][1]["content"] = "  WHERE is my order AC-10004?   Asked 4 times now. "
    other.write_bytes(jsonl([good(50), leaked]))
    report = check(jsonl([good(i) for i in range(10)]), against=other)
    assert report.valid
    assert [(p.line, p.code, p.related_line) for p in report.warnings] == [
        (5, "overlap_with_split", 2)
    ]
    assert report.warnings[0].to_dict()["related_file"] == str(other)
    assert report.overlaps == [
        {"line": 5, "file": str(other), "other_line": 2, "text": good(4)["messages"][1]["content"]}
    ]


def test_messages_are_printable_whatever_the_data():
    role = "<script>\ud800"
    report = check(with_bad(edited(lambda e: e["messages"][2].update(role=role))))
    message = report.errors[0].message
    message.encode("utf-8")  # a lone surrogate would fail here
    assert "\\ud800" in message
    page = report._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_lone_surrogate_in_content_is_invalid_content():
    report = check(with_bad('{"messages": [{"role": "user", "content": "hi \\ud83d"}]}'))
    assert ("invalid_content", 0) in {(p.code, p.message_index) for p in report.errors}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_file_is_one_encoding_error(encoding):
    """With or without a byte order mark: not one invalid_json per line about U+0000."""
    data = jsonl([good(i) for i in range(10)]).decode().encode(encoding)
    report = check(data)
    assert [(p.line, p.code) for p in report.problems] == [(None, "invalid_encoding")]
    assert "the file is UTF-16" in report.problems[0].message
    assert "save it as UTF-8" in report.problems[0].message


@pytest.mark.parametrize(
    ("packed", "said"),
    [
        (gzip.compress, "gzip-compressed"),
        (lambda data: b"PK\x03\x04" + zlib.compress(data), "ZIP archive"),
        (lambda data: len(data).to_bytes(8, "little") + data, "NUL bytes"),  # like .safetensors
    ],
)
def test_a_binary_file_is_one_encoding_error_that_says_what_it_is(packed, said):
    report = check(packed(jsonl([good(i) for i in range(10)])))
    assert [(p.line, p.code) for p in report.problems] == [(None, "invalid_encoding")]
    assert "this is not a text file" in report.problems[0].message
    assert said in report.problems[0].message


def test_html_and_text_show_every_code():
    report = check(BROKEN.joinpath("mixed_problems.jsonl").read_bytes())
    page, text = report._repr_html_(), report.format_text()
    for code in report.codes():
        assert f"<code>{code}</code>" in page
        assert code in text
    assert "invalid" in page and "Statistics" in text


def test_raise_if_invalid_carries_the_report():
    report = check(with_bad("[1]"))
    with pytest.raises(InvalidDataError, match="not_an_object") as caught:
        report.raise_if_invalid()
    assert caught.value.report is report
    check(jsonl([good(i) for i in range(10)])).raise_if_invalid()


# --- statistics and cost -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return cached_tokenizer()


def _lengths(report, tokenizer) -> list[int]:
    return [
        len(
            tokenizer.apply_chat_template(e["messages"], tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
        for e in report.examples
    ]


@pytest.mark.parametrize(
    ("n", "epochs"),
    [
        (1, 25),
        (4, 25),
        (5, 20),
        (10, 10),
        (33, 3),
        (34, 3),
        (400, 3),
        (8333, 3),
        (8334, 2),
        (30000, 1),
    ],
)
def test_auto_epochs_is_openais_rule(n, epochs):
    assert auto_epochs(n) == epochs


def test_token_counts_match_the_chat_template(tokenizer):
    examples = [good(i) for i in range(10)]
    examples[3]["messages"][1]["content"] = "Hello? " * 30
    report = validate_bytes(jsonl(examples), tokenizer=tokenizer, price_per_million=2.5)
    stats = report.stats
    totals = _lengths(report, tokenizer)
    assert stats["tokens_per_example"]["max"] == max(totals)
    assert stats["tokens_per_example"]["min"] == min(totals)
    assert stats["total_tokens"] == sum(totals)
    prompt = tokenizer.apply_chat_template(
        examples[0]["messages"][:2], tokenize=True, add_generation_prompt=True, return_dict=True
    )
    reply = totals[0] - len(prompt["input_ids"])
    assert stats["assistant_tokens_per_example"]["min"] <= reply
    assert stats["assistant_tokens_per_example"]["max"] >= reply
    assert stats["messages_per_example"] == {"min": 3, "mean": 3.0, "median": 3, "p95": 3, "max": 3}
    assert stats["epochs"] == 10 and stats["epochs_rule"].startswith("auto")
    assert stats["billed_tokens"] == sum(totals) * 10
    assert stats["estimated_cost"] == pytest.approx(sum(totals) * 10 * 2.5 / 1e6)


def test_weight_zero_replies_are_not_counted_as_learned(tokenizer):
    turn = good(1)
    turn["messages"][2:2] = [
        {"role": "assistant", "content": "Which order?", "weight": 0},
        {"role": "user", "content": "AC-10001"},
    ]
    learned = validate_bytes(jsonl([good(1)] * 10), tokenizer=tokenizer).stats
    report = validate_bytes(jsonl([turn] * 10), tokenizer=tokenizer)
    assert (
        report.stats["assistant_tokens_per_example"]["max"]
        == learned["assistant_tokens_per_example"]["max"]
    )
    assert report.stats["tokens_per_example"]["max"] > learned["tokens_per_example"]["max"]


def test_given_epochs_and_price_by_model_name(tokenizer):
    table = price_table()
    model = "gpt-4.1-mini-2025-04-14"
    report = validate_bytes(
        jsonl([good(i) for i in range(10)]), tokenizer=tokenizer, epochs=4, price_per_million=model
    )
    stats = report.stats
    assert stats["epochs"] == 4 and stats["epochs_rule"] == "given"
    assert stats["billed_tokens"] == stats["total_tokens"] * 4
    assert stats["price_per_million"] == table.training_per_million_tokens[model]
    assert table.as_of in stats["price_source"]
    assert stats["estimated_cost"] == pytest.approx(
        stats["billed_tokens"] * table.training_per_million_tokens[model] / 1e6
    )
    with pytest.raises(ValueError, match="epochs"):
        validate_bytes(jsonl([good(1)]), count_tokens=False, epochs=0)


def test_price_table_is_dated_and_complete():
    table = price_table()
    assert table.as_of[:2] == "20" and len(table.as_of) == 10
    assert table.currency == "USD" and table.source.startswith("https://")
    assert "change" in table.note
    assert table.training_per_million_tokens
    assert all(price > 0 for price in table.training_per_million_tokens.values())
    assert resolve_price("gpt-4o-mini-2024-07-18").per_million == 3.0
    assert resolve_price("2.5").per_million == 2.5
    assert resolve_price(0).per_million == 0
    for wrong in ("gpt-9", "-1", "nan", True):
        with pytest.raises(PriceError):
            resolve_price(wrong)


# --- the command line -----------------------------------------------------------------------


def test_cli_valid_file_exits_0_and_prints_the_stats(tmp_path):
    sound = tmp_path / "sound.jsonl"
    sound.write_bytes(jsonl([good(i) for i in range(10)]))
    result = run_ftlab("validate", str(sound), "--price-per-million", "gpt-4.1-mini-2025-04-14")
    assert result.returncode == 0, result.stderr
    for label in (
        "valid",
        "tokens per example",
        "assistant tokens per example",
        "total training tokens",
        "billed tokens",
        "estimated cost",
    ):
        assert label in result.stdout


def test_cli_invalid_exits_1_and_unreadable_exits_2(tmp_path, capsys):
    assert cli.main(["validate", "--no-tokens", str(BROKEN / "wrong_roles.jsonl")]) == 1
    assert "unknown_role" in capsys.readouterr().out
    assert cli.main(["validate", str(tmp_path / "nope.jsonl")]) == 2
    out = capsys.readouterr()
    assert "no such file" in out.err and out.out == ""
    assert cli.main(["validate", "--json", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert "directory" in out.err
    assert [e["code"] for e in json.loads(out.out)["errors"]] == ["unreadable_file"]


def test_cli_reads_standard_input_for_a_dash(monkeypatch, capsys):
    """`export | ftlab validate -`: the bytes as they come, BOM and bad lines included."""
    data = codecs.BOM_UTF8 + jsonl([good(i) for i in range(10)]) + b"{oops\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert cli.main(["validate", "--json", "--no-tokens", "-"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [(e["line"], e["code"]) for e in report["errors"]] == [(11, "invalid_json")]
    assert [w["code"] for w in report["warnings"]] == ["bom"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data[:-6])))
    assert cli.main(["validate", "--no-tokens", "-"]) == 0
    assert capsys.readouterr().out.startswith("<stdin>: valid")
    monkeypatch.setattr(sys, "stdin", None)  # `ftlab validate - <&-`: no standard input
    assert cli.main(["validate", "--no-tokens", "-"]) == 2
    assert "cannot read standard input" in capsys.readouterr().err


def test_cli_unreadable_file(tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(jsonl([good(1)]))
    paths = [plain / "inside.jsonl"]  # a file used as a folder: NotADirectoryError
    if sys.platform != "win32" and os.geteuid() != 0:  # root reads files without permission
        locked = tmp_path / "locked.jsonl"
        locked.write_bytes(jsonl([good(1)]))
        locked.chmod(0)
        paths.append(locked)
    for path in paths:
        assert cli.main(["validate", "--no-tokens", str(path)]) == 2


def test_cli_rejects_a_bad_price_or_epochs(capsys):
    for args in (["--price-per-million", "gpt-9"], ["--epochs", "0"], ["--max-tokens", "x"]):
        assert cli.main(["validate", str(BROKEN / "too_few.jsonl"), *args]) == 2
    assert "gpt-4.1-mini-2025-04-14" in capsys.readouterr().err
    assert cli.main(["validate", str(BROKEN / "too_few.jsonl"), "--epochs", "0", "--json"]) == 2
    printed = capsys.readouterr()
    result = json.loads(printed.out)  # still the one JSON object a script parses
    assert result["valid"] is False and result["errors"][0]["code"] == "invalid_argument"
    assert "argument --epochs: must be 1 or more, not 0" in result["errors"][0]["message"]
    # A limit on token counts that are not counted would pass every file silently.
    both = ["--max-tokens", "10", "--no-tokens"]
    assert cli.main(["validate", str(BROKEN / "too_few.jsonl"), *both]) == 2
    assert "which --no-tokens skips" in capsys.readouterr().err
    itself = ["--no-tokens", "--against", str(BROKEN / "." / "too_few.jsonl")]
    assert cli.main(["validate", str(BROKEN / "too_few.jsonl"), *itself]) == 2
    assert "is the file being checked" in capsys.readouterr().err


def test_cli_json_is_one_object(capsys, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_bytes(jsonl([make_example(*_make_broken().MESSAGES[0])]))
    status = cli.main(
        [
            "validate",
            "--json",
            "--no-tokens",
            "--against",
            str(other),
            str(BROKEN / "mixed_problems.jsonl"),
        ]
    )
    out = capsys.readouterr().out
    data = json.loads(out)  # exactly one object: trailing text would fail here
    assert status == 1
    assert set(data) == {"valid", "errors", "warnings", "stats"}
    assert data["valid"] is False
    for problem in data["errors"] + data["warnings"]:
        assert {"line", "code", "message"} <= set(problem)
        assert problem["line"] is None or isinstance(problem["line"], int)
    assert {"line": 6, "code": "messages_not_list"} in [
        {"line": p["line"], "code": p["code"]} for p in data["errors"]
    ]
    assert any(p["code"] == "overlap_with_split" for p in data["warnings"])
    assert data["stats"]["n_examples"] == 10


# --- the shipped files ----------------------------------------------------------------------


@functools.cache
def _make_broken():
    """data/broken/make_broken.py, the generator of the broken files and their expected codes."""
    return broken_files_source(BROKEN)


def test_broken_files_are_up_to_date():
    stale = [
        name
        for name, data in _make_broken().outputs().items()
        if (BROKEN / name).read_bytes() != data
    ]
    assert not stale, "run python data/broken/make_broken.py"


@pytest.mark.parametrize("name", sorted(_make_broken().EXPECTED))
def test_broken_file_reports_each_problem_and_exits_1(name, capsys):
    expected = _make_broken().EXPECTED[name]
    assert cli.main(["validate", str(BROKEN / name)]) == 1
    out = capsys.readouterr().out
    report = validate_file(BROKEN / name, count_tokens=False)
    assert sorted(found(report), key=str) == sorted(set(expected), key=str)
    assert len(report.problems) == len(expected)
    for line, code in expected:
        cell = "-" if line is None else str(line)
        assert any(row.split()[:2] == [cell, code] for row in out.splitlines()), (line, code)
    if "too_few_examples" not in {code for _, code in expected}:
        assert report.stats["n_lines"] >= 10  # one family per file: not also too few


SPLITS = ("train", "valid", "test")


@pytest.mark.parametrize("split", SPLITS)
def test_shipped_split_is_clean_and_shares_no_user_message(split):
    others = [support_split(s) for s in SPLITS if s != split]
    report = validate_file(support_split(split), against=others)
    assert report.valid, report.format_text()
    assert report.warnings == [], report.format_text()
    assert report.stats["n_examples"] == report.stats["n_lines"] > 0


def test_validate_file_names_the_path():
    report = validate_file(BROKEN / "too_few.jsonl", count_tokens=False)
    assert report.name == str(Path(BROKEN / "too_few.jsonl"))
    assert report.to_dict()["errors"] == [
        {"line": None, "code": "too_few_examples", "message": report.errors[0].message}
    ]
