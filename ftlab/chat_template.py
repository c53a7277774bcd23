"""Rendering chat examples with a model's chat template, the same way for counting and training.

The checker counts tokens and `ftlab train` learns them from the same rendering, so an example
the checker accepts is one training can read: only role and text reach the template (`weight`
and `name` are not part of what the model reads), and tool calls become their JSON text.
"""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import Callable, Iterator, Sequence
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


# transformers gives a tokenizer without a length limit a huge model_max_length (1e30).
UNSET_CONTEXT = 10_000_000


def tokenizer_limit(tokenizer: Any) -> int | None:
    """The length a tokenizer says its model reads at most, or None when it sets none."""
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < UNSET_CONTEXT else None


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


def once_per_template(
    cache: weakref.WeakKeyDictionary, tokenizer: Any, probe: Callable[[Any], Any]
) -> Any:
    """`probe(tokenizer)`, computed once per tokenizer and chat template: probes render a
    template, which is slow next to a lookup, and training, the checker and the server ask
    for every example or batch. Asked again when the template changes (a notebook may set
    `tokenizer.chat_template`)."""
    template = getattr(tokenizer, "chat_template", None)
    with contextlib.suppress(KeyError, TypeError):  # TypeError: not weakly referenceable
        probed_with, value = cache[tokenizer]
        if probed_with == template:
            return value
    value = probe(tokenizer)
    with contextlib.suppress(TypeError):
        cache[tokenizer] = (template, value)
    return value


def generation_cue(tokenizer: Any) -> str:
    """The text the template adds to ask for a reply (`<|im_start|>assistant\\n` for SmolLM2),
    or "" when its generation prompt is not simply appended. Computed once per tokenizer."""
    return once_per_template(_cues, tokenizer, _probe_cue)


def _probe_cue(tokenizer: Any) -> str:
    probe = [{"role": "user", "content": "x"}]
    try:
        without = render(tokenizer, probe)
    except ChatTemplateError:  # a template that wants a system message first
        probe = [{"role": "system", "content": "s"}, *probe]
        without = render(tokenizer, probe)
    with_prompt = render(tokenizer, probe, generation_prompt=True)
    return with_prompt[len(without) :] if with_prompt.startswith(without) else ""


_cues: weakref.WeakKeyDictionary[Any, tuple[Any, str]] = weakref.WeakKeyDictionary()
SYSTEM_MARKER = "ftlabsystemprobe7q"  # letters and digits: survives trim, escaping, lower()


def keeps_system(tokenizer: Any) -> bool:
    """Whether the chat template keeps a system message's text. Some older templates render
    [system, user] as the user message alone: the model then never reads the system prompt,
    in training or when asked, and nothing fails, so the checker and training warn about it.

    True when it cannot tell: a template that raises on a system message (Gemma's) or cannot
    render at all is not this case, and is already refused (`template_error`). Computed once
    per tokenizer."""
    return once_per_template(_systems, tokenizer, _probe_system)


def _probe_system(tokenizer: Any) -> bool:
    probe = [{"role": "system", "content": SYSTEM_MARKER}, {"role": "user", "content": "x"}]
    try:
        text = render(tokenizer, probe)
    except ChatTemplateError:
        return True
    return not isinstance(text, str) or SYSTEM_MARKER in text.lower()


_systems: weakref.WeakKeyDictionary[Any, tuple[Any, bool]] = weakref.WeakKeyDictionary()


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
