"""A token-by-token decoding loop for chat completions: greedy or sampled, `n` choices,
stop strings and streaming, with a KV cache.

`ftlab.generation.generate_batch` (greedy, many prompts) serves evaluation; this loop
serves the API, which needs what `model.generate` does not give together: several
sampled choices streamed at once, and OpenAI's stop semantics (the stop text itself
is never returned, and text that might be the start of a stop string is held back
until it is known not to be).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ftlab.generation import prompt_ids
from ftlab.models import autocast


@dataclass
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: Sequence[str] = ()
    seed: int | None = None


@dataclass
class Delta:
    """New text for choice `index`; `finish_reason` is set on its last delta."""

    index: int
    text: str
    finish_reason: str | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ContextTooLong(ValueError):
    """The prompt leaves no room for an answer in the model's context window."""


def eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


def next_tokens(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None):
    """Pick one token per row: argmax at temperature 0, else nucleus sampling."""
    if sampling.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > sampling.top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters to hold: a possible stop-string start, or a split UTF-8."""
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:size]):
                hold = size
                break
    if text.endswith("\ufffd"):
        hold = max(hold, 1)
    return hold


@dataclass
class _Choice:
    tokens: list[int] = field(default_factory=list)
    sent: str = ""
    finished: bool = False

    def advance(self, tokenizer, index: int, stops: Sequence[str]) -> Delta | None:
        """Decode the choice so far; return the text that is safe to send, and stop if due."""
        text = tokenizer.decode(self.tokens, skip_special_tokens=True)
        cuts = [text.find(s) for s in stops if s and s in text]
        if cuts:
            self.finished = True
            return Delta(index, text[: min(cuts)][len(self.sent) :], "stop")
        safe = text[: len(text) - _held_back(text, stops)]
        if len(safe) > len(self.sent) and safe.startswith(self.sent):
            delta, self.sent = safe[len(self.sent) :], safe
            return Delta(index, delta)
        return None

    def finish(self, tokenizer, index: int, reason: str) -> Delta:
        self.finished = True
        text = tokenizer.decode(self.tokens, skip_special_tokens=True)
        rest = text[len(self.sent) :] if text.startswith(self.sent) else ""
        return Delta(index, rest, reason)


@torch.inference_mode()
def decode(
    model, tokenizer, messages: list[dict], sampling: Sampling, usage: Usage
) -> Iterator[Delta]:
    """Yield text deltas for `sampling.n` answers to `messages`; fills in `usage` as it goes.

    Every choice ends with one delta whose `finish_reason` is "stop" (end of turn or a
    stop string) or "length" (`max_tokens` reached).
    """
    ids = prompt_ids(tokenizer, messages)
    usage.prompt_tokens = len(ids)
    context = getattr(model.config, "max_position_embeddings", None) or 2048
    room = context - len(ids)
    if room <= 0:
        raise ContextTooLong(
            f"This model's maximum context length is {context} tokens, but the messages "
            f"use {len(ids)} tokens. Shorten the messages."
        )
    max_tokens = min(sampling.max_tokens, room)
    generator = None
    if sampling.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(sampling.seed)
    stops = [s for s in sampling.stop if s]
    ends = eos_ids(model, tokenizer)
    choices = [_Choice() for _ in range(sampling.n)]
    inputs = torch.tensor([ids] * sampling.n, device=model.device)
    past = None
    for _ in range(max_tokens):
        with autocast(model.device):
            output = model(input_ids=inputs, cache=past, use_cache=True, logits_to_keep=1)
        past = output.cache
        picked = next_tokens(output.logits[:, -1, :].float(), sampling, generator)
        for index, (choice, token) in enumerate(zip(choices, picked.tolist(), strict=True)):
            if choice.finished:
                continue
            if token in ends:
                yield choice.finish(tokenizer, index, "stop")
                continue
            usage.completion_tokens += 1
            choice.tokens.append(token)
            delta = choice.advance(tokenizer, index, stops)
            if delta is not None:
                yield delta
        if all(c.finished for c in choices):
            return
        inputs = picked.unsqueeze(-1)
    for index, choice in enumerate(choices):
        if not choice.finished:
            yield choice.finish(tokenizer, index, "length")
