"""Token statistics and the training-cost estimate of a data file.

Tokens are counted the way training sees them: each example rendered with the
base model's own chat template, then tokenized. The assistant tokens of an
example are the ones training learns (replies with weight 0 excluded): for each
reply, the tokens its rendering adds after the prompt that precedes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from ftlab.chat_template import ChatRenderer, template_message
from ftlab.validation.prices import resolve_price

# OpenAI's "auto" epochs rule (also used by the course's local server).
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MAX_AUTO_EPOCHS = 25
MIN_AUTO_EPOCHS = 1
# A tokenizer's model_max_length above this is transformers' "unknown" placeholder.
UNSET_CONTEXT = 10_000_000
TOKENIZE_BATCH = 1_000  # texts per tokenizer call: fast, and memory stays flat
# `ftlab train` refuses longer examples unless given --max-length (longer rows need more memory).
TRAIN_MAX_LENGTH = 2048


def auto_epochs(n_examples: int) -> int:
    """OpenAI's `n_epochs="auto"`: 3, more for tiny files, fewer for huge ones."""
    if n_examples <= 0:
        return TARGET_EPOCHS
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_AUTO_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def summarize(values: Sequence[int | float]) -> dict[str, float] | None:
    """min / mean / median / p95 / max of a list of numbers (None when it is empty)."""
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    return {
        "min": _plain(array.min()),
        "mean": round(float(array.mean()), 2),
        "median": _plain(np.median(array)),
        "p95": _plain(np.percentile(array, 95)),
        "max": _plain(array.max()),
    }


def _plain(value: float) -> int | float:
    value = float(value)
    return int(value) if value.is_integer() else round(value, 2)


def cached_tokenizer(name: str | None = None):
    """The tokenizer of a base model, loaded once per process (loading takes seconds)."""
    from ftlab.models import DEFAULT_MODEL

    return _load_tokenizer(None if name == DEFAULT_MODEL else name)


@lru_cache(maxsize=4)
def _load_tokenizer(name: str | None):
    from ftlab.models import load_tokenizer

    return load_tokenizer(name)


def tokenizer_label(tokenizer: Any) -> str:
    from ftlab.models import DEFAULT_MODEL, builtin_model_dir

    path = str(getattr(tokenizer, "name_or_path", "") or "")
    if path and path.rstrip("/") == str(builtin_model_dir()):
        return DEFAULT_MODEL
    return path.rstrip("/").rsplit("/", 1)[-1] if path.startswith("/") else (path or "tokenizer")


