"""Lab 1's rules: repairing files, labelling new examples, and keeping them out of the
evaluation splits. Each returns the problems a self-check cell lists (empty when all is well).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ftlab.chat_template import is_learned
from ftlab.labs.checks import plural, short
from ftlab.support import (
    INTENTS,
    KEYS,
    NEAR_COPY,
    ORDER_ID,
    SENTIMENTS,
    SYSTEM_PROMPT,
    gold_answer,
    load_examples,
    near_copies,
    parse_answer,
)
from ftlab.validation import MIN_EXAMPLES, normalise, validate_file

# An order number however a customer types it: the letters AC, up to three characters that are
# neither letters nor digits (-, –, /, ., _, #, spaces...), then five digits.
TYPED_ORDER_ID = re.compile(r"(?<![a-z0-9])ac[^a-z0-9]{0,3}(\d{5})(?![0-9])", re.IGNORECASE)
# The spellings the support data set already has: AC-12345, AC 12345 and AC12345, in any case
# (more spaces, or a tab, in place of the one space count as the same).
COVERED_SPELLING = re.compile(r"ac[- ]?\d{5}", re.IGNORECASE)
HIDDEN_ORDER_ID = "AC-#####"
C1_CONTROLS = re.compile("[\x80-\x9f]")
REPLACEMENT = "\ufffd"
ENCODING_FIX = (
    "read each line as bytes, try UTF-8, and decode the lines that are not UTF-8 with "
    "Windows-1252: raw.decode('cp1252') (not 'latin-1', and not errors='replace' or 'ignore')"
)


def order_ids_in(text: str) -> set[str]:
    """The order numbers in a message, however typed, in the canonical `AC-12345` form."""
    return {f"AC-{digits}" for digits in TYPED_ORDER_ID.findall(text)}


def _typed(order_id: str, text: str) -> list[re.Match[str]]:
    """Where the message types `order_id` (`AC-12345`), however spelled."""
    return [m for m in TYPED_ORDER_ID.finditer(text) if m.group(1) == order_id[-5:]]


def spellings_of(order_id: str, text: str) -> list[str]:
    """How the message types `order_id` (`AC-12345`): e.g. ['ac/12345']."""
    return [m.group(0) for m in _typed(order_id, text)]


def hide_order_ids(text: str) -> str:
    """The message with every order number replaced by AC-#####, so only the wording is compared."""
    return TYPED_ORDER_ID.sub(HIDDEN_ORDER_ID, text)


def _user_text(example: dict) -> str:
    messages = example.get("messages")
    if not isinstance(messages, list):
        return ""
    return "\n".join(
        m["content"]
        for m in messages
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
    )


def answer_problems(example: Any) -> list[str]:
    """What is wrong with an example's prompt or answer, in words; [] when it is well labelled.

    The course's system prompt word for word first, the assistant's answer last, and an answer
    that is one JSON object with exactly intent, order_id and sentiment, allowed values, and the
    order number the customer typed (canonical AC-12345), or null when the message has none.
    """

    if not isinstance(example, dict) or not isinstance(example.get("messages"), list):
        return [
            "it is not an example: make it with make_example(text, intent, order_id, sentiment)"
        ]
    messages = example["messages"]
    if not all(isinstance(m, dict) for m in messages):
        return [
            'a message is not {"role": ..., "content": ...}: make the example with '
            "make_example(text, intent, order_id, sentiment)"
        ]
    problems = []
    first = messages[0] if messages else {}
    if first != {"role": "system", "content": SYSTEM_PROMPT}:
        problems.append(
            "the first message is not the course's system prompt word for word "
            "(use ftlab.support.SYSTEM_PROMPT, as make_example does)"
        )
    last = messages[-1] if messages else {}
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return [*problems, "the last message is not the assistant's answer: add the answer last"]
    problems.extend(_earlier_reply_problems(messages[1:-1]))
    try:
        answer = gold_answer(example)
    except (ValueError, TypeError, KeyError, IndexError):
        answer = None
    if not isinstance(answer, dict):
        return [
            *problems,
            f"the answer {short(last.get('content'))} is not one JSON object: write it as "
            "json.dumps({'intent': ..., 'order_id': ..., 'sentiment': ...}) or use make_example",
        ]
    if sorted(answer) != sorted(KEYS):
        problems.append(
            f"the answer has the keys {sorted(answer)}; it needs exactly intent, order_id and "
            "sentiment"
        )
    if "intent" in answer and answer["intent"] not in INTENTS:
        problems.append(f"intent {answer['intent']!r} is not one of {', '.join(INTENTS)}")
    if "sentiment" in answer and answer["sentiment"] not in SENTIMENTS:
        problems.append(f"sentiment {answer['sentiment']!r} is not one of {', '.join(SENTIMENTS)}")
    if "order_id" in answer:
        problems.extend(_order_id_problems(answer["order_id"], _user_text(example)))
    return problems


