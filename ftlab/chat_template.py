"""Rendering chat examples with a model's chat template, the same way for counting and training.

The checker counts tokens and `ftlab train` learns them from the same rendering, so an example
the checker accepts is one training can read: only role and text reach the template (`weight`
and `name` are not part of what the model reads), and tool calls become their JSON text.
"""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import Iterator, Sequence
from typing import Any


def template_message(message: dict) -> dict[str, str]:
    """The {role, content} a chat template reads for one message of a chat-format example."""
    text = message.get("content") if isinstance(message.get("content"), str) else ""
    if message.get("tool_calls"):
        text += json.dumps(message["tool_calls"])
    return {"role": message["role"], "content": text}


def is_learned(message: dict) -> bool:
    """Whether training learns this message: an assistant reply without `weight: 0`."""
    return message["role"] == "assistant" and message.get("weight", 1) != 0


def learned_positions(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> Iterator[int]:
    """The positions of the tokens that training learns: those that start inside a span of
    learned text (`offsets` are the tokens' character spans, in order, as are `spans`).

    Training labels these positions and the checker counts them, so the two agree.
    """
    k = 0
    for position, (start, end) in enumerate(offsets):
        if end <= start:  # a token with no text of its own
            continue
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        if k < len(spans) and spans[k][0] <= start:
            yield position


class ChatTemplateError(ValueError):
    """A model's chat template cannot render a conversation (or there is none)."""


def render(tokenizer: Any, messages: list[dict], generation_prompt: bool = False) -> str:
    """The conversation as the model reads it (the template's own text, not yet tokens).

    Raises ChatTemplateError, which says what to do, when the template refuses the messages
    (Gemma's has no system role) or the tokenizer has no template (a base model)."""
    conversation = [template_message(m) for m in messages]
    try:
        return tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as error:  # noqa: BLE001 - jinja2's errors, transformers' ValueError
        name = getattr(tokenizer, "name_or_path", "") or "this model"
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError(
                f"The tokenizer of {name} has no chat template, so a conversation cannot be "
                "turned into the text the model reads.\nFix: use a chat (instruct) model, or "
                "set tokenizer.chat_template and save the tokenizer in the model's folder."
            ) from error
        raise ChatTemplateError(
            f"The chat template of {name} cannot render this conversation: {error}\nFix: use a "
            "model whose template takes these roles; for a template without a system role "
            "(Gemma's), put the system prompt at the start of the first user message."
        ) from error


def generation_cue(tokenizer: Any) -> str:
    """The text the template adds to ask for a reply (`<|im_start|>assistant\\n` for SmolLM2),
    or "" when its generation prompt is not simply appended. Computed once per tokenizer."""
    try:
        return _cues[tokenizer]
    except (KeyError, TypeError):  # TypeError: a tokenizer that cannot be weakly referenced
        pass
    probe = [{"role": "user", "content": "x"}]
    try:
        without = render(tokenizer, probe)
    except ChatTemplateError:  # a template that wants a system message first
        probe = [{"role": "system", "content": "s"}, *probe]
        without = render(tokenizer, probe)
    with_prompt = render(tokenizer, probe, generation_prompt=True)
    cue = with_prompt[len(without) :] if with_prompt.startswith(without) else ""
    with contextlib.suppress(TypeError):
        _cues[tokenizer] = cue
    return cue


_cues: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def opening_prompt(tokenizer: Any, rendered_reply: str) -> str:
    """What comes before the text of a reply that opens a conversation.

    `rendered_reply` is the rendering of that one assistant message. Templates may put
    text of their own before it (SmolLM2 adds a default system prompt), which is not
    part of the reply and must not be learned: the reply starts after the template's
    generation prompt (`generation_cue`). Returns "" when the cue is not found: the whole
    rendering then counts as the reply (training warns; see `training.data`)."""
    cue = generation_cue(tokenizer)
    at = rendered_reply.find(cue) if cue else -1
    return rendered_reply[: at + len(cue)] if at >= 0 else ""


class ChatRenderer:
    """A tokenizer's chat template as the checker and training both use it."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, messages: list[dict], generation_prompt: bool = False) -> str:
        return render(self.tokenizer, messages, generation_prompt)

    def opening(self, rendered_reply: str) -> str:
        return opening_prompt(self.tokenizer, rendered_reply)

    def reply_bounds(self, messages: list[dict], index: int) -> tuple[str, str]:
        """(the rendering up to where assistant message `index`'s own text starts, the
        rendering through its end): the learned part of the reply lies between the two."""
        through = self(messages[: index + 1])
        if index:
            return self(messages[:index], generation_prompt=True), through
        return self.opening(through), through  # an opening reply: skip the template's preamble

    def locate_reply(self, messages: list[dict], index: int, text: str) -> tuple[str, str, bool]:
        """`reply_bounds(messages, index)` and whether they locate that reply in `text`, the
        rendering of the whole conversation: the rendering through the reply must start `text`,
        and the one up to the reply's own text must start that. They do not when the template
        does not render a conversation as one message after another (Qwen3's drops the thinking
        of earlier replies): which tokens of `text` are the reply's cannot then be told, so
        training refuses the example, and the checker warns about it from this same test."""
        before, through = self.reply_bounds(messages, index)
        return before, through, text.startswith(through) and through.startswith(before)
