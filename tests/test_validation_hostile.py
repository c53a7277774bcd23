"""The data checker on hostile input: whole-file JSON, look-alikes, devices, odd options."""

from __future__ import annotations

import codecs
import json
import os
import sys
from pathlib import Path

import pytest
from conftest import run_ftlab
from test_validation import check, edited, good, jsonl, with_bad

from ftlab import cli
from ftlab.support import load_examples
from ftlab.validation import (
    UnreadableFileError,
    checker,
    count_tokens,
    stats,
    validate_bytes,
    validate_file,
)


def only_error(report) -> tuple[int | None, str, str]:
    [error] = report.errors
    return error.line, error.code, error.message


# --- 1. a JSON array or pretty-printed JSON instead of JSON Lines -------------------------------


@pytest.mark.parametrize(
    "text, shape",
    [
        (json.dumps([good(i) for i in range(12)], indent=2), "one JSON array of 12 examples"),
        (json.dumps([good(i) for i in range(12)]), "one JSON array of 12 examples"),
        ("\n".join(json.dumps(good(i), indent=2) for i in range(12)), "12 examples spread"),
        (json.dumps([good(i) for i in range(12)], indent=2)[:-40], "pretty-printed JSON"),
    ],
    ids=["array", "one-line array", "pretty objects", "pretty and broken"],
)
def test_whole_file_json_is_one_error_at_line_1(text, shape):
    report = check(text.encode())
    line, code, message = only_error(report)
    assert (line, code) == (1, "invalid_json")
    assert shape in message and "not JSON Lines" in message and "json.dumps(example)" in message
    # No line was read as an example, but the statistics still count the file's lines.
    assert report.stats["n_lines"] == sum(1 for t in text.splitlines() if t.strip())
    assert report.stats["n_examples"] == 0 and report.stats["epochs_rule"] is None


def test_a_jsonl_line_holding_a_list_of_messages_is_still_not_an_object():
    report = check(with_bad(good(50)["messages"], at=1))
    assert [(p.line, p.code) for p in report.errors] == [(1, "not_an_object")]


# --- 2. invalid_json hints come from where the parser stopped ---------------------------------


def test_json_hint_reads_the_error_position_not_the_strings():
    missing_comma = '{"messages": [{"role": "user" "content": "list [a, ]"}]}'
    cut_off = '{"messages": [{"role": "user", "content": "a Python dict {\'a\': 1} is'
    comma = check(with_bad(missing_comma)).errors[0].message
    assert "comma is missing at column 31" in comma and "trailing" not in comma
    cut = check(with_bad(cut_off)).errors[0].message
    assert "cut off" in cut and "Python dict" not in cut
    ended_with_comma = check(with_bad(json.dumps(good(0)) + ",")).errors[0].message
    assert "remove the comma at the end of the line" in ended_with_comma
    # An LF file with one old-Mac line end: two examples on what the parser calls one line.
    lone_cr = json.dumps(good(0)) + "\r" + json.dumps(good(1))
    message = check(with_bad(lone_cr)).errors[0].message
    assert "lone carriage return" in message and "convert the file's line ends to LF" in message


# --- 3. --against files that cannot be read ---------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        jsonl([good(i) for i in range(10)]).decode().encode("utf-16"),
        json.dumps([good(i) for i in range(10)], indent=2).encode(),
        "\n".join(json.dumps(good(i), ensure_ascii=False) + " é" for i in range(3)).encode(
            "cp1252"
        ),
        b"",
        b"\n\n  \n",
    ],
    ids=["utf-16", "json array", "latin-1 lines", "empty", "blank lines only"],
)
def test_an_unreadable_against_file_is_an_error_not_a_clean_bill(tmp_path, content, capsys):
    other = tmp_path / "valid.jsonl"
    other.write_bytes(content)
    with pytest.raises(UnreadableFileError, match="cannot compare with the --against file"):
        check(jsonl([good(i) for i in range(10)]), against=other)
    train = tmp_path / "train.jsonl"
    train.write_bytes(jsonl([good(i) for i in range(10)]))
    assert cli.main(["validate", "--no-tokens", str(train), "--against", str(other)]) == 2
    assert "valid.jsonl" in capsys.readouterr().err


