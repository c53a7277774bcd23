"""The course's running example: Acme Outfitters support triage.

One definition of the task and its metrics, used by every notebook, the
command line, the benchmark and the server's evaluations.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ftlab.jsonl import json_error_place, repeated_keys

# Character for character: evaluation sets written elsewhere use it too.
SYSTEM_PROMPT = (
    "You are the support triage assistant for Acme Outfitters. Read the customer's message "
    'and answer with only a JSON object with the keys "intent", "order_id" and "sentiment".'
)
INTENTS = (
    "order_status",
    "return_request",
    "refund_status",
    "cancel_order",
    "change_address",
    "product_question",
    "complaint",
    "other",
)
SENTIMENTS = ("positive", "neutral", "negative")
KEYS = ("intent", "order_id", "sentiment")
# Use with fullmatch: `$` would allow a final line break, and `\d` Arabic-Indic digits too.
ORDER_ID = re.compile(r"AC-[0-9]{5}")
# Messages at least this alike (difflib's ratio, case and spacing ignored) count as copies:
# writers working apart still converge on sentences like "Happy holidays to the whole Acme team"
# or "Are you hiring for the warehouse in Reno?". data/support/build.py refuses such pairs across
# splits, and the labs check learners' new messages with the same rule.
NEAR_COPY = 0.8
METRIC_NAMES = (
    "json_valid",
    "schema_valid",
    "intent_acc",
    "order_id_acc",
    "sentiment_acc",
    "exact",
)


def make_example(text: str, intent: str, order_id: str | None, sentiment: str) -> dict:
    """One chat-format training example for a labelled customer message."""
    answer = json.dumps({"intent": intent, "order_id": order_id, "sentiment": sentiment})
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": text},
            {"role": "assistant", "content": answer},
        ]
    }


def prompt_messages(example: dict) -> list[dict]:
    """What the model sees at test time: every message before the last assistant message
    (the gold answer), earlier assistant turns of a conversation included; [system, user]
    for the support task's examples. A message's training-only `weight` is left out.
    """
    messages = example["messages"]
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    before = messages[: answers[-1]] if answers else messages
    return [{k: v for k, v in m.items() if k != "weight"} if "weight" in m else m for m in before]


def last_reply(example: dict) -> dict:
    """An example's last assistant message: its gold answer, as written."""
    return [m for m in example["messages"] if m.get("role") == "assistant"][-1]


def gold_answer(example: dict) -> dict:
    """The labelled answer of an example (its last assistant message, parsed)."""
    return json.loads(last_reply(example)["content"])


def near_copies(
    texts: Iterable[str], others: Iterable[str], key: Callable[[str], str] | None = None
) -> list[tuple[str, str, float]]:
    """(text, other, similarity) for every pair of a text and an other at least NEAR_COPY alike.

    Messages are compared in their `key` form, by default `ftlab.validation.normalise`
    (case and spacing ignored); the similarity is difflib's ratio of those forms.
    """
    if key is None:
        from ftlab.validation import normalise as key  # imported here: it loads numpy
    found = []
    keyed = [(key(text), text) for text in others]
    for text in texts:
        matcher = difflib.SequenceMatcher(None, b=key(text), autojunk=False)
        for other_key, other in keyed:
            matcher.set_seq1(other_key)
            if (
                matcher.real_quick_ratio() >= NEAR_COPY
                and matcher.quick_ratio() >= NEAR_COPY
                and matcher.ratio() >= NEAR_COPY
            ):
                found.append((text, other, matcher.ratio()))
    return found


def load_examples(path: str | Path, limit: int | None = None) -> list[dict]:
    """Read a chat-format JSONL file (blank lines skipped), or its first `limit` examples.
    Untrusted files: ftlab.validation.

    A line that is not JSON, or bytes that are not UTF-8, raise a ValueError that
    names the file and the line (lines after the first `limit` examples are not parsed).
    """
    return [example for _, example in numbered_examples(path, limit)]