def _earlier_reply_problems(earlier: list) -> list[str]:
    """A reply before the final answer (asking for the order number) that would be learned."""
    learned = [m for m in earlier if isinstance(m, dict) and "role" in m and is_learned(m)]
    if not learned:
        return []
    weight = f"weight {learned[0]['weight']!r}" if "weight" in learned[0] else "no weight"
    return [
        f"a reply before the final answer has {weight}, so the model would learn to ask back "
        "instead of answering: give every reply before the answer weight 0 (notebook 02, "
        "section 1)"
    ]


def _order_id_problems(order_id: object, text: str) -> list[str]:
    typed = sorted(order_ids_in(text))
    if order_id is None:
        if typed:
            return [
                f"order_id is null, but the message has the order number {' and '.join(typed)}: "
                "label it (canonical form, e.g. 'AC-12345')"
            ]
        return []
    if not isinstance(order_id, str) or not ORDER_ID.fullmatch(order_id):
        return [
            f"order_id {order_id!r} is not in the canonical form: 'AC-' and exactly five digits, "
            "in capitals, e.g. 'AC-12345', whatever way the customer typed it"
        ]
    if not typed:
        return [
            f"order_id is {order_id}, but the message has no order number (AC and five digits): "
            "write the number into the message as the customer would type it, or label null"
        ]
    if order_id not in typed:
        return [
            f"order_id is {order_id}, but the order number in the message is "
            f"{' or '.join(typed)}: label the number the customer typed"
        ]
    return []


def repair_check_problems(fixed_reports: Mapping[str, Any], broken_dir: Path) -> list[str]:
    """Lab 1: why each repaired file still fails the checker, and what to change for it."""

    problems = []
    for name, report in fixed_reports.items():
        if report.valid:
            continue
        codes = sorted({p.code for p in report.errors})
        if "empty_file" in codes:
            problems.append(
                f"{name} came out empty: repair_file returned no examples for it. Write "
                "repair_file so that it returns the repaired example of every line it can save"
            )
            continue
        if "too_few_examples" in codes:
            original = broken_dir / name
            raw = original.read_bytes().splitlines() if original.is_file() else []
            lines = [line for line in raw if line.strip()]
            if len(lines) < MIN_EXAMPLES:
                problems.append(
                    f"{name} has {plural(len(report.examples), 'example')}, fewer than "
                    f"{MIN_EXAMPLES}: no code can invent good data, so write the missing ones "
                    f"yourself in extra_examples[{name!r}] with make_example(...)"
                )
            else:
                problems.append(
                    f"{name} has {plural(len(report.examples), 'example')}, fewer than "
                    f"{MIN_EXAMPLES}, but the original has {len(lines)} lines: repair_file drops "
                    "lines it could save; read what it printed as dropped and fix it"
                )
            codes.remove("too_few_examples")
        if codes:
            lines = sorted({p.line for p in report.errors if p.line is not None})
            where = f" on {plural(len(lines), 'line')} {', '.join(map(str, lines[:8]))}"
            problems.append(
                f"your repaired {name} still has errors {', '.join(codes)}"
                f"{where if lines else ''}: display "
                f"fixed_reports[{name!r}] to read each one, then fix repair_file (or the "
                "examples you added for it)"
            )
    return problems


def _decoded_original_characters(original: Path) -> set[str]:
    """The non-ASCII characters in the lines of `original` that are not UTF-8, read as cp1252."""
    characters: set[str] = set()
    for raw in original.read_bytes().splitlines():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            characters.update(ch for ch in raw.decode("cp1252", errors="ignore") if ord(ch) > 127)
    return characters


