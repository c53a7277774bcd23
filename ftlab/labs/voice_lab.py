"""Lab 3's rules: what a reply in the Acme voice is, what a metric of it must tell apart, which
held-out messages are fair, and when fine-tuning has worked.

The self-check cells call these instead of spelling the rules out, so a learner reads what to
fix, not the checking code (and is not handed a finished voice metric next to the cell where
they write their own).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ftlab.labs.checks import LabCheckFailed, plural, short
from ftlab.support import NEAR_COPY, near_copies

MIN_ANSWER_WORDS = 3  # "Hey trail friend! Happy trails!" with nothing between answers nothing
MIN_PAIRS = 12
MIN_MEAN_SCORE = 0.8  # what the fine-tuned model must reach with the learner's own metric


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


def _near_copies_among(messages: list[str]) -> list[tuple[str, str, float]]:
    """(message, an earlier one it nearly copies, similarity): at most one per message."""
    return [
        found
        for i, message in enumerate(messages)
        for found in near_copies([message], messages[:i])[:1]
    ]


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
    for message, earlier, similarity in _near_copies_among(messages):
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


def pairs_shape_problems(pairs: Any) -> list[str]:
    """Section 1: `pairs` is a list of (customer, reply) pairs of text (before anything else
    can be checked, or the file written)."""
    if not isinstance(pairs, list):
        return [f"pairs is a {type(pairs).__name__}; it must be a list of (customer, reply) pairs"]
    for index, pair in enumerate(pairs):
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            return [
                f"pairs[{index}] is {short(pair)}; every entry must be a (customer message, "
                "reply) pair: two strings in brackets, separated by a comma"
            ]
        if not all(isinstance(part, str) for part in pair):
            return [f"pairs[{index}] holds something other than two strings: {short(pair)}"]
    return []


def check_pairs_shape(pairs: Any) -> None:
    """Stop with what to fix when `pairs` is not a list of (customer, reply) pairs of text."""
    if problems := pairs_shape_problems(pairs):
        raise LabCheckFailed("\n".join(f"✗ {problem}" for problem in problems))


def pairs_problems(
    pairs: Any, file_is_valid: bool, greeting: str, sign_off: str, max_words: int
) -> list[str]:
    """Section 1: enough different (customer, reply) pairs of text, every reply in the voice,
    and no two replies saying nearly the same thing (one canned answer teaches nothing)."""
    if problems := pairs_shape_problems(pairs):
        return problems
    problems = []
    if not file_is_valid:
        problems.append("The checker found errors (listed above): fix them in `pairs`")
    if len(pairs) < MIN_PAIRS:
        problems.append(f"You wrote {plural(len(pairs), 'example')}; write at least {MIN_PAIRS}")
    for customer, earlier, similarity in _near_copies_among([c for c, _ in pairs]):
        problems.append(
            f"The customer message {short(customer)} is {similarity:.0%} like "
            f"{short(earlier)}: near copies teach one answer twice. Make every example different"
        )
    middles = [reply.strip().removeprefix(greeting).removesuffix(sign_off) for _, reply in pairs]
    if repeats := _near_copies_among(middles):
        middle, earlier, similarity = repeats[0]
        problems.append(
            f"{plural(len(repeats), 'reply', 'replies')} nearly "
            f"{'repeats' if len(repeats) == 1 else 'repeat'} an earlier one between the "
            f"greeting and the sign-off (for example {short(middle)} is {similarity:.0%} "
            f"like {short(earlier)}): a model trained on a canned answer gives it to every "
            "customer. Answer each customer's own message"
        )
    off_voice = [
        (customer, broken)
        for customer, reply in pairs
        if (broken := voice_problems(reply, greeting, sign_off, max_words))
    ]
    if off_voice:
        customer, broken = off_voice[0]
        problems.append(
            f"{plural(len(off_voice), 'reply', 'replies')} "
            f"{'breaks' if len(off_voice) == 1 else 'break'} the voice rules. The reply to "
            f"{short(customer)} {' and '.join(broken)}. Each must start with {greeting!r}, end "
            f"with {sign_off!r}, stay under {max_words} words, and answer the customer in between"
        )
    return problems


def sample_replies(greeting: str, sign_off: str, max_words: int = 40) -> dict[str, str]:
    """Section 2: six replies a voice metric must tell apart, by name."""
    answer = "Your boots are on their way and should arrive on Friday, ready for the trail."
    longer = (
        "Your boots left our warehouse this morning and should reach you on Friday, just in "
        "time for the weekend. If they pinch, swap them in our stores or send them back within "
        "thirty days, and tell us how the trail went. We love hearing from hikers like you."
    ).split()
    frame = len(greeting.split()) + len(sign_off.split())

    def words(count: int) -> list[str]:
        """`count` words of the longer reply, repeated as often as a large max_words needs."""
        return (longer * (count // len(longer) + 1))[:count]

    too_long = (
        "Your boots left our warehouse this morning and should reach you on Friday, just in "
        "time for your weekend hike in the hills. If they do not fit, swap them for another "
        "size in any of our stores, or send them back for free within thirty days. Enjoy the "
        "fresh mountain air!"
    ).split()
    too_long += words(max(0, max_words + 5 - frame - len(too_long)))  # over any max_words
    return {
        "on-brand": f"{greeting} {answer} {sign_off}",
        "no sign-off": f"{greeting} {answer}",
        "formal": (
            "Dear customer, thank you for contacting Acme Outfitters. We regret to inform you "
            "that your order has been delayed due to unforeseen circumstances. Kind regards, "
            "the team."
        ),
        "too long": " ".join([greeting, *too_long, sign_off]),
        "no answer": f"{greeting} {sign_off}",
        # Exactly max_words in all, so not under them, though its middle is: the rule counts
        # everything.
        "at the limit": " ".join([greeting, *words(max_words - frame), sign_off]),
    }


def metric_problems(scores: dict[str, Any], samples: dict[str, str], max_words: int) -> list[str]:
    """Section 2: does a metric, by its `scores` of `sample_replies`, rank them as it should?"""
    if not all(
        isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
        for value in scores.values()
    ):
        return [
            "voice_score must return a number between 0 and 1 for every reply; it returned "
            f"{scores}"
        ]
    if len(set(scores.values())) == 1:
        return [
            f"voice_score gives every reply the same score ({scores['on-brand']}): it does not "
            "look at the reply yet. Check each rule and give a share of the points for each one "
            "the reply follows"
        ]
    good = scores["on-brand"]
    problems = []
    if not good > scores["no sign-off"] > scores["formal"]:
        problems.append(
            "Your metric should score the on-brand reply highest, the reply without the sign-off "
            "in between, and the formal reply lowest. Give points for each rule a reply follows"
        )
    if not scores["too long"] < good:
        words = len(samples["too long"].split())
        problems.append(
            f"A {words}-word reply with the greeting and the sign-off scores {scores['too long']}, "
            "as much as the on-brand reply: your length rule does not work. Count the words and "
            f"give that point only when there are fewer than MAX_WORDS ({max_words})"
        )
    if not scores["at the limit"] < good:
        problems.append(
            f"A reply of exactly {len(samples['at the limit'].split())} words, greeting and "
            f"sign-off included, scores {scores['at the limit']}, as much as the on-brand reply. "
            f"The rule is under {max_words} words in all: count the whole reply, and use <, "
            "not <="
        )
    if not scores["no answer"] < good:
        problems.append(
            f"A reply with nothing between the greeting and the sign-off scores "
            f"{scores['no answer']}, as much as the on-brand reply, yet it answers nothing. Give "
            "a point only when words are left once the greeting and the sign-off are taken off"
        )
    return problems


def replies_in_voice(replies: list[str], greeting: str, sign_off: str, max_words: int) -> int:
    """How many of `replies` follow every voice rule."""
    return sum(not voice_problems(text, greeting, sign_off, max_words) for text in replies)


def comparison_problems(
    tuned_replies: list[str],
    held_out: list[str],
    base_mean: float,
    tuned_mean: float,
    greeting: str,
    sign_off: str,
    max_words: int,
) -> list[str]:
    """Section 5: the fine-tuned model beats the base model by the learner's metric, reaches
    `MIN_MEAN_SCORE`, and at least half of its replies follow every voice rule."""
    if not held_out or len(tuned_replies) != len(held_out):
        return [
            "There are no fine-tuned replies to compare yet: finish section 4 (the job must "
            "succeed) and run the cell above again"
        ]
    problems = []
    if tuned_mean <= base_mean:
        problems.append(
            f"The fine-tuned model scores {tuned_mean:.2f} with your metric, no better than the "
            f"base model's {base_mean:.2f}. Read the replies above: if they follow the voice, fix "
            "voice_score; if not, train for more steps: more epochs (5 to 10), or a smaller "
            "batch_size (4 to 8) so that each epoch is several steps"
        )
    if tuned_mean < MIN_MEAN_SCORE:
        problems.append(
            f"The fine-tuned model's mean voice score is {tuned_mean:.2f}; it should reach at "
            f"least {MIN_MEAN_SCORE}. Check that every training reply follows the voice and "
            "that the job ran enough steps: 5 to 10 epochs with a batch_size of 4 to 8"
        )
    off_voice = [
        (text, broken)
        for text in tuned_replies
        if (broken := voice_problems(text, greeting, sign_off, max_words))
    ]
    in_voice = len(tuned_replies) - len(off_voice)
    if 2 * in_voice < len(tuned_replies):
        text, broken = off_voice[0]
        problems.append(
            f"Only {in_voice} of {len(tuned_replies)} fine-tuned replies follow every voice "
            f"rule; at least half should. The first that does not, {text!r}, "
            f"{' and '.join(broken)}. Train for more steps (5 to 10 epochs, batch_size 4 to 8), "
            "or add varied examples"
        )
    return problems
