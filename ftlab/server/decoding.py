"""A token-by-token decoding loop for chat completions: greedy or sampled, `n` choices,
stop strings and streaming, with a KV cache, for several requests in one batch.

`ftlab.generation.generate_batch` (greedy, many prompts) serves evaluation; this loop
serves the API, which needs what `model.generate` does not give together: several
sampled choices streamed at once, and OpenAI's stop semantics (the stop text itself
is never returned, and text that might be the start of a stop string is held back
until it is known not to be). Requests that arrive together share one batch
(`ftlab.server.batching`): every choice is a row, prompts are left-padded, and a row
leaves the batch as soon as its choice is finished.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from ftlab.generation import (
    MIN_SHARED_TOKENS,
    common_prefix,
    encode_prefix,
    model_context,
    padded_batch,
    shared_prefix_length,
    stop_token_ids,
)
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


class JoinFailed(RuntimeError):
    """Computing the prompts of requests joining a batch failed (the error is its cause);
    the batch itself is as it was."""

    def __init__(self, requests: Sequence[ChatRows]) -> None:
        super().__init__("the requests could not join the batch")
        self.requests = list(requests)


class ContextTooLong(ValueError):
    """The prompt leaves no room for an answer in the model's context window."""


# Below this temperature sampling is greedy: dividing the logits by 1e-45 overflows to inf,
# and the most likely token has all the probability long before that.
GREEDY_BELOW = 1e-4


def next_tokens(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None):
    """Pick one token per row: argmax at temperature 0 (or top_p 0), else nucleus sampling."""
    if sampling.temperature < GREEDY_BELOW or sampling.top_p <= 0:
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
        if reason == "length":  # max_tokens cut a character (an emoji, say) between its bytes
            text = text.rstrip("\ufffd")
        rest = text[len(self.sent) :] if text.startswith(self.sent) else ""
        return Delta(index, rest, reason)


def answer_room(model, tokenizer, ids: Sequence[int]) -> int:
    """How many tokens fit after the prompt in the model's context window."""
    context = model_context(model, tokenizer)
    room = context - len(ids)
    if room <= 0:
        raise ContextTooLong(
            f"This model's maximum context length is {context} tokens, but the messages "
            f"use {len(ids)} tokens. Shorten the messages."
        )
    return room


@dataclass
class ChatRows:
    """One chat request in a batch: its prompt and settings, and where its text goes.

    `max_tokens` is the request's limit, already capped by the room left in the context
    window (`answer_room`). `emit` receives the request's deltas in order (called on the
    decoding thread); when `cancelled()` turns true, the request's rows leave the batch
    silently.
    """

    ids: list[int]
    sampling: Sampling
    max_tokens: int
    usage: Usage
    emit: Callable[[Delta], None]
    cancelled: Callable[[], bool] = lambda: False


@dataclass
class _Row:
    request: ChatRows
    index: int  # the choice's index in its request
    choice: _Choice
    stops: list[str]
    generator: torch.Generator | None


def _rows(model, requests: Sequence[ChatRows]) -> list[_Row]:
    rows = []
    for request in requests:
        request.usage.prompt_tokens = len(request.ids)
        stops = [s for s in request.sampling.stop if s]
        generator = None
        if request.sampling.seed is not None:
            try:
                generator = torch.Generator(device=model.device).manual_seed(request.sampling.seed)
            except (RuntimeError, ValueError, OverflowError) as error:  # only this request fails
                request.emit(error)
                continue
        rows += [_Row(request, i, _Choice(), stops, generator) for i in range(request.sampling.n)]
    return rows


def _pick(logits: torch.Tensor, rows: list[_Row]) -> list[int]:
    """The next token of every row, each request sampled with its own settings and seed."""
    picked = [0] * len(rows)
    by_request: dict[int, list[int]] = {}
    for position, row in enumerate(rows):
        by_request.setdefault(id(row.request), []).append(position)
    for positions in by_request.values():
        first = rows[positions[0]]
        try:
            chosen = next_tokens(logits[positions], first.request.sampling, first.generator)
        except (RuntimeError, ValueError) as error:  # one request's settings: only it fails
            first.request.emit(error)
            for position in positions:
                rows[position].choice.finished = True
            continue
        for position, token in zip(positions, chosen.tolist(), strict=True):
            picked[position] = token
    return picked


