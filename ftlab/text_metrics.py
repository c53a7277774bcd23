"""Scoring free-text answers: for your own task, whose answers are not the support task's JSON.

Two metrics that need no knowledge of the task:

- `exact`: the answer equals the gold answer once spaces and line breaks are tidied (runs of
  them count as one space, none at the ends): right for labels and short fixed answers;
- `word_f1`: how far the answer's words overlap the gold answer's, between 0 and 1 (like the
  F1 score of the SQuAD benchmark: lower case, punctuation ignored; unlike it, "a" and "the"
  count as words): partial credit for a rewrite or a summary that says most of what the gold
  answer says.

Neither knows what a good answer means for your task: write your own metric when they do not
fit (`evaluate(...).predictions` holds every answer next to its gold answer). Words are what
lies between spaces and punctuation, so text written without spaces (Chinese, Japanese) gets
no partial credit: one differing character makes the whole sentence a different word.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class TextScores:
    """The text metrics for a set of answers (averages between 0 and 1)."""

    n: int
    exact: float
    word_f1: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tidy(text: str) -> str:
    """The text with runs of spaces and line breaks as one space, none at the ends."""
    return " ".join(text.split())


def words(text: str) -> list[str]:
    """Lower-case words, punctuation left out."""
    return re.findall(r"\w+", text.lower())


def word_f1(answer: str, gold: str) -> float:
    """The harmonic mean of the share of the answer's words found in the gold answer and the
    share of the gold answer's words found in the answer (each word counted as often as it
    occurs). Without words on one side (an answer of punctuation or emoji only), it is 1.0 for
    the same text and 0.0 otherwise."""
    said, wanted = words(answer), words(gold)
    if not said or not wanted:
        return float(tidy(answer) == tidy(gold))
    common = sum((Counter(said) & Counter(wanted)).values())
    if not common:
        return 0.0
    precision, recall = common / len(said), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def text_score_one(answer: str, gold: str) -> dict[str, Any]:
    """What one answer earns: `exact` (True or False) and `word_f1` (0 to 1)."""
    return {"exact": tidy(answer) == tidy(gold), "word_f1": word_f1(answer, gold)}


def text_score(answers: Sequence[str], golds: Sequence[str]) -> TextScores:
    """The text metrics of answers against their gold answers, in the same order."""
    if len(answers) != len(golds):
        raise ValueError(f"{len(answers)} answers for {len(golds)} gold answers")
    if not golds:
        raise ValueError("nothing to score: the list of examples is empty")
    rows = [text_score_one(a, g) for a, g in zip(answers, golds, strict=True)]
    return TextScores(
        n=len(rows),
        exact=sum(row["exact"] for row in rows) / len(rows),
        word_f1=sum(row["word_f1"] for row in rows) / len(rows),
    )