@lru_cache(maxsize=16)
def _config_context(name_or_path: str) -> int | None:
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(name_or_path, local_files_only=True)
    except Exception:  # noqa: BLE001 - no readable config just means "context unknown"
        return None
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def context_length(tokenizer: Any) -> int | None:
    """The model's context in tokens: the tokenizer's limit, else the config's positions."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < UNSET_CONTEXT:
        return limit
    return _config_context(str(getattr(tokenizer, "name_or_path", "") or ""))


class _Renderer(ChatRenderer):
    """The chat template, falling back to plain text when it rejects a conversation (the
    checker counts any file; training refuses what its template cannot render)."""

    def __init__(self, tokenizer: Any):
        super().__init__(tokenizer)
        self.fallbacks = 0

    def __call__(self, messages: list[dict], generation_prompt: bool = False) -> str:
        try:
            text = super().__call__(messages, generation_prompt)
            if isinstance(text, str):
                return text
        except Exception:  # noqa: BLE001 - a model's template may reject any conversation
            pass
        self.fallbacks += 1
        text = "".join(f"{m['role']}: {m['content']}\n" for m in map(template_message, messages))
        return text + ("assistant: " if generation_prompt else "")

    def opening(self, rendered_reply: str) -> str:
        """What the template puts before a reply that opens a conversation ("" if unknown)."""
        try:
            return super().opening(rendered_reply)
        except Exception:  # noqa: BLE001 - as above: count the whole rendering as the reply
            return ""


def _token_lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    """Token counts of many texts, in batches: one call for all 50,000 would hold every encoding."""
    return [
        length
        for start in range(0, len(texts), TOKENIZE_BATCH)
        for length in _batch_lengths(tokenizer, texts[start : start + TOKENIZE_BATCH])
    ]


def _batch_lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    """Token counts of a batch of texts in one call (fast tokenizers run it in Rust)."""
    try:
        ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return [len(row) for row in ids]
    except Exception:  # noqa: BLE001 - retry one by one with unencodable characters replaced
        return [
            len(
                tokenizer(t.encode("utf-8", "replace").decode("utf-8"), add_special_tokens=False)[
                    "input_ids"
                ]
            )
            for t in texts
        ]


def count_tokens(examples: Sequence[dict], tokenizer: Any) -> tuple[list[int], list[int], int]:
    """Per example: templated tokens, learned assistant tokens; and how many renders fell back."""
    render = _Renderer(tokenizer)
    texts: dict[str, int] = {}  # unique text -> position, so shared prefixes are tokenized once

    def slot(text: str) -> int:
        return texts.setdefault(text, len(texts))

    plan: list[tuple[int, list[tuple[int, int]]]] = []
    for example in examples:
        messages = example["messages"]
        full = slot(render(messages))
        pairs = []
        for index, message in enumerate(messages):
            if message["role"] == "assistant" and message.get("weight", 1) != 0:
                before, through = render.reply_bounds(messages, index)
                pairs.append((slot(through), slot(before)))
        plan.append((full, pairs))
    lengths = _token_lengths(tokenizer, list(texts))
    totals, replies = [], []
    for full, pairs in plan:
        totals.append(lengths[full])
        learned = 0
        for upto, before in pairs:
            learned += max(0, lengths[upto] - lengths[before])
        replies.append(learned)
    return totals, replies, render.fallbacks


def check_counts(**counts: int | None) -> None:
    """Raise `ValueError` for an option (epochs, max_tokens) given but not a whole number >= 1."""
    for name, value in counts.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")


def file_stats(
    examples: Sequence[dict],
    n_lines: int,
    *,
    tokenizer: Any = None,
    max_tokens: int | None = None,
    epochs: int | None = None,
    price_per_million: float | str | None = None,
) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """The report's statistics, and (index, tokens) of the examples longer than the context.

    `tokenizer=None` skips token counting (structure checks only). Tokens past the
    model's context are cut off by OpenAI's training (and refused by `ftlab train`), so they are
    left out of the total; `max_tokens` replaces the context for the `too_long` check only.
    `over_train_max_length` counts the examples within the context that `ftlab train` still
    refuses at its default `--max-length`.
    """
    check_counts(epochs=epochs, max_tokens=max_tokens)
    n = len(examples)
    stats: dict[str, Any] = {
        "n_lines": n_lines,
        "n_examples": n,
        "messages_per_example": summarize([len(e["messages"]) for e in examples]),
        "tokenizer": None,
        "tokens_per_example": None,
        "assistant_tokens_per_example": None,
        "total_tokens": None,
        "context_tokens": None,
        "context_source": None,
        "over_train_max_length": None,
        "train_max_length": TRAIN_MAX_LENGTH,
        "epochs": epochs if epochs is not None else (auto_epochs(n) if n else None),
        "epochs_rule": "given" if epochs is not None else f"auto: OpenAI's rule for {n} examples",
        "billed_tokens": None,
        "price_per_million": None,
        "price_source": None,
        "currency": None,
        "estimated_cost": None,
    }
    too_long: list[tuple[int, int]] = []
    if tokenizer is not None:
        totals, replies, fallbacks = count_tokens(examples, tokenizer)
        model_context = context_length(tokenizer)
        context = max_tokens if max_tokens is not None else model_context
        if context is not None:
            too_long = [(i, t) for i, t in enumerate(totals) if t > context]
        # Only the model's context cuts what is trained (and billed); a given limit only flags.
        trained = [min(t, model_context) if model_context else t for t in totals]
        stats.update(
            tokenizer=tokenizer_label(tokenizer),
            tokens_per_example=summarize(totals),
            assistant_tokens_per_example=summarize(replies),
            total_tokens=sum(trained),
            context_tokens=context,
            context_source=None if context is None else ("given" if max_tokens else "model"),
            over_train_max_length=sum(TRAIN_MAX_LENGTH < t <= (context or t) for t in totals),
        )
        if fallbacks:
            stats["template_fallbacks"] = fallbacks
        if stats["epochs"] is not None:
            stats["billed_tokens"] = stats["total_tokens"] * stats["epochs"]
    if price_per_million is not None:
        price = resolve_price(price_per_million)
        stats.update(
            price_per_million=price.per_million, price_source=price.source, currency=price.currency
        )
        if stats["billed_tokens"] is not None:
            stats["estimated_cost"] = round(stats["billed_tokens"] * price.per_million / 1e6, 6)
    return stats, too_long