def _advance(row: _Row, token: int, ends: set[int], tokenizer) -> Delta | None:
    """Add `token` to the row's choice; the delta to send, if any (marks the row finished)."""
    if token in ends:
        return row.choice.finish(tokenizer, row.index, "stop")
    row.request.usage.completion_tokens += 1
    row.choice.tokens.append(token)
    delta = row.choice.advance(tokenizer, row.index, row.stops)
    if not row.choice.finished and len(row.choice.tokens) >= row.request.max_tokens:
        tail = row.choice.finish(tokenizer, row.index, "length")
        text = (delta.text if delta else "") + tail.text
        return Delta(row.index, text, "length")
    return delta


@dataclass
class _Group:
    """Rows decoding together: their KV cache, and what the next forward pass reads.

    Between steps `inputs` holds each row's newest token (not yet in `past`), `mask`
    covers `past` and that token, and `positions` is that token's position in its row.
    """

    rows: list[_Row]
    inputs: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    past: Any = None


def _plain(cache) -> bool:
    """Whether `cache` is a plain growing KV cache (one `DynamicLayer` a layer), the kind
    whose rows and positions `_merge_cache` and `_cut_front` can rearrange."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _merge_cache(first, second, first_pad: int, second_pad: int) -> None:
    """Append `second`'s rows to `first`'s cache, left-padding each by its `_pad`."""
    for a, b in zip(first.layers, second.layers, strict=True):
        a.keys = torch.cat([_left_pad(a.keys, first_pad, -2), _left_pad(b.keys, second_pad, -2)])
        a.values = torch.cat(
            [_left_pad(a.values, first_pad, -2), _left_pad(b.values, second_pad, -2)]
        )


def _cut_front(cache, size: int) -> None:
    """Drop the first `size` positions of every row (padding in all of them)."""
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[..., size:, :], layer.values[..., size:, :]


def _left_pad(values: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """`size` empty positions before the others along `dim` (the mask hides them)."""
    if size == 0:
        return values
    shape = list(values.shape)
    shape[dim] = size
    return torch.cat([values.new_zeros(shape), values], dim=dim)


class BatchDecoder:
    """Chat requests decoded together, one token for every row at each `step()`: one row per
    choice, sent to each request's `emit`. Requests can `join` while others are decoding.

    Every choice ends with one delta whose `finish_reason` is "stop" (end of turn or a
    stop string) or "length" (`max_tokens` reached). Prompts are left-padded and
    positions are counted from the attention mask, so each row reads as if it were
    alone; finished rows are dropped from the batch and its KV cache. The tokens the
    prompts of requests that join together start with (a class's shared system prompt, or
    the prompt of a request with several choices) are computed once, and each row starts
    from their KV cache (`share_prefix=False` computes every row's whole prompt, for
    comparison). A request that joins a batch mid-way has its prompt computed in a forward
    pass of its own, then its rows' KV cache is padded to the batch's and added to it.
    """

    def __init__(self, model, tokenizer, share_prefix: bool = True) -> None:
        self.model, self.tokenizer, self.share_prefix = model, tokenizer, share_prefix
        self.ends = set(stop_token_ids(model, tokenizer))
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._group: _Group | None = None

    @property
    def width(self) -> int:
        """Rows still decoding."""
        return len(self._group.rows) if self._group else 0

    def tokens_left(self) -> int:
        """The most tokens any row may still add (its `max_tokens` not yet used)."""
        rows = self._group.rows if self._group else []
        return max((row.request.max_tokens - len(row.choice.tokens) for row in rows), default=0)

    def decoding(self, request: ChatRows) -> bool:
        """Whether any choice of `request` is still being decoded."""
        return any(row.request is request for row in self._group.rows) if self._group else False

    @torch.inference_mode()
    def join(self, requests: Sequence[ChatRows]) -> None:
        """Compute the prompts of `requests`, send their first tokens, and add their rows."""
        rows = _rows(self.model, requests)
        if not rows:
            return
        if not self.can_join():
            raise RuntimeError("this model's KV cache cannot take rows mid-way")
        try:  # until `_add`, the batch is untouched: a failure is only the newcomers'
            group = self._prefill(rows)
        except Exception as error:
            raise JoinFailed(requests) from error
        if group is not None:
            self._add(group)

    def _prefill(self, rows: list[_Row]) -> _Group | None:
        """The first token of every row, from its prompt; the rows still going on."""
        prompts = [row.request.ids for row in rows]
        prefix, past = [], None
        if self.share_prefix:
            prefix = common_prefix(prompts)  # several choices of one prompt share all of it
            borrowed = self._borrowed_prefix(prompts, at_least=len(prefix))
            if borrowed is not None:
                prefix, past = borrowed
            elif prefix:
                past = encode_prefix(self.model, prefix)
        batch = padded_batch(
            prefix, [p[len(prefix) :] for p in prompts], self.pad, self.model.device
        )
        inputs, mask = batch["input_ids"], batch["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        if prefix:  # computed once for every row, then each row's own tokens after it
            past.batch_repeat_interleave(len(rows))
            inputs, positions = inputs[:, len(prefix) :], positions[:, len(prefix) :]
        return self._advance(_Group(rows, inputs, mask, positions, past))

    def _borrowed_prefix(
        self, prompts: list[list[int]], at_least: int
    ) -> tuple[list[int], Any] | None:
        """The longest beginning `prompts` share with the prompt of a row already decoding,
        and its KV cache copied from that row (one row): requests that join a batch mostly
        start with its system prompt, which then is not computed again. None when it is
        shorter than `at_least` (what the prompts share among themselves) or too short to
        be worth it; nothing is copied then."""
        if self._group is None:
            return None
        shared, row = max(
            (shared_prefix_length([row.request.ids, *prompts]), i)
            for i, row in enumerate(self._group.rows)
        )
        if shared < max(MIN_SHARED_TOKENS, at_least):
            return None
        # The row's first `shared` real positions (its padding is left out).
        columns = self._group.mask[row, :-1].nonzero().squeeze(-1)[:shared]
        past = DynamicCache(
            ddp_cache_data=[
                (layer.keys[row : row + 1, :, columns], layer.values[row : row + 1, :, columns])
                for layer in self._group.past.layers
            ]
        )
        return list(prompts[0][:shared]), past

    def can_join(self) -> bool:
        """Whether rows can be added now (not to a kind of KV cache this cannot pad)."""
        return self._group is None or _plain(self._group.past)

    def abandon(self) -> None:
        """Drop every row (after a failed step, whose cache cannot be trusted)."""
        self._group = None

    @torch.inference_mode()
    def step(self) -> None:
        """One more token for every row."""
        if self._group is not None:
            self._group = self._advance(self._group)

    def _add(self, group: _Group) -> None:
        if self._group is None:
            self._group = group
            return
        ours, theirs = self._group, group
        width = max(ours.mask.shape[1], theirs.mask.shape[1])
        our_pad, their_pad = width - ours.mask.shape[1], width - theirs.mask.shape[1]
        _merge_cache(ours.past, theirs.past, our_pad, their_pad)
        self._group = _Group(
            ours.rows + theirs.rows,
            torch.cat([ours.inputs, theirs.inputs]),
            torch.cat([_left_pad(ours.mask, our_pad, -1), _left_pad(theirs.mask, their_pad, -1)]),
            torch.cat([ours.positions, theirs.positions]),
            ours.past,
        )

    def _advance(self, group: _Group) -> _Group | None:
        """Run `group` one token on, send the text, drop finished rows; None when none are left."""
        with autocast(self.model.device):
            output = self.model(
                input_ids=group.inputs,
                attention_mask=group.mask,
                position_ids=group.positions,
                cache=group.past,
                use_cache=True,
                logits_to_keep=1,
            )
        past, rows = output.cache, group.rows
        picked = _pick(output.logits[:, -1, :].float(), rows)
        for row, token in zip(rows, picked, strict=True):
            if row.choice.finished:  # its request failed in `_pick`
                continue
            if row.request.cancelled():
                row.choice.finished = True
                continue
            delta = _advance(row, token, self.ends, self.tokenizer)
            if delta is not None:
                row.request.emit(delta)
        keep = [i for i, row in enumerate(rows) if not row.choice.finished]
        if not keep:
            return None
        mask, positions = group.mask, group.positions
        if len(keep) < len(rows):
            kept = torch.tensor(keep, device=self.model.device)
            past.batch_select_indices(kept)
            mask, positions = mask[kept], positions[kept]
            rows, picked = [rows[i] for i in keep], [picked[i] for i in keep]
            # Positions that are padding in every row left (a long prompt's or answer's
            # that finished) are cut: every later step would attend to them for nothing.
            unused = int(mask.any(dim=0).to(torch.int8).argmax())
            if unused and _plain(past):
                _cut_front(past, unused)
                mask = mask[:, unused:]
        return _Group(
            rows,
            torch.tensor(picked, device=self.model.device)[:, None],
            torch.cat([mask, mask.new_ones(len(rows), 1)], dim=-1),
            positions[:, -1:] + 1,
            past,
        )


def decode_batch(model, tokenizer, requests: Sequence[ChatRows], share_prefix: bool = True) -> None:
    """Answer `requests` together to the end (a `BatchDecoder` that nobody joins)."""
    decoder = BatchDecoder(model, tokenizer, share_prefix)
    decoder.join(requests)
    while decoder.width:
        decoder.step()
