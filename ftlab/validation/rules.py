"""The per-line checks: one line of bytes in, its parsed example (if sound) and its problems out.

Every check says what is wrong and how to fix it. No input raises: whatever the
bytes, the result is a list of `Problem`s.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from ftlab.chat_template import is_learned
from ftlab.jsonl import json_error_place, repeated_keys
from ftlab.validation.codes import ALLOWED_ROLES, MESSAGE_KEYS, TOP_LEVEL_KEYS
from ftlab.validation.report import Problem

SHOW_LIMIT = 60  # characters of a user's value quoted back in a message

# Names people give roles, and the role they meant.
ROLE_HINTS = {
    "bot": "assistant",
    "ai": "assistant",
    "model": "assistant",
    "gpt": "assistant",
    "chatbot": "assistant",
    "agent": "assistant",
    "answer": "assistant",
    "response": "assistant",
    "human": "user",
    "customer": "user",
    "client": "user",
    "question": "user",
    "prompt": "user",
    "function": "tool",
    "developer": "system",
}
TOOL_CALLS_FORM = (
    '[{"id": "call_1", "type": "function", "function": {"name": "lookup_order", '
    '"arguments": "{\\"order_id\\": \\"AC-10001\\"}"}}]'
)
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class LineResult:
    """What one line turned out to be: undecodable, blank, broken JSON or a checked value."""

    line: int
    blank: bool = False
    value: Any = None  # the parsed JSON value, when the line parsed
    parsed: bool = False
    problems: list[Problem] = field(default_factory=list)

    @property
    def example(self) -> dict | None:
        """The example, if the line passed every error check."""
        if self.parsed and not any(p.is_error for p in self.problems):
            return self.value
        return None


def show(value: Any, escape: bool = False) -> str:
    """A short, always-printable rendering of a value from the file, for messages.

    `escape` writes every non-ASCII character as a \\u escape, to make look-alike
    letters and invisible characters visible.
    """
    if isinstance(value, str):
        cut = value if len(value) <= SHOW_LIMIT else value[:SHOW_LIMIT] + "..."
        text = json.dumps(cut, ensure_ascii=escape)
    else:
        try:
            text = json.dumps(value, ensure_ascii=escape)
        except (TypeError, ValueError, RecursionError):
            text = repr(value)
        if len(text) > SHOW_LIMIT:
            text = text[:SHOW_LIMIT] + "..."
    # Lone surrogates cannot be printed or written as UTF-8; spell them out.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def type_name(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


class _UnreadableValue(ValueError):
    """A value JSON text may hold but an example must not; the message is the whole explanation."""


def _reject_constant(name: str) -> float:
    raise _UnreadableValue(
        f"{name} is not a number JSON allows (JSON has no NaN or Infinity); replace it with a "
        "real number or null (Python's json.dumps writes NaN and Infinity as they are: "
        "call it with allow_nan=False to find where such values come from)"
    )


def _parse_int(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:  # Python refuses integers of more than 4,300 digits
        raise _UnreadableValue(
            f"a number with {len(digits):,} digits is too long to read; an example "
            "holds text and small numbers: fix or remove that value"
        ) from None


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e400: Python would read it as infinity
        raise _UnreadableValue(
            f"the number {text} is too large to hold (it would be read as infinity); "
            "an example holds text and small numbers: fix or remove that value"
        )
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) < len(pairs):
        twice = repeated_keys(pairs)[0]
        raise _UnreadableValue(
            f"the key {show(twice)} appears twice in the same object, and JSON readers "
            "silently keep only the last one; delete or rename one of them"
        )
    return value


def decode_line(number: int, raw: bytes) -> tuple[str | None, Problem | None]:
    """The line as text, or an `invalid_encoding` problem that points at the first bad byte."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        bad = raw[error.start : error.start + 1].hex()
        before = raw[: error.start].decode("utf-8")  # sound: the error is at the first bad byte
        # Show the text from the bad byte on as Windows-1252 would read it: usually the intent.
        window = raw[error.start : error.start + 25]
        try:
            after = window.decode("cp1252")
        except UnicodeDecodeError:
            after = window.decode("latin-1")
        guess = f" (read as Windows-1252 the text there is {show(before[-25:] + after)})"
        why = (
            "; the file was probably saved as Latin-1 or Windows-1252: save it as UTF-8 (in "
            "Python, open(path, 'w', encoding='utf-8'); in Excel, 'CSV UTF-8')"
        )
        if _surrogate_bytes(raw, error.start):
            guess = ""
            why = (
                ": it starts half of a surrogate pair written as bytes (CESU-8, what Java's "
                "modified UTF-8 and MySQL's 3-byte utf8 write for emoji); export the data as "
                "real UTF-8 (utf8mb4 in MySQL), or re-encode those characters"
            )
        elif _cut_character(raw, error.start):
            guess = ""
            why = (
                ": a UTF-8 character is cut short here (an export that cuts text at a byte "
                "limit does this); delete the broken character, or export again without the "
                "limit"
            )
        return None, Problem(
            "invalid_encoding",
            f"byte 0x{bad} at column {len(before) + 1} is not valid UTF-8{guess}{why}",
            line=number,
        )