def _lines(numbers: list[int], shown: int = 8) -> str:
    listed = ", ".join(map(str, numbers[:shown]))
    more = f" and {len(numbers) - shown} more" if len(numbers) > shown else ""
    return f"line {listed}" if len(numbers) == 1 else f"lines {listed}{more}"


def repaired_content_problems(fixed_reports: Mapping[str, Any], broken_dir: Path) -> list[str]:
    """Lab 1: every repaired example well labelled, and no text garbled by a wrong decoding.

    Each problem names the repaired file, its lines, and the rule the examples break.
    """
    problems = []
    for name, report in fixed_reports.items():
        broken_rules: dict[str, list[int]] = {}
        garbled_lines: list[int] = []
        garbled: set[str] = set()
        text_of_file = ""
        for example, line in zip(report.examples, report.example_lines, strict=False):
            for problem in answer_problems(example):
                broken_rules.setdefault(problem, []).append(line)
            text = json.dumps(example, ensure_ascii=False)
            text_of_file += text
            found = set(C1_CONTROLS.findall(text)) | ({REPLACEMENT} & set(text))
            if found:
                garbled_lines.append(line)
                garbled |= found
        copy = f"your repaired {name}"  # its line numbers, not the original's
        for problem, lines in broken_rules.items():
            problems.append(f"{copy}, {_lines(lines)}: {problem}")
        if garbled:
            problems.append(
                f"{copy}, {_lines(garbled_lines)}: the text holds "
                f"{', '.join(map(repr, sorted(garbled)))}, which no customer typed: these lines "
                f"were decoded with the wrong encoding. Fix: {ENCODING_FIX}"
            )
            continue
        original = broken_dir / name
        if original.is_file():
            missing = _decoded_original_characters(original) - set(text_of_file)
            if missing:
                problems.append(
                    f"{name}: the characters {' '.join(sorted(missing))} of the original file "
                    f"are missing from your repaired copy (lines lost or wrongly decoded). Fix: "
                    f"{ENCODING_FIX}"
                )
    return problems


def broken_files_source(broken_dir: Path) -> ModuleType:
    """`make_broken.py` next to the broken files: what each file should give back when repaired."""
    spec = importlib.util.spec_from_file_location("make_broken", broken_dir / "make_broken.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{broken_dir / 'make_broken.py'} is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def kept_and_labelled_problems(
    fixed_reports: Mapping[str, Any], broken_dir: Path, extra_examples: Any = None
) -> list[str]:
    """Lab 1: every example a careful repair can save is there, and the answers the learner
    wrote for messages that arrived without one follow the labelling guide.

    The messages are named, the right labels are not: the learner looks them up in the guide.
    The learner's own new examples (`extra_examples`, file name -> examples) are not counted
    as repaired ones: they cannot stand in for lines the repair dropped.
    """
    problems = []
    extras = extra_examples if isinstance(extra_examples, dict) else {}
    for name, broken in broken_files_source(broken_dir).build().items():
        report = fixed_reports.get(name)
        if report is None:
            continue
        added = extras.get(name, [])
        repaired = len(report.examples) - (len(added) if isinstance(added, list) else 0)
        if repaired < broken.savable:
            problems.append(
                f"{name}: {plural(repaired, 'example')} repaired, but "
                f"{broken.savable} can be saved. Read the lines repair_file printed as dropped "
                "and recover those that hold a whole example (only a line cut off in the middle, "
                "an empty example or a duplicate is lost)"
            )
        answers = {_user_text(e): e["messages"][-1].get("content") for e in report.examples}
        for text, (intent, order_id, sentiment) in broken.hand_labels.items():
            if text not in answers:
                problems.append(
                    f"{name}: the message {short(text)} arrived without an answer and is "
                    "missing from your copy. Label it yourself with make_example(...) (or in "
                    "repair_file) instead of dropping it"
                )
                continue
            given = parse_answer(answers[text]) if isinstance(answers[text], str) else None
            if given is None:
                continue  # answer_problems names a malformed answer already
            wrong = [
                key
                for key, value in zip(KEYS, (intent, order_id, sentiment), strict=True)
                if given.get(key) != value
            ]
            if wrong:
                problems.append(
                    f"{name}: your label for {short(text)} has the wrong "
                    f"{' and '.join(wrong)}. Read the intents, the tones and the borderline "
                    "calls in data/support/README.md again, and label it as the guide says"
                )
    return problems