def test_against_lines_that_cannot_be_read_are_counted_in_a_warning(tmp_path):
    other = tmp_path / "valid.jsonl"
    other.write_bytes(jsonl([good(50), b'{"messages": "caf\xe9"}', "{broken"]))
    report = check(jsonl([good(i) for i in range(10)]), against=other)
    assert report.valid
    [warning] = report.warnings
    assert (warning.line, warning.code) == (None, "against_unreadable")
    assert "2 lines of" in warning.message and "line 2, 3" in warning.message
    assert "not compared" in warning.message


# --- 4. tool_calls ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, code, says",
    [
        ({"content": "ok", "tool_calls": [1, "x"]}, "invalid_content", "tool_calls[0] is a number"),
        ({"tool_calls": "lookup()"}, "missing_content", '"tool_calls" is a string'),
        ({"content": None, "tool_calls": []}, "invalid_content", "is an empty list"),
        ({"tool_calls": [{"type": "function"}]}, "missing_content", 'no "function" with a "name"'),
    ],
)
def test_malformed_tool_calls_are_reported(reply, code, says):
    example = edited(lambda e: e["messages"][2].update(reply))
    if "content" not in reply:
        del example["messages"][2]["content"]
    line, found, message = only_error(check(with_bad(example)))
    assert (line, found) == (3, code)
    assert says in message and '"function": {"name"' in message
    assert "may leave it out" not in message