def _surrogate_bytes(raw: bytes, at: int) -> bool:
    """True when the bytes at `at` are a UTF-16 surrogate encoded as UTF-8 (ED A0-BF ..)."""
    return raw[at] == 0xED and len(raw) > at + 1 and 0xA0 <= raw[at + 1] <= 0xBF


def _cut_character(raw: bytes, at: int) -> bool:
    """True when the bytes at `at` look like a UTF-8 character cut short rather than Latin-1
    text: a lead byte with some but too few continuation bytes, or one that Latin-1 text
    rarely ends a string with (Â, Ã, â, ð) at the end of a string or of the line."""
    lead = raw[at]
    needed = 1 if 0xC2 <= lead <= 0xDF else 2 if 0xE0 <= lead <= 0xEF else 3 if lead <= 0xF4 else 0
    if not needed or lead < 0xC2:
        return False
    following = raw[at + 1 : at + 1 + needed]
    continued = len(following) - len(following.lstrip(bytes(range(0x80, 0xC0))))
    if 0 < continued < needed:
        return True
    ends = following[:1] in (b"", b'"', b"\n", b"\r")
    return continued == 0 and ends and lead in (0xC2, 0xC3, 0xE2, 0xF0)


CURLY_QUOTES = "\u201c\u201d\u2018\u2019"


def _json_hint(text: str, error: json.JSONDecodeError) -> str:
    """A likely fix, read from the text where the parser stopped (not from the whole line)."""
    rest = text[error.pos :]
    if error.msg.startswith("Extra data"):
        if rest.strip() == ",":
            return "remove the comma at the end of the line: JSONL separates examples by lines"
        if text[: error.pos].rstrip(" \t").endswith("\r"):  # the parser skipped it
            return (
                "a lone carriage return (an old Mac line end, which most editors show as a new "
                "line) separates two examples here, so the line numbers after it are one lower "
                "than your editor shows; convert the file's line ends to LF (\\n)"
            )
        return "there is more than one JSON value on the line: put each example on its own line"
    if error.msg.startswith("Unterminated") or not rest.strip():
        return (
            "the line ends before the JSON does: it was cut off, or one example was spread "
            "over several lines; each example must be complete on one line"
        )
    if rest[0] in "}]" and text[: error.pos].rstrip().endswith(","):
        return "remove the trailing comma before the closing } or ]"
    if rest[0] == "'" or rest.startswith(("None", "True", "False")):
        return (
            "it looks like a Python dict (single quotes, None, True): write each line with "
            "json.dumps(example), not str(example)"
        )
    if error.msg.startswith("Expecting ',' delimiter"):
        return (
            f"a comma is missing at column {error.colno}, between two items, or a quote "
            'inside a text is not escaped (write \\" inside a string; json.dumps does it for you)'
        )
    if rest[0] in CURLY_QUOTES:
        return (
            f"the character at column {error.colno} is a curly quote {show(rest[0])}, as word "
            'processors type them: JSON needs straight double quotes ("); retype the quotes in '
            "a plain-text editor, or write each line with json.dumps"
        )
    if error.msg.startswith("Invalid control character"):
        escape = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(rest[0], f"\\u{ord(rest[0]):04x}")
        return (
            f"the text holds a raw control character (U+{ord(rest[0]):04X}) at column "
            f"{error.colno}; inside a string JSON needs it written as {escape} (json.dumps does "
            "that for you)"
        )
    if not (rest[0].isascii() and rest[0].isprintable()):
        name = unicodedata.name(rest[0], "a control character").lower()
        return (
            f"the character at column {error.colno} is the invisible or unusual character "
            f"U+{ord(rest[0]):04X} ({name}), which JSON does not allow there; delete it, and "
            "write each line with json.dumps"
        )
    return (
        f"fix the JSON at column {error.colno} so the line is one complete object "
        "(write it with json.dumps)"
    )