def copied_examples_problems(
    fixed_reports: Mapping[str, Any], extra_examples: Any, held_out: Sequence[Path]
) -> list[str]:
    """Lab 1: no repaired file repeats an example, and the examples written for a file are new:
    not near copies of its other messages, nor of a validation or test message (which would
    leak the held-out splits into training)."""
    problems = []
    for name, report in fixed_reports.items():
        for line, earlier in report.duplicates:
            problems.append(
                f"{name} line {line} repeats line {earlier}: a duplicate teaches one answer "
                "twice. Drop the repeat (in repair_file, or from extra_examples)"
            )
    if not isinstance(extra_examples, dict):
        return problems
    held_out_texts = _messages_in(held_out)
    for name, extras in extra_examples.items():
        report = fixed_reports.get(name)
        if report is None or not isinstance(extras, list):
            continue
        written = [_user_text(e) for e in extras if isinstance(e, dict) and _user_text(e)]
        others = Counter(_user_text(e) for e in report.examples) - Counter(written)
        repaired = list(others.elements())  # the file's own messages, the extras taken out
        for index, text in enumerate(written):
            found = _similar_pairs([text], repaired + written[:index])[:1]
            for _, other, similarity in found:
                problems.append(
                    f"extra_examples[{name!r}]: {short(text, 50)} is {similarity:.0%} like "
                    f"{short(other, 50)} in the same file, once order numbers are hidden: "
                    "write a new message, not a variant of one the file has"
                )
            for _, other, similarity in _similar_pairs([text], list(held_out_texts))[:1]:
                problems.append(
                    f"extra_examples[{name!r}]: {short(text, 50)} is {similarity:.0%} like "
                    f"{held_out_texts[other]} {short(other, 50)}: training on a held-out "
                    "message leaks it into the score. Write your own message"
                )
    return problems


def _messages_in(splits: Sequence[Path]) -> dict[str, str]:
    """Each customer message of the splits -> where it first appears (`test.jsonl line 4`)."""
    where: dict[str, str] = {}
    for split in splits:
        for line, example in enumerate(load_examples(split), start=1):
            where.setdefault(_user_text(example), f"{split.name} line {line}")
    return where


def _similar_pairs(texts: Sequence[str], others: Sequence[str]) -> list[tuple[str, str, float]]:
    """Pairs at least NEAR_COPY alike (ftlab.support's rule), order numbers hidden."""

    return near_copies(texts, others, key=lambda text: normalise(hide_order_ids(text)))


