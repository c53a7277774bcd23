"""The stable problem codes of the data checker, each with what it means.

Errors make a file invalid; warnings are worth reading but do not stop training.
The codes never change meaning: notebooks, tests and instructors' scripts match on them.
Three more codes live outside this table: `ftlab validate --json` reports `unreadable_file`
(exit status 2, `line: null`) when the file cannot be read at all, `model_not_found` when the
tokenizer of `--model` cannot be loaded to count tokens, and `invalid_argument` when an option's
value is wrong (`--epochs 0`); each time there is no report.
"""

from __future__ import annotations

ERROR_CODES: dict[str, str] = {
    "invalid_encoding": "bytes that are not UTF-8",
    "invalid_json": "the line does not parse as JSON",
    "not_an_object": "the line is JSON but not an object",
    "missing_messages": "no `messages` key",
    "messages_not_list": "`messages` is not a list",
    "empty_messages": "`messages` is an empty list",
    "message_not_object": "an entry of `messages` is not an object",
    "missing_role": "a message has no `role`",
    "unknown_role": "role not one of system, user, assistant, tool",
    "missing_content": "a message has no `content`",
    "invalid_content": "`content` is neither a string nor null-with-tool_calls",
    "unrecognized_key": "a key the chat format does not allow",
    "no_assistant_message": "the example has no assistant message to learn from",
    "invalid_field": "`name`, `tool_call_id`, `tools` or `parallel_tool_calls` has the wrong type, "
    "or `tool_calls` is on a message that is not the assistant's",
    "invalid_weight": "`weight` is not 0 or 1",
    "weight_not_on_assistant": "`weight` on a message that is not from the assistant",
    "empty_file": "no examples at all",
    "too_few_examples": "fewer than 10 examples (the OpenAI minimum)",
}

WARNING_CODES: dict[str, str] = {
    "blank_line": "an empty line was skipped",
    "bom": "the file starts with a UTF-8 byte order mark",
    "no_system_message": "the example has no system message",
    "last_not_assistant": "the example does not end with an assistant message",
    "too_long": "longer than the model's context: OpenAI truncates it, `ftlab train` refuses it",
    "over_train_max_length": "within the model's context, but longer than the 2,048 tokens "
    "`ftlab train` and the course server take",
    "empty_reply": "a learned assistant reply is empty (or only white space)",
    "duplicate_example": "the same example appears on an earlier line",
    "overlap_with_split": "the same user message is in the other split (leakage)",
    "against_unreadable": "lines of an --against file could not be read, so were not compared",
    # From the chat template of the model that counts the tokens (`--model`), not the file:
    # fine for OpenAI and other models, but `ftlab train` with this one refuses the example.
    "template_error": "the model's chat template cannot render the example (or the tokenizer "
    "has none): its tokens were counted as plain text, and `ftlab train` with that model "
    "refuses it",
    "reply_not_located": "the model's chat template does not render the conversation as one "
    "message after another, so `ftlab train` with that model cannot locate this reply to learn "
    "it and refuses the example",
    "system_dropped": "the model's chat template leaves out system messages, so that model never "
    "reads the file's system prompts, in `ftlab train` or when asked; put the system prompt at "
    "the start of the first user message, or use another model",
}

ALLOWED_ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = ("role", "content", "name", "weight", "tool_calls", "tool_call_id")
TOP_LEVEL_KEYS = ("messages", "tools", "parallel_tool_calls")
MIN_EXAMPLES = 10  # OpenAI refuses a training file with fewer


def is_error(code: str) -> bool:
    """True for an error code, False for a warning code (unknown codes are a bug)."""
    if code in ERROR_CODES:
        return True
    if code in WARNING_CODES:
        return False
    raise KeyError(f"unknown problem code {code!r}")