def parse_json(number: int, text: str) -> tuple[Any, Problem | None]:
    """The parsed value, or an `invalid_json` problem with the column and a likely fix."""
    if text.startswith("\ufeff"):  # the first line's BOM is removed with the file's
        return None, Problem(
            "invalid_json",
            "the line starts with a byte order mark (the invisible character U+FEFF) in "
            "the middle of the file, probably where two files were joined together; "
            "remove it (save each file as UTF-8 without BOM before joining them)",
            line=number,
        )
    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
            object_pairs_hook=_unique_keys,
        )
        return value, None
    except json.JSONDecodeError as error:
        where = json_error_place(error)
        return None, Problem(
            "invalid_json", f"not valid JSON ({where}); {_json_hint(text, error)}", line=number
        )
    except RecursionError:
        return None, Problem(
            "invalid_json",
            "the JSON is nested too deeply to read; "
            "an example is an object with a flat list of messages",
            line=number,
        )
    except _UnreadableValue as error:
        return None, Problem("invalid_json", str(error), line=number)


def check_line(number: int, raw: bytes) -> LineResult:
    """All checks of one line (CR already stripped)."""
    result = LineResult(number)
    text, problem = decode_line(number, raw)
    if problem is not None:
        result.problems.append(problem)
        return result
    assert text is not None
    if not text.strip():
        result.blank = True
        result.problems.append(
            Problem(
                "blank_line",
                "empty line skipped; delete it (some tools stop at a blank line)",
                line=number,
            )
        )
        return result
    value, problem = parse_json(number, text)
    if problem is not None:
        result.problems.append(problem)
        return result
    result.value, result.parsed = value, True
    result.problems.extend(check_example(number, value))
    return result


def check_example(number: int, value: Any) -> list[Problem]:
    """The chat-format rules for one parsed line."""
    if not isinstance(value, dict):
        return [
            Problem(
                "not_an_object",
                f"the line is {type_name(value)}, not an object; each "
                'line must be one object like {"messages": [...]}',
                line=number,
            )
        ]
    problems = [
        Problem(
            "unrecognized_key",
            f"key {show(key)} is not allowed at the top level; "
            f"use only {', '.join(TOP_LEVEL_KEYS)}",
            line=number,
        )
        for key in value
        if key not in TOP_LEVEL_KEYS
    ]
    problems.extend(_top_level_field_problems(value, number))
    if "messages" not in value:
        problems.append(
            Problem(
                "missing_messages",
                'no "messages" key; each line must look '
                'like {"messages": [{"role": "user", "content": ...}, ...]}' + _legacy_hint(value),
                line=number,
            )
        )
        return problems
    messages = value["messages"]
    if not isinstance(messages, list):
        problems.append(
            Problem(
                "messages_not_list",
                f'"messages" is {type_name(messages)}; it must be a list of message objects',
                line=number,
            )
        )
        return problems
    if not messages:
        problems.append(
            Problem(
                "empty_messages",
                '"messages" is empty; add the system, user and assistant messages of the example',
                line=number,
            )
        )
        return problems
    for index, message in enumerate(messages):
        problems.extend(check_message(number, index, message))
    if all(isinstance(m, dict) and m.get("role") in ALLOWED_ROLES for m in messages):
        problems.extend(check_conversation(number, messages))
    return problems


def _legacy_hint(value: dict) -> str:
    if "prompt" in value or "completion" in value:
        return (
            ' (this is the legacy prompt/completion format: convert it to {"messages": '
            '[{"role": "user", "content": PROMPT}, {"role": "assistant", '
            '"content": COMPLETION}]})'
        )
    return ""


def _tool_calls_issue(calls: Any) -> str | None:
    """What is wrong with a message's "tool_calls" (None for a non-empty list of named calls)."""
    if not isinstance(calls, list):
        return f'"tool_calls" is {type_name(calls)}, not a list of calls'
    if not calls:
        return '"tool_calls" is an empty list'
    for i, call in enumerate(calls):
        if not isinstance(call, dict):
            return f"tool_calls[{i}] is {type_name(call)}, not a call object"
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return f'tool_calls[{i}] has no "function" with a "name"'
        arguments = function.get("arguments")
        if "arguments" in function and not isinstance(arguments, str):
            return (
                f"tool_calls[{i}].function.arguments is {type_name(arguments)}, not a string: "
                "the arguments are one JSON-encoded string (json.dumps(arguments))"
            )
    return None


