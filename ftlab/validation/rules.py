"""The per-line checks: one line of bytes in, its parsed example (if sound) and its problems out.

Every check says what is wrong and how to fix it. No input raises: whatever the
bytes, the result is a list of `Problem`s.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

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
TRAILING_COMMA = re.compile(r",\s*[}\]]")
PYTHON_REPR = re.compile(r"""[{\[,]\s*'[^']*'\s*:""")  # {'role': ... written by str(dict)
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


def show(value: Any) -> str:
    """A short, always-printable rendering of a value from the file, for messages."""
    if isinstance(value, str):
        cut = value if len(value) <= SHOW_LIMIT else value[:SHOW_LIMIT] + "..."
        text = json.dumps(cut, ensure_ascii=False)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
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


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON (JSON has no NaN or Infinity)")


def decode_line(number: int, raw: bytes) -> tuple[str | None, Problem | None]:
    """The line as text, or an `invalid_encoding` problem that points at the first bad byte."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        bad = raw[error.start : error.start + 1].hex()
        # Show the text around the bad byte as Windows-1252 would read it: usually the intent.
        window = raw[max(0, error.start - 25) : error.start + 25]
        try:
            guess = window.decode("cp1252")
        except UnicodeDecodeError:
            guess = window.decode("latin-1")
        guess = f" (read as Windows-1252 the text there is {show(guess)})"
        return None, Problem(
            "invalid_encoding",
            f"byte 0x{bad} at column {error.start + 1} is not valid UTF-8{guess}; the file was "
            "probably saved as Latin-1 or Windows-1252: save it as UTF-8 (in Python, "
            "open(path, 'w', encoding='utf-8'); in Excel, 'CSV UTF-8')",
            line=number,
        )


def _json_hint(text: str, error: json.JSONDecodeError) -> str:
    if error.msg.startswith("Extra data"):
        return "there is more than one JSON value on the line: put each example on its own line"
    if TRAILING_COMMA.search(text):
        return "remove the trailing comma before the closing } or ]"
    if PYTHON_REPR.search(text):
        return (
            "it looks like a Python dict (single quotes, None, True): write each line with "
            "json.dumps(example), not str(example)"
        )
    if error.pos >= len(text.rstrip()) - 1 or error.msg.startswith("Unterminated"):
        return (
            "the line ends before the JSON does: it was cut off, or one example was spread "
            "over several lines; each example must be complete on one line"
        )
    return "fix the JSON so the line is one complete object (write it with json.dumps)"


def parse_json(number: int, text: str) -> tuple[Any, Problem | None]:
    """The parsed value, or an `invalid_json` problem with the column and a likely fix."""
    try:
        return json.loads(text, parse_constant=_reject_constant), None
    except json.JSONDecodeError as error:
        at = "" if error.msg.endswith(" at") else " at"  # "Unterminated string starting at"
        where = f"{error.msg}{at} column {error.colno}"
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
    except ValueError as error:  # NaN/Infinity, or an integer with thousands of digits
        return None, Problem(
            "invalid_json", f"not valid JSON ({error}); write the line with json.dumps", line=number
        )


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


def _has_tool_calls(message: dict) -> bool:
    calls = message.get("tool_calls")
    return isinstance(calls, list) and len(calls) > 0


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
        meant = ROLE_HINTS.get(role.strip().lower()) if isinstance(role, str) else None
        if isinstance(role, str) and role.strip().lower() in ALLOWED_ROLES:
            meant = role.strip().lower()
        hint = f' (here you probably mean "{meant}")' if meant else ""
        problems.append(
            problem(
                "unknown_role",
                f"role {show(role)} is not allowed; use one of {', '.join(ALLOWED_ROLES)}{hint}",
            )
        )
    tool_calls = role == "assistant" and _has_tool_calls(message)
    if "content" not in message:
        if not tool_calls:
            problems.append(
                problem(
                    "missing_content",
                    'the message has no "content"; add the '
                    'text as "content" (only an assistant message with '
                    '"tool_calls" may leave it out)',
                )
            )
    else:
        problems.extend(_content_problems(message["content"], tool_calls, problem))
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


def _content_problems(content: Any, tool_calls: bool, problem) -> list[Problem]:
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
    if content is None:
        if tool_calls:
            return []
        return [
            problem(
                "invalid_content",
                'content is null; give the text as a string ("" if '
                'empty), null is only allowed on an assistant message with "tool_calls"',
            )
        ]
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
    elif all(m.get("weight") == 0 for m in replies):
        problems.append(
            Problem(
                "no_assistant_message",
                "every assistant message has weight 0, so "
                "there is nothing to learn; set weight 1 on (or remove weight from)"
                " the reply to learn",
                line=number,
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
        problems.append(
            Problem(
                "last_not_assistant",
                f"the example ends with a "
                f"{messages[-1]['role']} message; what comes after the last "
                "assistant message is not learned, so end with the assistant's "
                "reply",
                line=number,
                message_index=len(messages) - 1,
            )
        )
    return problems


def user_texts(value: Any) -> list[str]:
    """The user messages' text of a parsed line, however malformed the rest is."""
    if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
        return []
    return [
        m["content"]
        for m in value["messages"]
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
    ]


def normalise(text: str) -> str:
    """The form used to spot the same message in two splits (case and spacing ignored)."""
    return " ".join(text.casefold().split())
