"""The frozen bottom of a model whose adapters sit in its top layers only.

With LoRA on the top N decoder layers, the layers below have nothing to learn:
their output for an example is the same at every step of every epoch. Training
computes it once, without gradients, and each step starts from it at the first
adapted layer. (Even without that, autograd skips the backward pass through
layers that hold no trainable weight; the stored outputs also save their
forward pass after the first time.)

Running a slice of the layers by hand is done for Llama-style decoders, whose
layers need only the rotary position embeddings and a causal mask; other
models run whole, as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from ftlab.models import autocast
from ftlab.training.data import collate

# Model types whose decoder layers can be run one slice at a time by `run_layers`.
SLICEABLE = frozenset({"llama"})
# Store the frozen layers' outputs only up to this size; past it they are rerun every step.
MAX_STORED_BYTES = 2 * 2**30


def decoder_blocks(causal_lm) -> torch.nn.ModuleList | None:
    """The model's stack of decoder blocks (layers), or None where none is found.

    Llama-style models keep it in `get_decoder().layers`; others under another name
    (GPT-2, Falcon and Bloom: `transformer.h`). It is then the list of blocks of one
    kind that holds the most weights (a mixture-of-experts block's list of experts
    holds fewer than the list of blocks it sits in).
    """
    get_decoder = getattr(causal_lm, "get_decoder", None)
    layers = getattr(get_decoder(), "layers", None) if callable(get_decoder) else None
    if isinstance(layers, torch.nn.ModuleList):
        return layers
    count = getattr(getattr(causal_lm, "config", None), "num_hidden_layers", None)
    stacks = [
        module
        for module in causal_lm.modules()
        if isinstance(module, torch.nn.ModuleList)
        and len(module)
        and len({type(block) for block in module}) == 1
        and (not isinstance(count, int) or len(module) == count)  # not a block's inner list
    ]
    return max(stacks, key=lambda s: sum(p.numel() for p in s.parameters()), default=None)


def first_adapted_layer(causal_lm) -> int:
    """Index of the lowest decoder layer with trainable weights (0 if the first has some, or
    if the model's layers cannot be found: then every layer is adapted)."""
    for index, layer in enumerate(decoder_blocks(causal_lm) or []):
        if any(parameter.requires_grad for parameter in layer.parameters()):
            return index
    return 0


def can_slice(causal_lm) -> bool:
    return causal_lm.config.model_type in SLICEABLE


def causal_mask(length: int, past: int, like: torch.Tensor) -> torch.Tensor:
    """Additive mask of shape (1, 1, length, past + length): each position sees the past
    and itself. Right padding needs no more: no real token comes after it."""
    mask = torch.full(
        (length, past + length), torch.finfo(like.dtype).min, dtype=like.dtype, device=like.device
    )
    return torch.triu(mask, diagonal=past + 1)[None, None]


def run_layers(decoder, hidden: torch.Tensor, layers: slice, past: int = 0, cache=None):
    """Run `decoder.layers[layers]` on hidden states (B, T, H) that sit after `past` tokens.

    `cache` (a transformers Cache) holds the keys and values of those past tokens, and
    receives these tokens' too.
    """
    positions = torch.arange(past, past + hidden.shape[1], device=hidden.device)[None]
    mask = causal_mask(hidden.shape[1], past, hidden)
    rotary = decoder.rotary_emb(hidden, position_ids=positions)
    for layer in decoder.layers[layers]:
        hidden = layer(
            hidden,
            attention_mask=mask,
            position_embeddings=rotary,
            position_ids=positions,
            cache=cache,
            use_cache=cache is not None,
        )
    return hidden


def new_cache(decoder):
    from transformers import DynamicCache

    return DynamicCache(config=decoder.config)


def run_after_prefix(
    decoder, prefix: torch.Tensor, rows: torch.Tensor, layers: slice
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `layers` on a prefix (P, H) once, then on every row (B, T, H) that follows it.

    The prefix's keys and values are computed once and shared by every row.
    Returns the prefix's output (P, H) and the rows' output (B, T, H).
    """
    if prefix.shape[0] == 0:
        return prefix, run_layers(decoder, rows, layers)
    cache = new_cache(decoder)
    prefix_out = run_layers(decoder, prefix[None], layers, 0, cache)[0]
    cache.batch_repeat_interleave(rows.shape[0])
    return prefix_out, run_layers(decoder, rows, layers, prefix.shape[0], cache)


def stored_bytes(causal_lm, rows: Sequence) -> int:
    decoder = causal_lm.get_decoder()
    width = decoder.embed_tokens.weight.shape[1]
    return sum(len(row) for row in rows) * width * 4  # at most float32


@torch.no_grad()
def frozen_outputs(
    causal_lm,
    rows: Sequence,
    first_adapted: int,
    pad_id: int,
    device,
    batch_size: int = 32,
    mixed_precision: bool = True,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[torch.Tensor] | None:
    """Each row's hidden states (length, H) as they enter layer `first_adapted`.

    Computed in the same precision as training's forward pass (autocast), in
    length-sorted batches that run the shared system prompt once. `progress(done, total)`
    is called after each batch with the rows' tokens done so far and in all (tokens,
    not rows, because the short rows come first): on a slow CPU the pass takes a minute
    or two, which should not look like a hang. For the same reason `should_stop()` is
    polled before each batch; when it returns True the pass ends and None is returned.
    """
    decoder = causal_lm.get_decoder()
    below = slice(0, first_adapted)
    outputs: list[torch.Tensor] = [torch.empty(0)] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    done, total = 0, sum(len(row) for row in rows)
    precision = autocast(torch.device(device)) if mixed_precision else contextlib.nullcontext()
    with precision:
        for start in range(0, len(order), batch_size):
            if should_stop is not None and should_stop():
                return None
            chosen = order[start : start + batch_size]
            batch = collate([rows[i] for i in chosen], pad_id).to(device)
            embed = decoder.embed_tokens
            prefix, hidden = run_after_prefix(
                decoder, embed(batch.prefix), embed(batch.input_ids), below
            )
            for place, index in enumerate(chosen):
                own = hidden[place, : len(rows[index]) - len(prefix)]
                outputs[index] = torch.cat([prefix, own])  # a copy: the batch can be freed
            done += sum(len(rows[i]) for i in chosen)
            if progress is not None:
                progress(done, total)
    return outputs