def _meant_role(role: Any) -> str | None:
    """The allowed role a wrong one most likely means (accents, look-alikes, case, synonyms)."""
    if not isinstance(role, str):
        return None
    plain = unicodedata.normalize("NFKD", role).encode("ascii", "ignore").decode().strip().lower()
    if plain in ALLOWED_ROLES:
        return plain
    if plain in ROLE_HINTS:
        return ROLE_HINTS[plain]
    close = difflib.get_close_matches(plain, ALLOWED_ROLES, n=1, cutoff=0.75)
    return close[0] if close else None


def _unknown_role_text(role: Any) -> str:
    meant = _meant_role(role)
    hint = f' (here you probably mean "{meant}")' if meant else ""
    allowed = ", ".join(ALLOWED_ROLES)
    if isinstance(role, str) and not role.isascii():
        return (
            f"role {show(role, escape=True)} is not allowed: it contains invisible or "
            "non-Latin characters (shown as \\u escapes: an accent, a letter from another "
            "alphabet that looks Latin, or a zero-width space, often pasted from a web page); "
            f"type it again in plain letters as one of {allowed}{hint}"
        )
    return f"role {show(role)} is not allowed; use one of {allowed}{hint}"


def check_message(number: int, index: int, message: Any) -> list[Problem]:
    """The rules for one entry of `messages`."""

    def problem(code: str, text: str) -> Problem:
        return Problem(code, text, line=number, message_index=index)

    if not isinstance(message, dict):
        return [
            problem(
                "message_not_object",
                f"the message is {type_name(message)}, not an "
                'object; write it as {"role": ..., "content": ...}',
            )
        ]
    problems = [
        problem(
            "unrecognized_key",
            f"key {show(key)} is not allowed in a message; use only {', '.join(MESSAGE_KEYS)}",
        )
        for key in message
        if key not in MESSAGE_KEYS
    ]
    role = message.get("role")
    if "role" not in message:
        named = [key for key in message if key in ALLOWED_ROLES]
        hint = (
            f'; write {{"role": "{named[0]}", "content": ...}} instead of {{"{named[0]}": ...}}'
            if named
            else ""
        )
        problems.append(
            problem(
                "missing_role",
                f'the message has no "role"; add one of {", ".join(ALLOWED_ROLES)}{hint}',
            )
        )
    elif role not in ALLOWED_ROLES:
        problems.append(problem("unknown_role", _unknown_role_text(role)))
    calls_issue = _tool_calls_issue(message["tool_calls"]) if "tool_calls" in message else None
    if message.get("content") is None:
        if role != "assistant" or "tool_calls" not in message:
            problems.append(_no_content(problem, "content" in message, None))
        elif calls_issue:
            problems.append(_no_content(problem, "content" in message, calls_issue))
    else:
        problems.extend(_content_problems(message["content"], problem))
        if calls_issue:
            problems.append(
                problem("invalid_content", f"{calls_issue}; write it as {TOOL_CALLS_FORM}")
            )
    problems.extend(_field_problems(message, role, problem))
    if "weight" in message:
        weight = message["weight"]
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight not in (0, 1):
            problems.append(
                problem(
                    "invalid_weight",
                    f"weight is {show(weight)}; it must be the "
                    "number 0 (do not learn this reply) or 1 (learn it)",
                )
            )
        if role in ALLOWED_ROLES and role != "assistant":
            problems.append(
                problem(
                    "weight_not_on_assistant",
                    f'"weight" is on a {role} message; '
                    "only assistant messages are learned, so remove it",
                )
            )
    return problems


def _field_problems(message: dict, role: Any, problem) -> list[Problem]:
    """Wrong types of a message's optional fields, which OpenAI refuses too."""
    problems = [
        problem(
            "invalid_field",
            f'"{key}" is {type_name(message[key])}; it must be a string (write it in quotes)',
        )
        for key in ("name", "tool_call_id")
        if key in message and not isinstance(message[key], str)
    ]
    if "tool_calls" in message and role in ALLOWED_ROLES and role != "assistant":
        problems.append(
            problem(
                "invalid_field",
                f'"tool_calls" is on a {role} message; only the assistant calls tools: move '
                "the calls to the assistant message that made them",
            )
        )
    return problems


