"""Token statistics and the training-cost estimate of a data file.

Tokens are counted the way training sees them: each example rendered with the
base model's own chat template, then tokenized. The assistant tokens of an
example are the ones training learns (replies with weight 0 excluded): for each
reply, the tokens its rendering adds after the prompt that precedes it.

Counting also finds what `ftlab train` with that model would refuse: an example the
template cannot render (counted as plain text instead), and a reply that cannot be
located in the conversation's rendering (`TokenCounts`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ftlab.chat_template import (
    ChatRenderer,
    is_learned,
    keeps_system,
    learned_positions,
    render,
    template_message,
    tokenizer_limit,
)
from ftlab.validation.prices import resolve_price

# OpenAI's "auto" epochs rule (also used by the course's local server).
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MAX_AUTO_EPOCHS = 25
MIN_AUTO_EPOCHS = 1
TOKENIZE_BATCH = 1_000  # texts per tokenizer call: fast, and memory stays flat
# `ftlab train` refuses longer examples unless given --max-length (longer rows need more memory).
TRAIN_MAX_LENGTH = 2048
TEMPLATE_SAID_LIMIT = 300  # characters of a template's error message kept for the report


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
    """The model's name as the learner knows it: the built-in model's, a hub id (also when it
    was loaded offline from the hub cache's `models--owner--name/snapshots/...`), or the last
    part of a folder's path."""
    from ftlab.models import DEFAULT_MODEL, builtin_model_dir

    path = str(getattr(tokenizer, "name_or_path", "") or "")
    if path and path.rstrip("/") == str(builtin_model_dir()):
        return DEFAULT_MODEL
    if cached := re.search(r"/models--([^/]+?)--([^/]+)/snapshots/[^/]+/?$", path):
        return f"{cached[1]}/{cached[2]}"
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
    """The model's context in tokens: the smaller of the tokenizer's limit and the config's
    positions (a tokenizer may claim more than the model has positions for), else None."""
    limits = [
        tokenizer_limit(tokenizer),
        _config_context(str(getattr(tokenizer, "name_or_path", "") or "")),
    ]
    return min((n for n in limits if n is not None), default=None)


def template_said(error: BaseException) -> str:
    """A chat template's error in one short line, in the template's own words (the error that
    `ChatTemplateError` wraps, not its advice: the report gives its own)."""
    cause = error.__cause__ if error.__cause__ is not None else error
    try:
        text = " ".join(str(cause).split())
    except Exception:  # noqa: BLE001 - an error that cannot even say what it is
        text = ""
    text = text or type(cause).__name__
    return text if len(text) <= TEMPLATE_SAID_LIMIT else text[:TEMPLATE_SAID_LIMIT] + "..."


class _Renderer(ChatRenderer):
    """The chat template, falling back to plain text when it rejects a conversation (the
    checker counts any file; training refuses what its template cannot render). What the
    template said is kept in `errors`, for the example being rendered (`example`)."""

    def __init__(self, tokenizer: Any):
        super().__init__(tokenizer)
        self.example: int | None = None
        self.errors: dict[int, str] = {}  # example number -> the template's first error
        self.pieces: dict[tuple[str, str, str], str] = {}  # see `message_ends`

    def _failed(self, reason: str) -> None:
        if self.example is not None:
            self.errors.setdefault(self.example, reason)

    def __call__(self, messages: list[dict], generation_prompt: bool = False) -> str:
        try:
            text = super().__call__(messages, generation_prompt)
        except Exception as error:  # noqa: BLE001 - a model's template may reject any conversation
            self._failed(template_said(error))
        else:
            if isinstance(text, str):
                return text
            self._failed(f"the template gave {type(text).__name__}, not text")
        return _plain_text(messages, generation_prompt)

    def opening(self, rendered_reply: str) -> str:
        """What the template puts before a reply that opens a conversation ("" if unknown)."""
        try:
            return super().opening(rendered_reply)
        except Exception as error:  # noqa: BLE001 - as above: count the whole rendering as the reply
            self._failed(template_said(error))  # training needs it too, and would stop here
            return ""

    def appended_cue(self) -> str | None:
        """The generation prompt when the template simply appends it ("" when it has none),
        else None."""
        if not hasattr(self, "_cue"):
            try:
                probe = [{"role": "user", "content": "x"}]
                without, with_cue = (
                    render(self.tokenizer, probe),
                    render(self.tokenizer, probe, True),
                )
                self._cue = with_cue[len(without) :] if with_cue.startswith(without) else None
            except Exception:  # noqa: BLE001 - no usable template: prefixes are rendered instead
                self._cue = None
        return self._cue

    def message_ends(self, messages: list[dict], full: str) -> list[int] | None:
        """len(render(messages[: k + 1])) for every k, from one rendering per message.

        Rendering every prefix of a conversation is quadratic in its length; a template that
        renders a conversation as its messages one after another renders message k the same
        after any first message of the same role, so each piece is rendered after a short
        anchor (and cached: system prompts repeat). None when the pieces do not add up to
        `full`, the template's own rendering of the whole conversation.
        """
        ends, at = [], 0
        try:
            for index, message in enumerate(messages):
                piece = self._piece(messages[0]["role"] if index else None, message)
                if not full.startswith(piece, at):
                    return None
                at += len(piece)
                ends.append(at)
        except Exception:  # noqa: BLE001 - a template that rejects the anchor or a piece
            return None
        return ends if at == len(full) else None

    def _piece(self, anchor_role: str | None, message: dict) -> str:
        """What `message` adds to a conversation of one empty `anchor_role` message (None: the
        rendering of `message` alone, as the conversation's first)."""
        shown = template_message(message)
        key = (anchor_role or "", shown["role"], shown["content"])
        if key not in self.pieces:
            anchor = [{"role": anchor_role, "content": ""}] if anchor_role else []
            base = render(self.tokenizer, anchor) if anchor else ""
            text = render(self.tokenizer, [*anchor, shown])
            if not (isinstance(text, str) and text.startswith(base)):
                raise ValueError("the template does not append messages")
            self.pieces[key] = text[len(base) :]
        return self.pieces[key]


def _plain_text(messages: list[dict], generation_prompt: bool) -> str:
    """ "role: text" lines, for a conversation the template rejects."""
    lines = "".join(f"{m['role']}: {_message_text(m)}\n" for m in messages)
    return lines + ("assistant: " if generation_prompt else "")


def _message_text(message: dict) -> str:
    """The text a template reads for a message; a tool call nested too deeply to write as JSON
    is left out (the checker counts what it can, and never crashes)."""
    try:
        return template_message(message)["content"]
    except (RecursionError, ValueError, TypeError):
        content = message.get("content")
        return content if isinstance(content, str) else ""


def _reply_spans(
    render: _Renderer, messages: list[dict], full: str
) -> list[tuple[int, int]] | None:
    """The character spans of `full` (the one rendering of the example) that training learns:
    each learned reply from after the generation prompt before it to its end, found from one
    rendering per message. None when the template's rendering cannot be cut this way
    (`reply_bounds` is used instead)."""
    cue = render.appended_cue()
    ends = render.message_ends(messages, full) if cue is not None else None
    if ends is None:
        return None
    spans = []
    for index, message in enumerate(messages):
        if not is_learned(message):
            continue
        if index == 0:
            start = len(render.opening(full[: ends[0]]))  # skip the template's preamble
        elif full.startswith(cue, ends[index - 1]):
            start = ends[index - 1] + len(cue)
        else:
            return None
        spans.append((start, ends[index]))
    return spans


Spans = list[tuple[int, int]]  # character ranges of a rendering


def _span_counts(tokenizer: Any, items: list[tuple[str, Spans]]) -> list[tuple[int, int]]:
    """(tokens, learned tokens) of each (rendering, learned spans), in batches. Learned tokens
    are counted from the one tokenization's offsets, exactly as training labels them; a
    tokenizer without offsets (slow ones) counts each span's own text instead."""
    counts = []
    for first in range(0, len(items), TOKENIZE_BATCH):
        batch = items[first : first + TOKENIZE_BATCH]
        texts = [text for text, _ in batch]
        rows = _batch_offsets(tokenizer, texts)
        if rows is not None:
            pairs = zip(rows, batch, strict=True)
            counts += [
                (len(offsets), sum(1 for _ in learned_positions(offsets, spans)))
                for offsets, (_, spans) in pairs
            ]
            continue
        totals = _batch_lengths(tokenizer, texts)
        pieces = [text[a:b] for text, spans in batch for a, b in spans]
        lengths = iter(_token_lengths(tokenizer, pieces))
        counts += [
            (total, sum(next(lengths) for _ in spans))
            for total, (_, spans) in zip(totals, batch, strict=True)
        ]
    return counts


def _batch_offsets(tokenizer: Any, texts: list[str]) -> list[list[tuple[int, int]]] | None:
    """Each text's token offsets, or None from a tokenizer that has none (slow ones). A batch
    with a character the tokenizer cannot encode (a lone surrogate) is redone text by text,
    that character replaced by one of the same length, so one bad example does not change
    how the other 999 are counted."""

    def offsets(batch: list[str]) -> list[list[tuple[int, int]]]:
        return tokenizer(
            batch,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
        )["offset_mapping"]

    try:
        try:
            rows = offsets(texts)
        except NotImplementedError:  # a slow tokenizer
            return None
        except Exception:  # noqa: BLE001 - unencodable characters
            rows = [offsets([_encodable(text)])[0] for text in texts]
    except Exception:  # noqa: BLE001 - the checker counts another way rather than crash
        return None
    return rows if len(rows) == len(texts) else None


def _encodable(text: str) -> str:
    """`text` with each character UTF-8 cannot encode (a lone surrogate) replaced by '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


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
        return [len(tokenizer(_encodable(t), add_special_tokens=False)["input_ids"]) for t in texts]


class _Texts:
    """Texts to tokenize, each once (shared prompts are common), counted in batches."""

    def __init__(self) -> None:
        self.slots: dict[str, int] = {}

    def add(self, text: str) -> int:
        return self.slots.setdefault(text, len(self.slots))

    def lengths(self, tokenizer: Any) -> list[int]:
        return _token_lengths(tokenizer, list(self.slots))


@dataclass
class TokenCounts:
    """Per example, its tokens and learned tokens; and what `ftlab train` with this tokenizer's
    chat template would refuse.

    `template_errors`: example number -> what the template said when it could not render the
    example (or the conversation up to one of its replies); its tokens were counted as plain
    text. `unlocated`: example number -> the learned replies (message indexes) that cannot be
    located in the example's rendering (`ChatRenderer.locate_reply`), for examples the template
    renders; examples over the model's context are not looked at (they are `too_long`).
    `has_template`: False when the tokenizer has no chat template at all. `drops_system`: True
    when the template renders a conversation without its system message's text
    (`keeps_system`), so the model would never read the file's system prompts.
    """

    totals: list[int]
    replies: list[int]
    template_errors: dict[int, str] = field(default_factory=dict)
    unlocated: dict[int, list[int]] = field(default_factory=dict)
    has_template: bool = True
    drops_system: bool = False


def count_tokens(examples: Sequence[dict], tokenizer: Any) -> tuple[list[int], list[int], int]:
    """Per example: templated tokens, learned assistant tokens; and how many examples fell back
    to plain text because the template could not render them (see `measure_tokens`)."""
    counts = measure_tokens(examples, tokenizer)
    return counts.totals, counts.replies, len(counts.template_errors)


def measure_tokens(examples: Sequence[dict], tokenizer: Any) -> TokenCounts:
    """Per example: templated tokens, learned assistant tokens, and the template's troubles.

    Each example is rendered once and tokenized once; its learned tokens are those that start
    in its replies' spans (`_reply_spans`, `_span_counts`): linear in the example's length. A
    template that does not render messages one after another needs the old way,
    `reply_bounds`, which renders and tokenizes every prefix (quadratic), so there it is used
    only for examples within the model's context; a longer one (cut off by training anyway)
    counts its replies' own text.
    """
    renderer = _Renderer(tokenizer)
    items, rest = [], []
    for number, example in enumerate(examples):
        renderer.example = number
        messages = example["messages"]
        full = renderer(messages)
        spans = _reply_spans(renderer, messages, full)
        if spans is None:
            rest.append(number)
        items.append((full, spans or []))
    renderer.example = None
    counted = _span_counts(tokenizer, items)
    totals = [total for total, _ in counted]
    replies = [learned for _, learned in counted]
    fulls = [full for full, _ in items]
    unlocated = {}
    for number, learned, indexes in _count_by_prefix(renderer, examples, rest, totals, fulls):
        replies[number] = learned
        if indexes and number not in renderer.errors:  # a plain-text fallback explains it
            unlocated[number] = indexes
    return TokenCounts(
        totals,
        replies,
        dict(sorted(renderer.errors.items())),
        unlocated,
        has_template=bool(getattr(tokenizer, "chat_template", None)),
        drops_system=not keeps_system(tokenizer),
    )


def _count_by_prefix(
    render: _Renderer,
    examples: Sequence[dict],
    numbers: list[int],
    totals: list[int],
    fulls: list[str],
) -> list[tuple[int, int, list[int]]]:
    """(example number, learned tokens, the replies training cannot locate) by rendering the
    prompt before each reply and the conversation through it (`fulls`: each example's whole
    rendering); past the model's context, by the replies' own text (not located)."""
    context = context_length(render.tokenizer)
    texts = _Texts()
    plans = []
    for number in numbers:
        render.example = number
        messages = examples[number]["messages"]
        pairs, unlocated = [], []
        for index, message in enumerate(messages):
            if not is_learned(message):
                continue
            if context is not None and totals[number] > context:
                pairs.append((texts.add(_message_text(message)), None))
            else:
                before, through, located = render.locate_reply(messages, index, fulls[number])
                if not located:
                    unlocated.append(index)
                pairs.append((texts.add(through), texts.add(before)))
        plans.append((number, pairs, unlocated))
    render.example = None
    lengths = texts.lengths(render.tokenizer)
    return [
        (
            number,
            sum(max(0, lengths[a] - (lengths[b] if b is not None else 0)) for a, b in pairs),
            unlocated,
        )
        for number, pairs, unlocated in plans
    ]


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
) -> tuple[dict[str, Any], list[tuple[int, int]], list[tuple[int, int]], TokenCounts | None]:
    """The report's statistics; (index, tokens) of the examples longer than the context;
    (index, tokens) of those within it but longer than `ftlab train` takes (TRAIN_MAX_LENGTH);
    and the token counts, with what the chat template could not do (None without a tokenizer).

    `tokenizer=None` skips token counting (structure checks only). Tokens past the
    model's context are cut off by OpenAI's training (and refused by `ftlab train`), so they are
    left out of the total; `max_tokens` replaces the context for the `too_long` check only.
    `over_train_max_length` counts the examples within the context that `ftlab train` still
    refuses at its default `--max-length`. `template_fallbacks` (only when there are any) counts
    the examples the chat template could not render, whose tokens were counted as plain text.
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
        "epochs_rule": "given"
        if epochs is not None
        else (f"auto: OpenAI's rule for {n} examples" if n else None),
        "billed_tokens": None,
        "price_per_million": None,
        "price_source": None,
        "currency": None,
        "estimated_cost": None,
    }
    too_long: list[tuple[int, int]] = []
    over_train: list[tuple[int, int]] = []
    counts = None
    if tokenizer is not None:
        counts = measure_tokens(examples, tokenizer)
        totals, replies = counts.totals, counts.replies
        model_context = context_length(tokenizer)
        context = max_tokens if max_tokens is not None else model_context
        if context is not None:
            too_long = [(i, t) for i, t in enumerate(totals) if t > context]
        # Within both the context checked and the model's own (the warning says "within the
        # model's context"); longer ones get `too_long`, or were let through by a given limit.
        bound = min((c for c in (context, model_context) if c is not None), default=None)
        over_train = [(i, t) for i, t in enumerate(totals) if TRAIN_MAX_LENGTH < t <= (bound or t)]
        # Only the model's context cuts what is trained (and billed); a given limit only flags.
        trained = [min(t, model_context) if model_context else t for t in totals]
        stats.update(
            tokenizer=tokenizer_label(tokenizer),
            tokens_per_example=summarize(totals),
            assistant_tokens_per_example=summarize(replies),
            total_tokens=sum(trained),
            context_tokens=context,
            context_source=None if context is None else ("given" if max_tokens else "model"),
            over_train_max_length=len(over_train),
        )
        if counts.template_errors:
            stats["template_fallbacks"] = len(counts.template_errors)
        if stats["epochs"] is not None:
            stats["billed_tokens"] = stats["total_tokens"] * stats["epochs"]
    if price_per_million is not None:
        price = resolve_price(price_per_million)
        stats.update(
            price_per_million=price.per_million, price_source=price.source, currency=price.currency
        )
        if stats["billed_tokens"] is not None:
            stats["estimated_cost"] = round(stats["billed_tokens"] * price.per_million / 1e6, 6)
    return stats, too_long, over_train, counts
