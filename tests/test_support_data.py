"""The shipped support-task splits: current, balanced, and well-formed."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

from ftlab.paths import support_split
from ftlab.support import INTENTS, SENTIMENTS, SYSTEM_PROMPT, gold_answer, load_examples


def test_splits_are_built_from_the_current_sources(repo):
    result = subprocess.run(
        [sys.executable, str(repo / "data/support/build.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_sizes_and_every_label_represented():
    sizes = {name: len(load_examples(support_split(name))) for name in ("train", "valid", "test")}
    assert sizes["train"] >= 400 and sizes["valid"] >= 60 and sizes["test"] >= 80
    for name in ("train", "test"):
        labels = Counter(
            (g["intent"], g["sentiment"])
            for g in map(gold_answer, load_examples(support_split(name)))
        )
        for intent in INTENTS:
            for sentiment in SENTIMENTS:
                assert labels[(intent, sentiment)] >= 1, (name, intent, sentiment)
            if name == "train":
                assert sum(labels[(intent, s)] for s in SENTIMENTS) >= 50


def test_every_example_uses_the_exact_system_prompt_and_answer_shape():
    for name in ("train", "valid", "test"):
        for example in load_examples(support_split(name)):
            roles = [m["role"] for m in example["messages"]]
            assert roles == ["system", "user", "assistant"]
            assert example["messages"][0]["content"] == SYSTEM_PROMPT
            assert list(gold_answer(example)) == ["intent", "order_id", "sentiment"]


def test_training_messages_spell_order_numbers_several_ways_with_canonical_labels():
    spellings = Counter()
    for example in load_examples(support_split("train")):
        order_id = gold_answer(example)["order_id"]
        if order_id is None:
            continue
        digits = order_id[3:]
        text = example["messages"][1]["content"]
        match = re.search(rf"\b(ac)([- ]?){digits}\b", text, re.IGNORECASE)
        assert match, (order_id, text)
        spellings[match.group(2)] += 1
    # Mostly hyphenated, but the model also sees "AC 12345" and "AC12345".
    assert spellings["-"] > spellings[" "] >= 20 and spellings[""] >= 10


def test_near_copies_of_held_out_messages_are_caught(repo):
    sys.path.insert(0, str(repo / "data/support"))
    try:
        import build
    finally:
        sys.path.pop(0)

    def record(text: str) -> dict:
        return {"text": text, "intent": "other", "order_id": None, "sentiment": "neutral"}

    held_out = [
        record("Are you hiring for the warehouse in Reno? I have 4 years forklift experience.")
    ]
    train = [
        record("Are you hiring for the warehouse in Reno? I have 5 years of forklift experience."),
        record("Do you have any jobs at the Denver store?"),
    ]
    copies = build.near_copies(train, held_out)
    assert [(a, b) for a, b, _ in copies] == [(train[0]["text"], held_out[0]["text"])]
    assert copies[0][2] >= build.NEAR_COPY
