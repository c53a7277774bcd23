"""Generating answers with a chat model: one conversation, or many in batches.

Evaluation prompts mostly begin the same way: the same system prompt, and for the
few-shot baseline the same example turns. `generate_batch` runs that shared
beginning through the model once, keeps its keys and values (the KV cache) and
starts every batch from a copy, so only each prompt's own tokens are computed per
row. `bench/eval_speed.py` measures what that saves against plain batching.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ftlab.chat_template import ChatTemplateError, once_per_template, render, tokenizer_limit
from ftlab.models import autocast

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Below this many shared tokens, a separate pass for the prefix saves too little to matter.
MIN_SHARED_TOKENS = 8
_REPLY_MARK = "ftlab-reply-mark"  # a reply whose end is searched for in the rendered turn


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokens that end an answer: the generation config's end-of-sequence id(s), the
    tokenizer's, and the special token the chat template closes an assistant turn with.

    A model's generation config may name another end token than the one its chat template
    closes a turn with (Phi-3 writes `<|end|>`, its config ends at `<|endoftext|>`); a model
    fine-tuned on that template writes the end-of-turn token and, unless it is in this list,
    goes on writing.
    """
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = list(configured) if isinstance(configured, list | tuple) else [configured]
    ids += [tokenizer.eos_token_id, end_of_turn_id(tokenizer)]
    return list(dict.fromkeys(i for i in ids if i is not None))


def end_of_turn_id(tokenizer) -> int | None:
    """The special token right after an assistant reply in the chat template's rendering
    (ChatML's `<|im_end|>`, Llama 3's `<|eot_id|>`, Gemma's `<end_of_turn>`, Phi-3's
    `<|end|>`), or None: a template that ends a turn with plain text such as a line break
    (answers may hold line breaks), or no template that renders a reply."""
    return once_per_template(_turn_ends, tokenizer, _probe_turn_end)


def _probe_turn_end(tokenizer) -> int | None:
    conversation = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": _REPLY_MARK},
    ]
    try:
        text = render(tokenizer, conversation)
    except ChatTemplateError:  # no template, or one that needs other messages
        text = ""
    at = text.rfind(_REPLY_MARK) if isinstance(text, str) else -1
    after = text[at + len(_REPLY_MARK) :] if at >= 0 else ""
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    return ids[0] if ids and ids[0] in special_ids(tokenizer) else None


# Asked each time the server starts a batch.
_turn_ends: weakref.WeakKeyDictionary[Any, tuple[Any, int | None]] = weakref.WeakKeyDictionary()


def special_ids(tokenizer) -> set[int]:
    """The ids of a tokenizer's special tokens: its named ones (eos, pad...) and added tokens
    marked special (Llama 3's `<|eot_id|>` and Phi-3's `<|end|>` are only the latter)."""
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    marked = {index for index, token in added.items() if getattr(token, "special", False)}
    return set(tokenizer.all_special_ids) | marked


def model_context(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """How many tokens a loaded model reads: its positions, or fewer when its tokenizer sets
    a lower limit. The checker and training take the same smaller of the two
    (`ftlab.validation.stats.context_length`, which reads the positions from the model's
    config on disk); where neither says, they set no limit, and generation, which needs one
    to fit a prompt and its answer, assumes 2,048."""
    positions = getattr(model.config, "max_position_embeddings", None) or 2048
    return min(positions, tokenizer_limit(tokenizer) or positions)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """Token ids of a conversation plus the assistant prefix: what the model is given."""
    text = render(tokenizer, messages, generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def shared_prefix_length(sequences: Sequence[Sequence[int]], limit: int | None = None) -> int:
    """How many leading tokens all sequences have in common, at most `limit`.

    By default at most the shortest length minus one, so every sequence keeps at
    least one token of its own for the model to read before it answers. Training
    (`ftlab.training.data`) passes a tighter limit: the tokens before the first label.
    """
    if not sequences:
        return 0
    if limit is None:
        limit = min(len(s) for s in sequences) - 1
    first = sequences[0]
    length = 0
    while length < limit and all(s[length] == first[length] for s in sequences):
        length += 1
    return length


def common_prefix(prompts: Sequence[Sequence[int]]) -> list[int]:
    """The leading tokens of `prompts` worth computing once for all of them: every
    prompt's shared beginning, or none when there is one prompt or too little is shared."""
    shared = shared_prefix_length(prompts) if len(prompts) > 1 else 0
    return list(prompts[0][:shared]) if shared >= MIN_SHARED_TOKENS else []


def encode_prefix(model, prefix: Sequence[int]):
    """The KV cache of `prefix` (one row), to start every batch from."""
    inputs = torch.tensor([list(prefix)], device=model.device)
    with autocast(model.device):
        output = model(input_ids=inputs, use_cache=True, logits_to_keep=1)
    return output.cache


def padded_batch(
    prefix: Sequence[int], rows: Sequence[Sequence[int]], pad_id: int, device
) -> dict[str, torch.Tensor]:
    """`prefix + padding + row` for every row, with the attention mask that hides the padding.

    Without a prefix this is ordinary left padding. With one, the padding sits
    between the shared prefix and each row's own tokens; the mask hides it and
    `generate` numbers positions from the mask, so every row reads as if unpadded.
    """
    width = max(len(r) for r in rows)
    ids = [[*prefix, *[pad_id] * (width - len(r)), *r] for r in rows]
    mask = [[1] * len(prefix) + [0] * (width - len(r)) + [1] * len(r) for r in rows]
    return {
        "input_ids": torch.tensor(ids, device=device),
        "attention_mask": torch.tensor(mask, device=device),
    }


@torch.inference_mode()
def generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[list[dict]],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    share_prefix: bool = True,
) -> list[str]:
    """Greedy answers for many conversations, in batches.

    Conversations are sorted by length so each batch pads as little as possible;
    answers come back in the original order. With `share_prefix`, the tokens that
    every prompt starts with are computed once (see the module docstring). An answer
    ends at any of `stop_token_ids`. The model runs in eval mode (no dropout), and is
    put back in training mode afterwards if it was in it.
    """
    with _eval_mode(model):
        return _answers(model, tokenizer, conversations, max_new_tokens, batch_size, share_prefix)


@contextlib.contextmanager
def _eval_mode(model):
    """The model in eval mode (dropout off) inside, in its own mode again after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _answers(model, tokenizer, conversations, max_new_tokens, batch_size, share_prefix):
    prompts = [prompt_ids(tokenizer, c) for c in conversations]
    stops = stop_token_ids(model, tokenizer)
    prefix = common_prefix(prompts) if share_prefix else []
    shared = len(prefix)
    prefix_cache = encode_prefix(model, prefix) if shared else None
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = padded_batch(
            prefix, [prompts[i][shared:] for i in chunk], tokenizer.pad_token_id, model.device
        )
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)  # generate extends the cache it is given
            cache.batch_repeat_interleave(len(chunk))
            batch["cache"] = cache
        with autocast(model.device):
            output = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        for index, tokens in zip(chunk, new_tokens, strict=True):
            answers[index] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return answers


def chat(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict],
    max_new_tokens: int = 128,
) -> str:
    """The model's greedy reply to one conversation."""
    return generate_batch(model, tokenizer, [messages], max_new_tokens=max_new_tokens)[0]
