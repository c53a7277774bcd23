"""Tokenising chat examples for training: the chat template, label masking, batching.

Only assistant tokens are learned: every other token gets the label -100, which
the loss ignores. An assistant message with `"weight": 0` is shown to the model
but not learned from (the OpenAI fine-tuning convention).

Tokenizing a training file also warns, once for the file, about what would go wrong without
an error: a template that adds no reply prompt, one that leaves out system messages, and
prompts that the tokenizer splits differently alone than inside the conversation.
"""

from __future__ import annotations

import random
import warnings
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ftlab.chat_template import (
    ChatRenderer,
    ChatTemplateError,
    generation_cue,
    is_learned,
    keeps_system,
    learned_positions,
)
from ftlab.generation import MIN_SHARED_TOKENS, shared_prefix_length
from ftlab.validation.stats import TRAIN_MAX_LENGTH, context_length, tokenizer_label
from ftlab.wording import counted, is_are

IGNORE = -100


class TemplateError(ChatTemplateError):
    """The tokenizer's chat template cannot be split into per-message spans."""


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the answers to learn.

    A span runs from the end of the generation prompt before an assistant
    message to the end of that message in the template (so the end-of-turn
    token is learned too: it is what makes the model stop).
    """
    renderer = ChatRenderer(tokenizer)
    text = renderer(messages)
    spans = []
    for index, message in enumerate(messages):
        if not is_learned(message):
            continue
        before, through, located = renderer.locate_reply(messages, index, text)
        if index == 0 and not before:
            warnings.warn(
                "This chat template's reply prompt was not found before a reply that opens a "
                "conversation, so the whole rendered message is learned, with any text the "
                "template adds before it (such as a default system prompt). Fix: start the "
                "conversation with a system or user message.",
                stacklevel=2,
            )
        if not located:
            raise TemplateError(
                "The chat template does not render conversations as one message after another, "
                f"so the answer of message {index} cannot be located for label masking.\n"
                "Fix: use a model whose chat template appends each message (most instruct models)."
            )
        spans.append((len(before), len(through)))
    return text, spans


Spans = list[tuple[int, int]]


def _encode(tokenizer, messages: list[dict]) -> tuple[str, Spans, list[int], Spans]:
    """The rendered conversation, its learned spans, its token ids and their character offsets."""
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, truncation=False
    )
    return text, spans, encoded["input_ids"], encoded["offset_mapping"]


def _labelled(ids: list[int], offsets: Spans, spans: Spans) -> TokenizedExample:
    labels = [IGNORE] * len(ids)
    for position in learned_positions(offsets, spans):
        labels[position] = ids[position]
    return TokenizedExample(ids, labels)


def tokenize_example(tokenizer, messages: list[dict]) -> TokenizedExample:
    """Token ids and labels (-100 outside the learned answers) for one conversation."""
    text, spans, ids, offsets = _encode(tokenizer, messages)
    return _labelled(ids, offsets, spans)


class ReplyStarts:
    """Whether the prompt before each reply tokenizes alone as it does inside the conversation.

    Training learns a reply after the tokens of the whole rendered conversation, but a model
    is asked with the prompt tokenized alone. With a template that does not match the
    tokenizer (SmolLM2's tokenizer, a Llama-3 template), the two differ at the reply's start
    ('\\n', '\\n' inside, '\\n\\n' alone): the model is asked with tokens it was never trained
    on there. Tokenizing every prompt again would add nearly half to the time of tokenizing,
    so only its end is: from the last added token (`<|im_start|>`: split off before anything
    else is tokenized, so nothing before it changes what follows) or else WINDOW tokens back
    (tokenizers split text by local rules). That end is mostly the template's own text, the
    same in every example (tokenized once). A difference there is confirmed on the whole
    prompt, which the few examples that differ can afford.
    """

    WINDOW = 16

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.added = set(getattr(tokenizer, "added_tokens_decoder", None) or ())
        self.ends: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def differs(self, text: str, ids: list[int], offsets: Spans, spans: Spans) -> int | None:
        """The start of the first span whose preceding text, tokenized alone, is not the first
        tokens of `ids` (the whole text's, with `offsets`); None when every span's is."""
        for start, _ in spans:
            before = bisect_left(offsets, start, key=lambda span: span[0])  # tokens before it
            if not before:
                continue
            low = max(0, before - self.WINDOW)
            first = next((i for i in range(before - 1, low - 1, -1) if ids[i] in self.added), low)
            end = text[offsets[first][0] : start]
            if end not in self.ends:
                self.ends[end] = self._ids(end)
            if ids[first : first + len(self.ends[end])] == self.ends[end]:
                continue
            alone = self._ids(text[:start])
            if ids[: len(alone)] != alone:
                return start
        return None


def tokenize_examples(
    tokenizer,
    examples: Sequence[dict],
    max_length: int = TRAIN_MAX_LENGTH,
    what: str = "training",
) -> list[TokenizedExample]:
    """Tokenise every example, dropping those with nothing left to learn (e.g. all `weight: 0`).

    Refuses examples longer than `max_length`, or than the model's context (the checker's
    `context_length`), rather than cutting them: the cut would fall at the end, where the
    answer is, so the model would learn nothing from them, or half an answer. Past its
    context a model has no position to give a token (GPT-2's learned positions end there:
    training crashes) or one it never saw in its own training (rotary positions).
    """
    starts = ReplyStarts(tokenizer) if what == "training" else None  # warned once, in training
    tokenized, differ, spaced = [], [], []
    for number, example in enumerate(examples, 1):
        text, spans, ids, offsets = _encode(tokenizer, example["messages"])
        tokenized.append(_labelled(ids, offsets, spans))
        at = starts.differs(text, ids, offsets, spans) if starts is not None else None
        if at is not None:  # a reply that starts with spaces merges them into the prompt's end
            (spaced if text[at : at + 1].isspace() else differ).append(number)
    context = context_length(tokenizer)
    by_context = context is not None and context <= max_length  # raising max_length won't do
    limit = context if by_context else max_length
    too_long = [(n, len(t)) for n, t in enumerate(tokenized, 1) if len(t) > limit]
    if too_long:
        listed = ", ".join(f"example {n} ({size:,} tokens)" for n, size in too_long[:5])
        more = f" and {len(too_long) - 5} more" if len(too_long) > 5 else ""
        if by_context:
            raise ValueError(
                f"{counted(len(too_long), what + ' example')} {is_are(len(too_long))} longer "
                "than the context of the model "
                f"{tokenizer_label(tokenizer)} ({limit:,} tokens, the most it reads at once): "
                f"{listed}{more} (counting examples from 1 in file order). The model has no "
                "trained position for the tokens past its context.\n"
                "Fix: shorten or split those examples (`ftlab validate FILE --model "
                f"{tokenizer.name_or_path}` lists them by line), or train a model with a "
                "longer context."
            )
        raise ValueError(
            f"{counted(len(too_long), what + ' example')} {is_are(len(too_long))} longer "
            f"than max_length={max_length:,} "
            f"tokens: {listed}{more} (counting examples from 1 in file order). Training would "
            "cut off their ends, answers included.\n"
            f"Fix: shorten or split those examples (`ftlab validate FILE --max-tokens "
            f"{max_length}` lists them by line), or raise the limit: `--max-length` for "
            "`ftlab train`, `max_length=` in TrainConfig (longer examples need more memory)."
        )
    if starts is not None:
        warn_prompt_tokens_differ(tokenizer, differ, len(examples))
        warn_replies_start_with_space(spaced, len(examples))
        warn_if_system_dropped(tokenizer, examples)
    return [t for t in tokenized if t.trained_tokens]


def warn_prompt_tokens_differ(tokenizer, differ: list[int], count: int) -> None:
    """Warn once for a file whose prompts tokenize differently alone (`ReplyStarts`): nothing
    fails, the trained model only answers worse, so without a warning no one would know."""
    if not differ:
        return
    warnings.warn(
        f"{_in_examples(differ, count)} the tokenizer of {tokenizer_label(tokenizer)} splits "
        "the text before a reply into other tokens alone than inside the whole conversation: "
        f"{_ASKED_OTHERWISE} This happens when the chat template was written for another model "
        "family's tokenizer.\n"
        "Fix: use the model's own chat template, or a tokenizer that matches this template.",
        stacklevel=3,
    )


def warn_replies_start_with_space(spaced: list[int], count: int) -> None:
    """Warn once for a file whose replies start with spaces or line breaks that the tokenizer
    joins to the end of the prompt: as in `warn_prompt_tokens_differ`, the model is then trained
    on one token sequence and asked with another, but here the data is the cause."""
    if not spaced:
        return
    warnings.warn(
        f"{_in_examples(spaced, count)} a reply starts with spaces or line breaks that the "
        f"tokenizer joins to the end of the prompt: {_ASKED_OTHERWISE}\nFix: remove the spaces "
        "and line breaks at the start of the replies (reply.strip() when you write the file).",
        stacklevel=3,
    )


# What both prompt-boundary warnings mean for the trained model.
_ASKED_OTHERWISE = (
    "the model is trained on one token sequence at the start of its reply and asked with "
    "another (the prompt is tokenized alone), which can hurt its answers."
)


def _in_examples(found: list[int], count: int) -> str:
    """How many of the file's examples a warning is about, and the first of them."""
    return (
        f"In {len(found)} of the {counted(count, 'training example')} (example "
        f"{found[0]} is one, counting from 1 in file order),"
    )


def warn_if_system_dropped(tokenizer, examples: Sequence[dict]) -> None:
    """Warn (once for a file) when the chat template leaves out system messages and the data
    has some (`keeps_system`): training then runs without the system prompt, unnoticed, and
    the learner never finds out that the model does not read it."""
    have = sum(any(m["role"] == "system" for m in e["messages"]) for e in examples)
    if not have or keeps_system(tokenizer):
        return
    warnings.warn(
        f"The chat template of {tokenizer_label(tokenizer)} leaves out system messages: the "
        f"{counted(have, 'training example')} with one {is_are(have)} rendered without their "
        "system prompt, so "
        "the model never reads it, neither in training nor when it is asked, and learns the "
        "replies as if there were none.\n"
        "Fix: put the system prompt at the start of the first user message, or train a model "
        "whose chat template keeps system messages.",
        stacklevel=3,
    )


def warn_without_reply_prompt(tokenizer) -> None:
    """Warn (once for a file, not per example) when the chat template adds no reply prompt.

    Training learns each reply from the end of the prompt rendered before it with
    `add_generation_prompt=True`. A template that ignores that flag adds nothing there,
    so the role marker that opens every reply (ChatML's `<|im_start|>assistant`) is
    learned as part of the reply, and the trained model writes it before its answers.
    """
    if generation_cue(tokenizer):
        return
    warnings.warn(
        f"The chat template of {tokenizer_label(tokenizer)} adds no reply prompt when asked "
        "for one (it ignores add_generation_prompt), so training cannot tell where a reply "
        "starts: the text the template puts before each reply (such as a role marker) is "
        "learned as part of it, and the trained model will write that text at the start of "
        "its answers (so an answer compared with the expected one scores 0).\n"
        "Fix: train a model whose chat template adds a reply prompt when "
        "add_generation_prompt is true (most instruct models' do), or set such a template "
        "(tokenizer.chat_template) in the model folder.",
        stacklevel=2,
    )


@dataclass
class Batch:
    """A right-padded batch. `prefix` holds the tokens every row starts with (maybe none).

    When the layers below `first_layer` are frozen and their outputs were stored,
    the batch carries those outputs (`prefix_states`, `row_states`) to start from.
    """

    prefix: torch.Tensor  # (P,) shared by all rows, none of them labelled
    input_ids: torch.Tensor  # (B, T) the rest of each row, right-padded
    labels: torch.Tensor  # (B, T) -100 on padding and unlearned tokens
    prefix_states: torch.Tensor | None = None  # (P, H) entering layer first_layer
    row_states: torch.Tensor | None = None  # (B, T, H) entering layer first_layer
    first_layer: int = 0

    def to(self, device: torch.device) -> Batch:
        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device)

        return Batch(
            self.prefix.to(device),
            self.input_ids.to(device),
            self.labels.to(device),
            move(self.prefix_states),
            move(self.row_states),
            self.first_layer,
        )