def _top_level_field_problems(value: dict, number: int) -> list[Problem]:
    """Wrong types of the example's `tools` (a list) and `parallel_tool_calls` (true/false)."""
    expected = {
        "tools": (list, "a list of tool definitions"),
        "parallel_tool_calls": (bool, "true or false"),
    }
    return [
        Problem(
            "invalid_field",
            f'"{key}" is {type_name(value[key])}; it must be {what}',
            line=number,
        )
        for key, (kind, what) in expected.items()
        if key in value and not isinstance(value[key], kind)
    ]


def _no_content(problem, present: bool, calls_issue: str | None) -> Problem:
    """The problem of a message whose content is missing or null (and no sound tool_calls)."""
    code = "invalid_content" if present else "missing_content"
    if calls_issue:
        what = "content is null" if present else 'the message has no "content"'
        return problem(
            code,
            f'{what}, and "tool_calls" cannot stand in for it: {calls_issue}; write it as '
            f'{TOOL_CALLS_FORM}, or give the reply as "content"',
        )
    if present:
        return problem(
            code,
            "content is null; give the text as a string (for a reply: the answer the "
            'model should learn), null is only allowed on an assistant message with "tool_calls"',
        )
    return problem(
        code,
        'the message has no "content"; add the text as "content" (only an assistant '
        'message with "tool_calls" may leave it out)',
    )


def _content_problems(content: Any, problem) -> list[Problem]:
    """The problems of a content that is given and not null."""
    if isinstance(content, str):
        bad = LONE_SURROGATE.search(content)
        if bad:
            return [
                problem(
                    "invalid_content",
                    f"the content contains the escape "
                    f"\\u{ord(bad.group()):04x}, half of a surrogate pair, which is not "
                    "a character; fix the text (it was probably cut in the middle of "
                    "an emoji)",
                )
            ]
        return []
    hint = ""
    if isinstance(content, list):
        hint = ' (a list of content parts is not supported here: join their "text" into one string)'
    return [
        problem("invalid_content", f"content is {type_name(content)}; it must be a string{hint}")
    ]


def check_conversation(number: int, messages: list[dict]) -> list[Problem]:
    """Rules about the example as a whole (run only when every role is known)."""
    problems = []
    replies = [m for m in messages if m["role"] == "assistant"]
    if not replies:
        problems.append(
            Problem(
                "no_assistant_message",
                "the example has no assistant message, so "
                "there is nothing to learn; add the reply you want as "
                '{"role": "assistant", "content": ...}',
                line=number,
            )
        )
    elif all(m.get("weight") == 0 and not isinstance(m.get("weight"), bool) for m in replies):
        problems.append(
            Problem(
                "no_assistant_message",
                "every assistant message has weight 0, so "
                "there is nothing to learn; set weight 1 on (or remove weight from)"
                " the reply to learn",
                line=number,
            )
        )
    for index, message in enumerate(messages):
        content = message.get("content")  # missing or null: errors of their own
        empty = isinstance(content, str) and not content.strip()
        if is_learned(message) and empty and not message.get("tool_calls"):
            problems.append(
                Problem(
                    "empty_reply",
                    "the assistant reply is empty, so training teaches the model to answer with "
                    "nothing (help-desk exports write one for a ticket closed without a reply); "
                    'write the reply, give it "weight": 0, or remove the example',
                    line=number,
                    message_index=index,
                )
            )
    if not any(m["role"] == "system" for m in messages):
        problems.append(
            Problem(
                "no_system_message",
                "no system message; add the system prompt "
                "you will use at inference time, so training and use match",
                line=number,
            )
        )
    if messages[-1]["role"] != "assistant":
        ending = f"the example ends with a {messages[-1]['role']} message"
        why = (
            "; what comes after the last assistant message is not learned, so end with "
            "the assistant's reply"
            if replies
            else " and has no assistant reply at all; end it with the reply to learn"
        )
        problems.append(
            Problem(
                "last_not_assistant",
                ending + why,
                line=number,
                message_index=len(messages) - 1,
            )
        )
    return problems


def has_messages(value: Any) -> bool:
    """True for a parsed line with a list of messages to look into."""
    return isinstance(value, dict) and isinstance(value.get("messages"), list)


def user_texts(value: Any) -> list[str]:
    """The user messages' text of a parsed line, however malformed the rest is."""
    if not has_messages(value):
        return []
    return [
        m["content"]
        for m in value["messages"]
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
    ]


def normalise(text: str) -> str:
    """The form used to spot the same message in two splits (case and spacing ignored)."""
    return " ".join(text.casefold().split())
