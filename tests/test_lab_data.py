"""Lab 1's rules: repaired files keep every savable example, get right hand labels and hold no
copies; new examples vary the spelling and the place of the order number."""

from __future__ import annotations

import json
from types import SimpleNamespace

from ftlab.labs.data_lab import (
    answer_problems,
    broken_files_source,
    copied_examples_problems,
    kept_and_labelled_problems,
    new_example_problems,
    repaired_content_problems,
)
from ftlab.paths import data_dir, support_split
from ftlab.support import load_examples, make_example
from ftlab.validation import validate_bytes

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


def test_new_examples_cannot_stand_in_for_lines_the_repair_dropped():
    """A repair that drops four savable lines, padded with four new examples, once passed."""
    kept = SOURCE.MESSAGES[:9]  # 4 of the 13 savable examples dropped
    padding = [make_example(f"Do you sell tent pegs in packs of {n}?", "product_question", None,
                            "neutral") for n in (6, 8, 10, 12)]  # fmt: skip
    fixed = {NAME: SimpleNamespace(examples=[make_example(*m) for m in kept] + padding)}
    [count, *_] = kept_and_labelled_problems(fixed, BROKEN, {NAME: padding})
    assert "9 examples repaired, but 13 can be saved" in count
    # Not a dict: no crash here, and copied_examples_problems says what is wrong with it.
    assert kept_and_labelled_problems(fixed, BROKEN, "not a dict") == []


def test_a_hand_written_message_that_is_not_an_object_is_named_not_a_traceback():
    broken = {"messages": ["hi", {"role": "assistant", "content": "{}"}]}
    assert answer_problems(broken) == [
        'a message is not {"role": ..., "content": ...}: make the example with '
        "make_example(text, intent, order_id, sentiment)"
    ]


def checked(examples: list[dict]):
    data = "".join(json.dumps(e) + "\n" for e in examples).encode()
    return validate_bytes(data, name=NAME, count_tokens=False)


def test_repeats_and_copied_extra_examples_are_refused():
    own = [make_example(*m) for m in SOURCE.MESSAGES[:13]]
    clean = [
        make_example(
            "Bought a stove from you, does it work above 3000 m?",
            "product_question",
            None,
            "neutral",
        )
    ]
    held_out = [support_split("valid"), support_split("test")]
    assert copied_examples_problems({NAME: checked(own + clean)}, {NAME: clean}, held_out) == []

    [repeat] = copied_examples_problems({NAME: checked(own + own[:1])}, {}, held_out)
    assert "line 14 repeats line 1" in repeat

    test_example = load_examples(support_split("test"))[5]
    variant = make_example(*SOURCE.MESSAGES[0])
    variant["messages"][1]["content"] += "!"
    extras = [test_example, variant]
    problems = copied_examples_problems({NAME: checked(own + extras)}, {NAME: extras}, held_out)
    assert len(problems) == 2
    assert "test.jsonl line 6" in problems[0] and "leaks it into the score" in problems[0]
    assert "in the same file" in problems[1]


def ten_new(texts: list[str]) -> list[dict]:
    intents = ["order_status", "cancel_order", "return_request"]
    return [
        make_example(text, intents[i % 3], "AC-" + str(30000 + i), ["neutral", "negative"][i % 2])
        for i, text in enumerate(texts)
    ]


OPENINGS = [
    "{} still has not shipped, what is going on?",
    "{} - can I cancel it please",
    "{}: the boots are too small, how do I send them back?",
    "{} was due on Monday and nothing came.",
    "{} please stop it, I ordered the wrong size",
    "{} arrived with a broken zip, I want to return it",
    "{} where is it?? tracking shows nothing",
    "{}. Cancel before it ships, thanks.",
    "{} returning the jacket, it's the wrong colour",
    "{} has been in transit for two weeks",
]


def test_spaced_out_known_spellings_are_not_new_and_the_place_must_vary():
    spelled = ["AC  {}", "ac\t{}", "Ac   {}"]  # AC 12345 with more or other spaces
    texts = [o.format(spelled[i % 3].format(30000 + i)) for i, o in enumerate(OPENINGS)]
    problems = new_example_problems(ten_new(texts))
    assert sum("a form the data set already has" in p for p in problems) == 10
    assert any("sits at the start of the message" in p for p in problems)

    texts = [o.format(f"ac/{30000 + i}") for i, o in enumerate(OPENINGS)]
    texts[3] = f"Hello, my order was due on Monday and nothing came. It is ac/{30003}"
    texts[6] = f"Hi there, about the parcel ac/{30006}, tracking shows nothing at all"
    assert new_example_problems(ten_new(texts)) == []


def asking_back(weight: object | None) -> dict:
    """An example whose assistant first asks for the order number, then answers."""
    example = make_example("Where is my parcel?", "order_status", None, "neutral")
    reply = {"role": "assistant", "content": "Could you give me your order number, please?"}
    if weight is not None:
        reply["weight"] = weight
    question = {"role": "user", "content": "Sorry, it is AC-12345."}
    answer = json.dumps({"intent": "order_status", "order_id": "AC-12345", "sentiment": "neutral"})
    example["messages"][2:] = [reply, question, {"role": "assistant", "content": answer}]
    return example


def test_a_reply_before_the_answer_must_not_be_learned():
    assert repaired_content_problems({NAME: checked([asking_back(0)])}, BROKEN) == []
    for weight, shown in ((1, "weight 1"), (None, "no weight")):
        [problem] = repaired_content_problems({NAME: checked([asking_back(weight)])}, BROKEN)
        assert f"line 1: a reply before the final answer has {shown}" in problem
        assert "give every reply before the answer weight 0" in problem