def unlabelled_prefix_length(
    rows: Sequence[TokenizedExample], minimum: int = MIN_SHARED_TOKENS
) -> int:
    """How many leading tokens all rows share before any learned token (0 if fewer than minimum).

    It stops one token short of the first label, because the hidden state
    that predicts a learned token must be computed in the per-row part.
    """
    first_label = min(
        next(i for i, label in enumerate(row.labels) if label != IGNORE) for row in rows
    )
    length = shared_prefix_length([r.input_ids for r in rows], limit=first_label - 1)
    return length if length >= minimum else 0


def collate(
    rows: Sequence[TokenizedExample],
    pad_id: int,
    share_prefix: bool = True,
    states: Sequence[torch.Tensor] | None = None,
    first_layer: int = 0,
) -> Batch:
    """Pad rows on the right (causal attention never looks at later padding, so no mask).

    `states` (one (length, H) tensor per row) are the rows' hidden states entering
    layer `first_layer`, to be padded and split the same way as the tokens.
    """
    prefix_len = unlabelled_prefix_length(rows) if share_prefix and len(rows) > 1 else 0
    width = max(len(r) for r in rows) - prefix_len
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, row in enumerate(rows):
        rest = len(row) - prefix_len
        ids[i, :rest] = torch.tensor(row.input_ids[prefix_len:])
        labels[i, :rest] = torch.tensor(row.labels[prefix_len:])
    prefix = torch.tensor(rows[0].input_ids[:prefix_len], dtype=torch.long)
    if states is None:
        return Batch(prefix, ids, labels)
    row_states = states[0].new_zeros((len(rows), width, states[0].shape[-1]))
    for i, state in enumerate(states):
        row_states[i, : len(state) - prefix_len] = state[prefix_len:]
    return Batch(prefix, ids, labels, states[0][:prefix_len], row_states, first_layer)


def epoch_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Batches of similar-length examples, in a random order that depends only on (seed, epoch).

    Sorting by length (with random tie-breaking) keeps padding near zero;
    shuffling the batches keeps the order random.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    jitter = [rng.random() for _ in lengths]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i] + 4 * jitter[i])
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def steps_per_epoch(count: int, batch_size: int) -> int:
    return -(-count // batch_size)


def iter_batches(
    examples: Sequence[TokenizedExample], batch_size: int, pad_id: int
) -> Iterator[Batch]:
    """Length-sorted batches in a fixed order (for evaluation)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    for start in range(0, len(order), batch_size):
        yield collate([examples[i] for i in order[start : start + batch_size]], pad_id)
