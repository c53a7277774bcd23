"""Lab 1's rule that repaired files keep every savable example and get right hand labels."""

from __future__ import annotations

import json
from types import SimpleNamespace

from ftlab.labs.data_lab import broken_files_source, kept_and_labelled_problems
from ftlab.paths import data_dir
from ftlab.support import make_example

BROKEN = data_dir() / "broken"
SOURCE = broken_files_source(BROKEN)
NAME = "missing_assistant.jsonl"  # examples 0-12 of make_broken.MESSAGES; example 2 has no answer


def repaired(*messages) -> dict:
    return {NAME: SimpleNamespace(examples=[make_example(*m) for m in messages])}


def test_a_careful_repair_passes_and_the_counts_match_the_lab_solution():
    assert kept_and_labelled_problems(repaired(*SOURCE.MESSAGES[:13]), BROKEN) == []
    savable = {name: broken.savable for name, broken in SOURCE.build().items()}
    assert sum(savable.values()) == 84  # what the lab's solution saves (its nbval run checks it)
    assert savable["bad_json.jsonl"] == 13, "a cut-off line is lost, two on one line are two"


def test_a_dropped_or_mislabelled_hand_label_is_named_without_giving_the_label_away():
    unlabelled = SOURCE.MESSAGES[2]
    dropped = [m for m in SOURCE.MESSAGES[:13] if m != unlabelled]
    [count, missing] = kept_and_labelled_problems(repaired(*dropped), BROKEN)
    assert "12 examples repaired, but 13 can be saved" in count
    assert "arrived without an answer and is missing from your copy" in missing
    text, intent, order_id, sentiment = unlabelled
    wrong = (text, "other" if intent != "other" else "complaint", order_id, "positive")
    fixed = repaired(*SOURCE.MESSAGES[:2], wrong, *SOURCE.MESSAGES[3:13])
    [problem] = kept_and_labelled_problems(fixed, BROKEN)
    assert "has the wrong intent and sentiment" in problem
    assert intent not in problem and json.dumps(intent) not in problem
