"""Generating answers with a chat model: one conversation, or many in batches."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ftlab.models import autocast


@torch.inference_mode()
def generate_batch(
    model,
    tokenizer,
    conversations: Sequence[list[dict]],
    max_new_tokens: int = 64,
    batch_size: int = 16,
) -> list[str]:
    """Greedy answers for many conversations, batched with left padding.

    Conversations are sorted by length so each batch pads as little as possible;
    answers come back in the original order.
    """
    tokenizer.padding_side = "left"
    prompts = [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
        for c in conversations
    ]
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    answers: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = tokenizer(
            [prompts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(model.device)
        with autocast(model.device):
            output = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        for index, tokens in zip(chunk, new_tokens, strict=True):
            answers[index] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return answers


def chat(model, tokenizer, messages: list[dict], max_new_tokens: int = 128) -> str:
    """The model's greedy reply to one conversation."""
    return generate_batch(model, tokenizer, [messages], max_new_tokens=max_new_tokens)[0]
