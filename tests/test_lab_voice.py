"""Lab 3's rules: training pairs, the metric check, held-out messages, the comparison."""

from __future__ import annotations

import pytest

from ftlab.labs.checks import LabCheckFailed
from ftlab.labs.voice_lab import (
    check_pairs_shape,
    comparison_problems,
    held_out_problems,
    metric_problems,
    pairs_problems,
    replies_in_voice,
    sample_replies,
)

DIFFERENT = [
    "Do you sell maps?",
    "My tent leaks at the seams.",
    "Where is AC-12345?",
    "Can I return boots bought in a store?",
    "Love your Denver store!",
]


def test_held_out_messages_must_differ_from_training_and_from_each_other():
    assert held_out_problems(DIFFERENT, ["Hi, do you ship to Canada?"]) == []
    copies = held_out_problems(["Do you sell maps?"] * 5, [])
    assert copies and all("another of your held-out messages" in p for p in copies)
    [near] = held_out_problems([*DIFFERENT[:4], "Do you sell maps??"], [])
    assert "'Do you sell maps??' is" in near and "'Do you sell maps?'" in near
    [trained] = held_out_problems(DIFFERENT, ["do you sell MAPS?"])
    assert "like the training message" in trained


GREETING, SIGN_OFF, MAX_WORDS = "Hey trail friend!", "Happy trails! 🌲", 40
VOICE = (GREETING, SIGN_OFF, MAX_WORDS)


def in_voice(answer: str) -> str:
    return f"{GREETING} {answer} {SIGN_OFF}"


def per_rule_score(reply: str) -> float:
    """The solution's kind of metric: a share of the points for each rule."""
    text = reply.strip()
    rules = [
        text.startswith(GREETING),
        text.endswith(SIGN_OFF),
        len(text.split()) < MAX_WORDS,
        len(text.removeprefix(GREETING).removesuffix(SIGN_OFF).split()) >= 3,
    ]
    return sum(rules) / len(rules)


def metric_verdict(score) -> list[str]:
    samples = sample_replies(GREETING, SIGN_OFF)
    return metric_problems({name: score(text) for name, text in samples.items()}, samples, 40)


def test_training_pairs_must_be_text_pairs_all_different_and_all_in_voice():
    messages = [
        "Where is my parcel?",
        "Do you sell tents?",
        "My boots leak.",
        "Can I return a jacket?",
        "hi",
        "Thanks for the fast delivery!",
        "Is the stove safe indoors?",
        "Do you ship to Canada?",
        "How do I wash a down jacket?",
        "Cancel my order please.",
        "What size gloves should I get?",
        "Your driver was rude.",
    ]
    answers = [
        "It left our depot today.",
        "Yes, eleven kinds, from one-person to family size.",
        "Send a photo and we will replace them.",
        "Of course, within thirty days, free.",
        "Hello back, how can we help?",
        "So glad it arrived in time for your hike.",
        "No, only ever use it outside with fresh air.",
        "We do, in five to eight working days.",
        "Cold water, gentle cycle, then tumble dry with tennis balls.",
        "Done: nothing will ship and you will not be charged.",
        "Measure around your palm and check our size chart.",
        "We are sorry; we will talk to the courier firm at once.",
    ]
    pairs = [(m, in_voice(a)) for m, a in zip(messages, answers, strict=True)]
    assert pairs_problems(pairs, True, *VOICE) == []
    canned = [(m, in_voice("Thanks for reaching out, we are on it!")) for m in messages]
    [same_reply] = pairs_problems(canned, True, *VOICE)  # one problem, not one per reply
    assert (
        same_reply.startswith("11 replies nearly repeat an earlier one") and "canned" in same_reply
    )
    with pytest.raises(LabCheckFailed, match="pairs\\[0\\] is"):
        check_pairs_shape(["just a string"])
    check_pairs_shape(pairs)  # silent when the shape is right
    assert "pairs[0] is" in pairs_problems([{"customer": "a", "reply": "b"}], True, *VOICE)[0]
    assert "two strings" in pairs_problems([("a", 3)], True, *VOICE)[0]
    [few] = pairs_problems(pairs[:11], True, *VOICE)
    assert "11 examples; write at least 12" in few
    [repeated] = pairs_problems(
        [*pairs, ("do you sell TENTS? ", in_voice("Again, yes, we do."))], True, *VOICE
    )
    assert "'do you sell TENTS? ' is 100% like 'Do you sell tents?'" in repeated
    off = [*pairs[:11], ("Last one?", f"{GREETING} Sure thing.")]
    [broken] = pairs_problems(off, True, *VOICE)
    assert "'Last one?'" in broken and "does not end with" in broken
    assert "checker found errors" in pairs_problems(pairs, False, *VOICE)[0]