@pytest.mark.parametrize("arguments", [{"order_id": "AC-1"}, "[" * 500 + "]" * 500])
def test_tool_call_arguments_must_be_a_json_string(arguments, tmp_path, capsys):
    """OpenAI's format: the arguments are one JSON-encoded string. Deeply nested arguments
    once passed as valid and crashed the token count (RecursionError in json.dumps)."""
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "ARGS"}}
    example = edited(lambda e: e["messages"][2].update(content=None, tool_calls=[call]))
    path = tmp_path / "train.jsonl"
    nested = arguments if isinstance(arguments, str) else json.dumps(arguments)
    line = json.dumps(example).replace('"ARGS"', nested)
    path.write_bytes(jsonl([good(i) for i in range(9)] + [line]))
    report = validate_file(path, count_tokens=False)
    line, code, message = only_error(report)
    assert (line, code, report.errors[0].message_index) == (10, "invalid_content", 2)
    assert "tool_calls[0].function.arguments is" in message and "json.dumps(arguments)" in message
    assert cli.main(["validate", "--json", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["errors"][0]["line"] == 10


def test_a_recursion_error_while_counting_is_never_raised(tokenizer):
    deep: list = []
    for _ in range(5_000):  # deeper than any stack: json.dumps of it always fails
        deep = [deep]
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    example = edited(lambda e: e["messages"][2].update(tool_calls=[dict(call, extra=deep)]))
    totals, replies, fallbacks = count_tokens([example, good(1)], tokenizer)
    assert fallbacks >= 1 and min(totals) > 0 and min(replies) > 0


# --- 5. duplicate keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, key",
    [
        ('{"messages": [], "messages": [{"role": "user", "content": "hi"}]}', '"messages"'),
        ('{"messages": [{"role": "user", "role": "assistant", "content": "hi"}]}', '"role"'),
    ],
)
def test_a_key_twice_in_one_object_is_invalid_json(text, key):
    line, code, message = only_error(check(with_bad(text)))
    assert (line, code) == (3, "invalid_json")
    assert f"the key {key} appears twice" in message


# --- 6. too few examples counts the sound ones ------------------------------------------------


def test_too_few_examples_counts_every_example_line():
    report = check(jsonl([good(i) for i in range(9)] + ["{broken"]))  # ten lines: enough
    assert {(p.line, p.code) for p in report.errors} == {(10, "invalid_json")}
    report = check(jsonl([good(i) for i in range(8)] + ["{broken"]))
    assert {(p.line, p.code) for p in report.errors} == {
        (9, "invalid_json"),
        (None, "too_few_examples"),
    }
    message = next(p.message for p in report.errors if p.code == "too_few_examples")
    assert "the file has 9 examples, 1 of them with errors" in message


# --- 7. look-alike characters in roles --------------------------------------------------------


@pytest.mark.parametrize("role, escaped", [("user\u200b", "\\u200b"), ("us\u0435r", "\\u0435")])
def test_a_look_alike_role_is_shown_escaped(role, escaped):
    report = check(with_bad(edited(lambda e: e["messages"][1].update(role=role))))
    line, code, message = only_error(report)
    assert (line, code, report.errors[0].message_index) == (3, "unknown_role", 1)
    assert escaped in message and "invisible or non-Latin" in message
    assert 'probably mean "user"' in message


# --- 8. messages a newcomer can act on --------------------------------------------------------


def test_nan_big_numbers_and_a_bom_mid_file_are_explained():
    nan = check(with_bad('{"messages": [], "weight": NaN}')).errors[0].message
    assert "allow_nan=False" in nan and "write the line with json.dumps" not in nan
    big = check(with_bad('{"messages": [], "weight": ' + "1" * 5000 + "}")).errors[0].message
    assert "5,000 digits is too long" in big and "sys." not in big
    huge = check(with_bad('{"messages": [], "weight": 1e400}')).errors[0].message
    assert "1e400 is too large" in huge and "Infinity" not in huge
    joined = jsonl([good(i) for i in range(5)]) + b"\xef\xbb\xbf" + jsonl([good(5)])
    line, code, message = only_error(check(joined + jsonl([good(i) for i in range(6, 11)])))
    assert (line, code) == (6, "invalid_json")
    assert "byte order mark" in message and "joined" in message and "utf-8-sig" not in message


def test_last_not_assistant_without_any_reply_says_so():
    report = check(with_bad({"messages": [{"role": "system", "content": "be brief"}]}))
    assert {p.code for p in report.problems} == {"no_assistant_message", "last_not_assistant"}
    message = next(p.message for p in report.warnings if p.code == "last_not_assistant")
    assert "no assistant reply at all" in message
    assert "after the last assistant message" not in message


# --- 9. devices, pipes, huge files ------------------------------------------------------------


@pytest.mark.skipif(not Path(os.devnull).exists() or sys.platform == "win32", reason="POSIX")
def test_a_device_is_refused():
    with pytest.raises(UnreadableFileError, match="not a regular file"):
        validate_file(os.devnull, count_tokens=False)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    result = run_ftlab("validate", "--no-tokens", str(fifo), timeout=60)
    assert result.returncode == 2 and "not a regular file" in result.stderr


def test_a_file_over_the_size_limit_or_memory_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.jsonl"
    path.write_bytes(jsonl([good(i) for i in range(10)]))
    monkeypatch.setattr(checker, "MAX_FILE_BYTES", 100)
    with pytest.raises(UnreadableFileError, match="more than the checker's limit"):
        validate_file(path, count_tokens=False)
    monkeypatch.setattr(checker, "MAX_FILE_BYTES", 10**9)

    def no_memory(self):
        raise MemoryError

    monkeypatch.setattr(Path, "read_bytes", no_memory)
    with pytest.raises(UnreadableFileError, match="not enough memory"):
        validate_file(path, count_tokens=False)


# --- 10. --json when the file cannot be read --------------------------------------------------


def test_json_output_when_the_file_cannot_be_read(tmp_path, capsys):
    assert cli.main(["validate", "--json", str(tmp_path / "nope.jsonl")]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["valid"] is False and data["warnings"] == []
    [error] = data["errors"]
    assert error["line"] is None and error["code"] == "unreadable_file"
    assert "no such file" in error["message"]


def test_json_output_when_the_tokenizer_cannot_be_loaded(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_bytes(jsonl([good(i) for i in range(10)]))
    assert cli.main(["validate", "--json", "--model", str(tmp_path / "nomodel"), str(data)]) == 2
    out = capsys.readouterr()
    [error] = json.loads(out.out)["errors"]
    assert error["line"] is None and error["code"] == "model_not_found"
    assert "--no-tokens" in error["message"] and "cannot count tokens" in out.err


# --- 11. cost caveat, batched token counts, max_tokens=0 --------------------------------------


def test_cost_line_says_whose_tokenizer_counted(tokenizer):
    data = jsonl([good(i) for i in range(10)])
    report = validate_bytes(data, tokenizer=tokenizer, price_per_million=1.0)
    text = report.format_text()
    cost_at = text.index("estimated cost")
    assert "the provider's own tokenizer counts a little differently" in text[cost_at:]


class CountingTokenizer:
    """One token per word; records the size of every batch it is given."""

    name_or_path = "words"
    model_max_length = 1_000

    def __init__(self):
        self.batches: list[int] = []

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        return " ".join(f"{m['role']}: {m['content']}" for m in messages)

    def __call__(self, texts, **_):
        self.batches.append(len(texts))
        return {"input_ids": [t.split() for t in texts]}


def test_tokens_are_counted_in_batches():
    examples = [
        {"messages": [{"role": "user", "content": f"q {i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(1_500)
    ]
    counter = CountingTokenizer()
    totals, replies, _ = count_tokens(examples, counter)
    assert max(counter.batches) <= stats.TOKENIZE_BATCH < sum(counter.batches)
    assert totals == [5] * 1_500 and replies == [2] * 1_500


class TallyTokenizer:
    """One token per character, an appending ChatML-like template; tallies the messages
    rendered and the characters tokenized, the work that grew with the square of a
    conversation's length when every prefix was rendered and tokenized."""

    name_or_path = "chars"

    def __init__(self, model_max_length: int = 10**9, appends: bool = True):
        self.model_max_length = model_max_length
        self.appends = appends
        self.rendered = self.tokenized = 0

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        self.rendered += len(messages)
        text = "".join(f"<{m['role']}>{m['content']}</>" for m in messages)
        text += "<assistant>" if add_generation_prompt else ""
        return text if self.appends else f"{len(messages)}|{text}"  # a count up front

    def __call__(self, texts, **_):
        self.tokenized += sum(map(len, texts))
        return {"input_ids": [list(t) for t in texts]}


def long_chat(replies: int) -> dict:
    turns = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "ab"}]]
    return {"messages": [{"role": "system", "content": "s"}, *turns[0] * replies]}


def test_a_long_conversation_is_counted_in_linear_work():
    counter = TallyTokenizer()
    example = long_chat(2_000)
    [total], [learned], _ = count_tokens([example], counter)
    assert total == len(counter.apply_chat_template(example["messages"]))
    assert learned == 2_000 * len("ab</>")  # each reply and its end-of-turn mark
    messages = len(example["messages"])
    assert counter.rendered < 5 * messages and counter.tokenized < 5 * total


def test_a_template_that_does_not_append_still_counts_long_conversations_in_linear_work():
    short = long_chat(3)
    counter = TallyTokenizer(appends=False)
    assert count_tokens([short], counter)[1] == [3 * len("ab</>")]  # prefixes: exact
    counter = TallyTokenizer(model_max_length=1_000, appends=False)
    example = long_chat(2_000)
    [total], [learned], _ = count_tokens([example], counter)
    assert total > 1_000 and learned == 2_000 * len("ab")  # past the context: the replies' text
    assert counter.rendered < 5 * len(example["messages"]) and counter.tokenized < 5 * total


@pytest.mark.parametrize("value", [0, -1, True, 2.5])
def test_max_tokens_below_1_is_refused(value):
    with pytest.raises(ValueError, match="max_tokens must be a whole number >= 1"):
        validate_bytes(
            jsonl([good(i) for i in range(10)]), tokenizer=CountingTokenizer(), max_tokens=value
        )


# --- small things a learner's editor or hand can do -------------------------------------------


def test_weight_false_is_one_error_not_two():
    example = good(5)
    example["messages"][2]["weight"] = False
    report = check(jsonl([example] + [good(i) for i in range(10)]))
    assert [(p.line, p.code) for p in report.problems] == [(1, "invalid_weight")]


def test_old_mac_line_ends_are_lines():
    data = jsonl([good(i) for i in range(10)]).replace(b"\n", b"\r")
    report = check(data)
    assert report.valid and len(report.examples) == 10 and report.problems == []
    broken = data.replace(b"AC-10003", b'AC-10003"', 1)  # line 4's JSON is now broken
    assert [(p.line, p.code) for p in check(broken).problems] == [(4, "invalid_json")]


def test_the_problem_table_header_lines_up_with_short_codes():
    report = check(codecs.BOM_UTF8 + jsonl([good(i) for i in range(10)]))
    table = [
        line for line in report.format_text().splitlines() if "code" in line or " bom " in line
    ]
    assert table[0].index("code") == table[1].index("bom")


@pytest.mark.parametrize(
    ("line", "phrase"),
    [
        ("\u200b" + json.dumps(good(1)), "U+200B (zero width space)"),
        ("\u00a0" + json.dumps(good(1)), "U+00A0 (no-break space)"),
        ("\x0c" + json.dumps(good(1)), "U+000C (a control character)"),
        ("{\u201cmessages\u201d: []}", "curly quote"),
    ],
    ids=["zero-width space", "no-break space", "form feed", "curly quotes"],
)
def test_invisible_and_look_alike_characters_are_named(line, phrase):
    report = check(with_bad(line))
    assert [(p.line, p.code) for p in report.problems] == [(3, "invalid_json")]
    assert phrase in report.problems[0].message


def test_an_encoding_error_gives_the_character_column():
    line = '{"messages": [{"role": "user", "content": "ééé'.encode() + b'\xe9"}]}'
    problem = check(with_bad(line)).problems[0]
    assert problem.code == "invalid_encoding"
    assert "column 47 " in problem.message  # 46 characters before it; 49 bytes
    assert "éééé" in problem.message  # the sound é as é, the bad byte read as Windows-1252


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        (b"caf\xe9 au lait", "saved as Latin-1 or Windows-1252"),  # Windows-1252 text
        (b"caf\xe9", "saved as Latin-1 or Windows-1252"),  # ... ending a string
        (b"caf\xc3", "a UTF-8 character is cut short"),  # an export cut "caf\xc3\xa9" short
        (b"euro \xe2\x82 sign", "a UTF-8 character is cut short"),
        (b"smile \xed\xa0\xbd\xed\xb8\x80", "surrogate pair written as bytes (CESU-8"),
    ],
    ids=["latin-1", "latin-1 at the end", "cut at the end", "cut inside", "cesu-8"],
)
def test_an_encoding_error_says_which_kind_it_probably_is(text, phrase):
    line = b'{"messages": [{"role": "user", "content": "' + text + b'"}]}'
    problem = check(with_bad(line)).problems[0]
    assert problem.code == "invalid_encoding" and phrase in problem.message


def test_optional_fields_of_the_wrong_type_are_errors_openai_would_give():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    cases = {
        "tool_call_id": lambda e: e["messages"].insert(
            2, {"role": "tool", "tool_call_id": 7, "content": "done"}
        ),
        "on a tool message": lambda e: e["messages"].insert(
            2, {"role": "tool", "tool_call_id": "c1", "content": "x", "tool_calls": [call]}
        ),
        "tools": lambda e: e.update(tools="oops"),
        "parallel_tool_calls": lambda e: e.update(parallel_tool_calls="yes"),
    }
    for phrase, change in cases.items():
        report = check(with_bad(edited(change)))
        fields = [p for p in report.errors if p.code == "invalid_field"]
        assert len(fields) == 1 and phrase in fields[0].message, report.format_text()
        assert fields[0].line == 3
    sound = edited(lambda e: e.update(tools=[], parallel_tool_calls=False))
    assert check(with_bad(sound)).valid


def test_carriage_returns_between_tokens_are_json_whitespace_not_line_ends():
    line = json.dumps(good(1), separators=(",\r", ":")).encode()  # no LF anywhere
    report = check(line)
    assert [p.code for p in report.problems] == ["too_few_examples"] and len(report.examples) == 1


def test_a_raw_tab_in_a_text_is_to_be_escaped_not_deleted():
    line = json.dumps(good(1)).replace("Where is", "Where\tis")
    [problem] = check(with_bad(line)).problems
    assert problem.code == "invalid_json" and "written as \\t" in problem.message


# --- what the checker calls valid, the course's loader reads ----------------------------------


def test_a_valid_file_with_raw_line_separators_in_its_text_loads(tmp_path):
    """json.dumps(ensure_ascii=False) writes U+2028 and U+0085 raw; only LF ends a line."""
    examples = [good(i) for i in range(10)]
    examples[3]["messages"][1]["content"] = "first\u2028second\u0085third\u2029\x1c end"
    path = tmp_path / "train.jsonl"
    path.write_text(
        "\r\n".join(json.dumps(e, ensure_ascii=False) for e in examples), encoding="utf-8"
    )
    assert validate_file(path, count_tokens=False).valid
    assert load_examples(path) == examples


def test_the_loader_names_a_cut_off_line_without_a_doubled_word(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(good(1)) + '\n{"messages": "cut\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 is not valid JSON") as error:
        load_examples(path)
    assert "starting at column" in str(error.value) and "at at" not in str(error.value)
