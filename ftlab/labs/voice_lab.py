"""Lab 3's rules: what a reply in the Acme voice is, and which held-out messages are fair."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ftlab.labs.checks import plural
from ftlab.support import NEAR_COPY, near_copies

MIN_ANSWER_WORDS = 3  # "Hey trail friend! Happy trails!" with nothing between answers nothing


def voice_problems(reply: str, greeting: str, sign_off: str, max_words: int) -> list[str]:
    """Which of the lab's voice rules `reply` breaks, in words; [] when it follows them all."""
    if not isinstance(reply, str):
        return [f"it is {type(reply).__name__}, not text"]
    text = reply.strip()
    problems = []
    if not text.startswith(greeting):
        problems.append(f"does not start with {greeting!r}")
    if not text.endswith(sign_off):
        problems.append(f"does not end with {sign_off!r}")
    words = len(text.split())
    if words >= max_words:
        problems.append(f"has {words} words (it must stay under {max_words})")
    middle = text.removeprefix(greeting).removesuffix(sign_off)
    if len(middle.split()) < MIN_ANSWER_WORDS:
        problems.append("has no answer between the greeting and the sign-off")
    return problems


def held_out_problems(held_out: Any, trained: Iterable[str], min_count: int = 5) -> list[str]:
    """Lab 3: a list of new messages, none a copy or near copy of a training message or of
    another held-out message."""

    if not isinstance(held_out, list):
        return [
            f"held_out is a {type(held_out).__name__}; it must be a list of customer messages, "
            "one string each: held_out = ['Do you sell maps?', 'My tent leaks.', ...]"
        ]
    not_text = [i for i, message in enumerate(held_out) if not isinstance(message, str)]
    if not_text:
        return [
            f"held_out[{not_text[0]}] is a {type(held_out[not_text[0]]).__name__}; every entry "
            "must be a customer message in quotes (a string), with no reply"
        ]
    problems = []
    messages = [m for m in held_out if m.strip()]
    if len(messages) < min_count:
        problems.append(
            f"You wrote {plural(len(messages), 'held-out message')}; write at least {min_count}"
        )
    for i, message in enumerate(messages):  # each one different from the ones before it
        for _, earlier, similarity in near_copies([message], messages[:i])[:1]:
            problems.append(
                f"{message!r} is {similarity:.0%} like {earlier!r}, another of your held-out "
                "messages: copies test the same thing twice. Make every message different"
            )
    for message, trained_message, similarity in near_copies(messages, list(trained)):
        problems.append(
            f"{message!r} is {similarity:.0%} like the training message {trained_message!r} "
            f"(case and spacing ignored; near copies start at {NEAR_COPY:.0%}): the model may "
            "have learned that answer by heart. Write a new question instead"
        )
    return problems