def numbered_examples(path: str | Path, limit: int | None = None) -> list[tuple[int, dict]]:
    """`load_examples`, each example with its line number in the file (for messages)."""
    # The checker's reading and line rules, so that both read a file alike (imported here:
    # the checker pulls in numpy and more, which most users of this module never need).
    from ftlab.validation.checker import read_bytes, split_lines

    if limit is not None and limit < 0:
        raise ValueError(f"limit must be 0 or more, got {limit}.")
    fix = f"Fix: `ftlab validate {path}` lists every problem in the file."
    lines, _ = split_lines(read_bytes(path))  # an unreadable file: an OSError that says why
    examples = []
    for number, raw in enumerate(lines, 1):
        if limit is not None and len(examples) >= limit:
            break
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{path} line {number} is not UTF-8 text ({error.reason}).\n{fix}"
            ) from None
        if not line.strip():
            continue
        try:
            examples.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} line {number} is not valid JSON ({json_error_place(error)}).\n{fix}"
            ) from None
    return examples


# A reasoning model (Qwen3, DeepSeek-R1) writes its thinking first, in <think> tags, even
# when empty; its answer is what follows, as OpenAI-compatible servers return it. Where the
# generation prompt opens the tag itself (R1's), the answer holds only the closing one.
THINKING = re.compile(r"\A.*?</think>", re.DOTALL)


class RepeatedKeys(dict):
    """A JSON object that names a key twice (`repeated`): `json.loads` keeps the last value,
    so an answer saying `"intent": "other", "intent": "complaint"` would hedge and score."""

    def __init__(self, pairs: list[tuple[str, Any]], repeated: set[str]) -> None:
        super().__init__(pairs)
        self.repeated = repeated


def _keep_repeats_visible(pairs: list[tuple[str, Any]]) -> dict:
    value = dict(pairs)
    if len(value) == len(pairs):  # every object of every answer: the common case first
        return value
    return RepeatedKeys(pairs, set(repeated_keys(pairs)))


def parse_answer(text: str) -> dict | None:
    """The model's answer as a dict if it is exactly one JSON object (after the thinking of a
    reasoning model, if any), else None. An object with a repeated key comes back as a
    `RepeatedKeys`, which `is_schema_valid` refuses."""
    try:
        value = json.loads(THINKING.sub("", text).strip(), object_pairs_hook=_keep_repeats_visible)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def is_schema_valid(answer: dict | None) -> bool:
    """Exactly the three keys, each once, each with an allowed value."""
    if answer is None or isinstance(answer, RepeatedKeys) or set(answer) != set(KEYS):
        return False
    order_id = answer["order_id"]
    return (
        answer["intent"] in INTENTS
        and answer["sentiment"] in SENTIMENTS
        and (order_id is None or (isinstance(order_id, str) and bool(ORDER_ID.fullmatch(order_id))))
    )


@dataclass
class Scores:
    """The support-task metrics for a set of predictions (shares between 0 and 1)."""

    n: int
    json_valid: float
    schema_valid: float
    intent_acc: float
    order_id_acc: float
    sentiment_acc: float
    exact: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_one(prediction: str, gold: dict) -> dict[str, bool]:
    """Which metrics one answer earns (unparseable answers earn none, and a key given twice
    earns nothing for its field)."""
    answer = parse_answer(prediction)
    got = answer or {}
    repeated = answer.repeated if isinstance(answer, RepeatedKeys) else set()
    hits = {key: key in got and key not in repeated and got[key] == gold[key] for key in KEYS}
    return {
        "json_valid": answer is not None,
        "schema_valid": is_schema_valid(answer),
        "intent_acc": hits["intent"],
        "order_id_acc": hits["order_id"],
        "sentiment_acc": hits["sentiment"],
        "exact": all(hits.values()),
    }


def score(predictions: Sequence[str], golds: Iterable[dict]) -> Scores:
    """Score raw model answers against gold answers with the course's one metric definition."""
    golds = list(golds)
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold answers")
    if not golds:
        raise ValueError("nothing to score: the list of examples is empty")
    rows = [score_one(p, g) for p, g in zip(predictions, golds, strict=True)]
    shares = {name: sum(row[name] for row in rows) / len(rows) for name in METRIC_NAMES}
    return Scores(n=len(rows), **shares)