def new_example_problems(examples: Any, min_count: int = 10) -> list[str]:
    """Lab 1, section 3: ten or more varied, well-labelled examples, each with a new spelling."""

    if not isinstance(examples, list):
        return ["new_examples must be a list of examples: [make_example(...), ...]"]
    problems = []
    if len(examples) < min_count:
        problems.append(
            f"you have {plural(len(examples), 'example')}; write at least {min_count}, each with "
            "make_example(text, intent, order_id, sentiment)"
        )
    labelled = []
    for number, example in enumerate(examples, start=1):
        shown = _user_text(example) if isinstance(example, dict) else example
        where = f"example {number} ({short(shown, 40)})"
        wrong = answer_problems(example)
        if wrong:
            problems.extend(f"{where}: {problem}" for problem in wrong)
            continue
        answer = gold_answer(example)
        text = _user_text(example)
        labelled.append((number, text, answer))
        if answer["order_id"] is None:
            problems.append(
                f"{where}: the message has no order number; this section is about order numbers "
                "typed in new ways, so put one in (e.g. ac/12345) and label it 'AC-12345'"
            )
            continue
        typed = spellings_of(answer["order_id"], text)
        if all(COVERED_SPELLING.fullmatch(" ".join(spelling.split())) for spelling in typed):
            problems.append(
                f"{where}: the order number is typed {' and '.join(map(repr, typed))}, a form the "
                "data set already has (AC-12345, AC 12345, AC12345 in any case): type it another "
                "way, e.g. ac.12345, AC_12345, AC/12345, AC#12345 or AC–12345"
            )
    copies: dict[int, list[int]] = {}  # example number -> later examples that copy it
    original: dict[int, int] = {}
    for index, (number, text, _) in enumerate(labelled):
        earlier = [(n, t) for n, t, _ in labelled[:index]]
        similar = {other for _, other, _ in _similar_pairs([text], [t for _, t in earlier])}
        first = next((n for n, t in earlier if t in similar), None)
        if first is not None:
            root = original.get(first, first)
            original[number] = root
            copies.setdefault(root, []).append(number)
    for root, numbers in copies.items():
        root_text = next(text for n, text, _ in labelled if n == root)
        which = (
            f"example {numbers[0]} is"
            if len(numbers) == 1
            else (f"examples {', '.join(map(str, numbers))} are")
        )
        problems.append(
            f"{which} at least {NEAR_COPY:.0%} alike to example {root} ({short(root_text, 40)}) "
            "once the order numbers are hidden: copies teach the sentence, not the skill. "
            "Reword them: other words, another tone, the number somewhere else"
        )
    if len(labelled) >= min_count:
        intents = {answer["intent"] for _, _, answer in labelled}
        tones = {answer["sentiment"] for _, _, answer in labelled}
        if len(intents) < 3:
            problems.append(
                f"every example has the intent {' or '.join(sorted(intents))}: vary what the "
                "customers want (at least 3 different intents)"
            )
        if len(tones) < 2:
            problems.append(
                f"every example has the sentiment {''.join(tones)}: vary the tone (at least 2 "
                "different sentiments)"
            )
        places = {_place_of_number(text, answer["order_id"]) for _, text, answer in labelled}
        if len(places - {None}) == 1:
            problems.append(
                f"in every example the order number sits at the {next(iter(places - {None}))} "
                "of the message: put it elsewhere in some (start, middle or end), as customers do"
            )
    return problems


def _place_of_number(text: str, order_id: str | None) -> str | None:
    """Where in `text` the order number is typed: "start", "middle" or "end" (by thirds)."""
    found = _typed(order_id, text) if order_id else []
    if not found:
        return None
    middle = (found[0].start() + found[0].end()) / 2 / len(text)
    return "start" if middle < 1 / 3 else "end" if middle > 2 / 3 else "middle"


def leak_problems(path: Path, split_paths: Sequence[Path], min_count: int = 10) -> list[str]:
    """Lab 1, section 4: the file is valid and no message repeats or nearly copies a split's.

    Exact repeats come from the checker (`validate_file(..., against=...)`); near copies use
    ftlab.support's rule (at least NEAR_COPY alike) with the order numbers hidden, so a message
    copied with only its order number respelled is still found.
    """

    if not Path(path).is_file():
        return [f"{Path(path).name} does not exist yet: run the cells of section 3 first"]
    path = Path(path)
    report = validate_file(path, against=list(split_paths), count_tokens=False)
    problems = [f"{path.name} {p}" for p in report.errors]
    if len(report.examples) < min_count:
        problems.append(
            f"{path.name} holds {plural(len(report.examples), 'valid example')}; it needs at "
            f"least {min_count}: finish section 3 and run its cells again"
        )
    problems.extend(
        f"{path.name} {p}: rewrite that message in your own words"
        for p in report.warnings
        if p.code in ("overlap_with_split", "duplicate_example")
    )
    where_in_splits = _messages_in(split_paths)
    ours = {
        _user_text(example): line
        for example, line in zip(report.examples, report.example_lines, strict=False)
    }
    for text, other, similarity in _similar_pairs(list(ours), list(where_in_splits)):
        problems.append(
            f"{path.name} line {ours[text]} {short(text, 50)} is {similarity:.0%} like "
            f"{where_in_splits[other]} {short(other, 50)} once order numbers are hidden (near "
            f"copies start at {NEAR_COPY:.0%}): rewrite it in your own words"
        )
    return problems