def test_a_per_rule_metric_passes_and_weaker_metrics_are_told_what_is_wrong():
    assert metric_verdict(per_rule_score) == []
    [same] = metric_verdict(lambda reply: 0.0)
    assert "same score" in same
    [not_number] = metric_verdict(lambda reply: True)
    assert "a number between 0 and 1" in not_number
    all_or_nothing = metric_verdict(lambda reply: float(per_rule_score(reply) == 1))
    assert any("without the sign-off in between" in p for p in all_or_nothing)
    no_length = metric_verdict(
        lambda reply: (reply.startswith(GREETING) + reply.endswith(SIGN_OFF)) / 2
    )
    assert any("length rule" in p for p in no_length)
    assert any("answers nothing" in p for p in no_length)

    def length_rule(counted: str, at_most: bool):  # per rule, but the length counted wrongly
        def score(reply: str) -> float:
            middle = reply.strip().removeprefix(GREETING).removesuffix(SIGN_OFF)
            words = len((middle if counted == "middle" else reply).split())
            short_enough = words <= MAX_WORDS if at_most else words < MAX_WORDS
            rules = [reply.startswith(GREETING), reply.endswith(SIGN_OFF), short_enough]
            return (sum(rules) + (len(middle.split()) >= 3)) / 4

        return score

    off_by_one = metric_verdict(length_rule("reply", at_most=True))
    assert [p for p in off_by_one if "exactly 40 words" in p and "use <, not <=" in p]
    assert any("exactly 40 words" in p for p in metric_verdict(length_rule("middle", False)))


@pytest.mark.parametrize("max_words", [40, 60, 100])
def test_the_samples_tell_a_right_metric_from_a_wrong_one_at_any_word_limit(max_words):
    """At 60 words the "too long" reply was not too long, and a right metric was failed."""

    def score(reply: str) -> float:
        text = reply.strip()
        middle = text.removeprefix(GREETING).removesuffix(SIGN_OFF)
        rules = [
            text.startswith(GREETING),
            text.endswith(SIGN_OFF),
            len(text.split()) < max_words,
            len(middle.split()) >= 3,
        ]
        return sum(rules) / len(rules)

    samples = sample_replies(GREETING, SIGN_OFF, max_words)
    assert len(samples["at the limit"].split()) == max_words
    assert metric_problems({n: score(t) for n, t in samples.items()}, samples, max_words) == []


def test_the_comparison_needs_a_better_model_a_high_mean_and_half_the_replies_in_voice():
    held_out = ["a?", "b?", "c?", "d?"]
    good = [in_voice("Here is your answer, friend.")] * 4
    assert comparison_problems(good, held_out, 0.2, 0.95, *VOICE) == []
    assert "no fine-tuned replies" in comparison_problems([], held_out, 0.2, 0.0, *VOICE)[0]
    [not_better] = comparison_problems(good, held_out, 0.95, 0.95, *VOICE)
    assert "no better than the base model's 0.95" in not_better
    mostly_off = [good[0], "Sure.", "Sure.", "Sure."]
    problems = comparison_problems(mostly_off, held_out, 0.2, 0.5, *VOICE)
    assert any("at least 0.8" in p for p in problems)
    assert any("Only 1 of 4" in p and "'Sure.'" in p for p in problems)
    assert replies_in_voice(mostly_off, *VOICE) == 1
