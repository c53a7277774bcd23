"""The training loss, computed the cheap way.

Two savings that give the same loss and gradients (to float rounding):
- logits only where labels are: the 49k-word output layer is a large share of
  a small model's compute, and most positions (the prompt) have no label;
- a shared prefix (the system prompt every example starts with) is run once
  per batch, and its keys and values are reused by every row. This one is exact
  without dropout (the default, dropout=0): with LoRA dropout every row reuses the
  prefix's one dropout mask instead of drawing its own.
With adapters in the top layers only, a step can also start from the stored
outputs of the frozen layers below them (training.frozen).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ftlab.models import autocast
from ftlab.training.data import IGNORE, Batch, TokenizedExample, collate
from ftlab.training.frozen import run_after_prefix


@dataclass
class LossParts:
    loss: torch.Tensor  # mean over learned tokens (what is back-propagated)
    tokens: int  # learned tokens
    correct: int  # learned tokens predicted right (argmax)


def _hidden_states(causal_lm, batch: Batch) -> torch.Tensor:
    """Final hidden states of the per-row part of the batch, shape (B, T, H)."""
    decoder = causal_lm.get_decoder()
    if batch.row_states is not None:  # start from the stored outputs of the frozen layers
        above = slice(batch.first_layer, None)
        _, rows = run_after_prefix(decoder, batch.prefix_states, batch.row_states, above)
        return decoder.norm(rows)
    if batch.prefix.numel() == 0:
        return decoder(input_ids=batch.input_ids, use_cache=False).last_hidden_state
    shared = decoder(input_ids=batch.prefix[None], use_cache=True)
    cache = shared.cache
    cache.batch_repeat_interleave(batch.input_ids.shape[0])
    return decoder(input_ids=batch.input_ids, cache=cache, use_cache=True).last_hidden_state


def batch_loss(causal_lm, batch: Batch, mixed_precision: bool = True) -> LossParts:
    """Mean cross-entropy over the learned tokens of the batch (next-token prediction).

    `mixed_precision` runs the matrix products in the device's fast dtype (bf16 where the
    device has it natively, see `ftlab.models.compute_dtype`).
    """
    precision = autocast(batch.input_ids.device) if mixed_precision else contextlib.nullcontext()
    with precision:
        hidden = _hidden_states(causal_lm, batch)
        targets = batch.labels[:, 1:]
        where = targets != IGNORE
        logits = causal_lm.get_output_embeddings()(hidden[:, :-1][where]).float()
    targets = targets[where]
    loss = F.cross_entropy(logits, targets)
    correct = int((logits.detach().argmax(-1) == targets).sum())
    return LossParts(loss, int(targets.numel()), correct)


# Rows x longest row (in tokens) of one forward pass when no micro-batch size is given.
# Eager attention keeps every layer's (rows, heads, length, length) weights for the
# backward pass, so memory grows with the square of the length: the longest batch of the
# course data (16 long e-mails of up to 256 tokens) peaked at 7.2 GB in one pass and 5.0 GB
# in two halves, which were also faster (4.9 s against 8.1 s). With this budget 12 of the
# default run's 128 steps are split and no pass peaks above 4.3 GB.
PART_TOKENS = 2560


def part_size(rows: list[TokenizedExample], micro_batch_size: int | None = None) -> int:
    """Rows per forward pass: `micro_batch_size`, or even parts within PART_TOKENS."""
    if micro_batch_size:
        return micro_batch_size
    parts = math.ceil(len(rows) * max(len(r) for r in rows) / PART_TOKENS)
    return math.ceil(len(rows) / max(1, parts))


def backward_in_parts(
    causal_lm,
    rows: list[TokenizedExample],
    pad_id: int,
    device: torch.device,
    micro_batch_size: int | None = None,
    mixed_precision: bool = True,
    frozen: list[torch.Tensor] | None = None,
    first_adapted: int = 0,
) -> tuple[float, int, int]:
    """Back-propagate the batch's mean loss, a part of its rows at a time (`part_size`).

    Each part's loss is weighted by its share of the batch's learned tokens, so
    the accumulated gradients equal those of the whole batch at once; only the
    peak memory changes. `frozen` holds the rows' stored outputs of the layers
    below `first_adapted` (see training.frozen), if any.
    Returns (mean loss, learned tokens, tokens predicted right).
    """
    size = part_size(rows, micro_batch_size)
    total = sum(row.trained_tokens for row in rows)
    loss_sum, correct = 0.0, 0
    for start in range(0, len(rows), size):
        states = frozen[start : start + size] if frozen is not None else None
        part = collate(rows[start : start + size], pad_id, True, states, first_adapted).to(device)
        parts = batch_loss(causal_lm, part, mixed_precision)
        (parts.loss * (parts.tokens / total)).backward()
        loss_sum += parts.loss.item() * parts.tokens
        correct += parts.correct
    return loss_sum / total, total, correct
