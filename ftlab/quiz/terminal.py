"""`ftlab quiz NAME` in a terminal: numbered options, typed answers, the same grading.

Answers come from stdin, so it also works piped (`printf '1\\n' | ftlab quiz quick_check`);
when stdin is not a terminal each answer read is echoed, so the transcript reads well.
Each question gets one attempt; after a wrong or partly right one the right answer is
shown. Invalid input (an option that does not exist, text where a number belongs, a
decimal comma) is explained and asked again; the end of input stops the quiz early.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from ftlab.quiz.bank import Bank, Outcome, Question, parse_number
from ftlab.quiz.progress import ProgressStore

WIDTH = 88
Say = Callable[[str], None]


@dataclass(frozen=True)
class TerminalResult:
    correct: int
    answered: int
    total: int
    unsaved: int = 0  # answers that could not be recorded

    @property
    def finished(self) -> bool:
        return self.answered == self.total


def run_terminal(
    bank: Bank,
    store: ProgressStore | None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> TerminalResult:
    """Ask every question of `bank` on stdout, read answers from stdin, record progress."""
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    echo = not _is_tty(stdin)
    total = len(bank.questions)
    say = _printer(out)
    say(f"Quiz: {bank.title} ({total} question{'s' if total != 1 else ''})\n")
    correct = answered = unsaved = 0
    for question in bank.questions:
        say(_wrap(f"Question {question.index + 1} of {total}. {question.text}"))
        if question.code:
            say(textwrap.indent(question.code, "    "))
        for number, choice in enumerate(question.choices, start=1):
            say(_wrap(f"{number}. {choice.text}", indent="  ", hang="     "))
        outcome = _ask(question, stdin, out, echo)
        if outcome is None:
            say(f"\nNo more answers to read; stopped after {answered} of {total} questions.")
            break
        answered += 1
        correct += outcome.correct
        _report(question, outcome, say)
        if store is not None and not _save(store, bank, question, outcome, say):
            unsaved += 1
        say("")
    say(f"Score: {correct} / {total}")
    if unsaved:
        say(
            f"{unsaved} of your answers could not be saved to {store.path}. Fix: set "
            "FTLAB_PROGRESS to a file in a folder you can write to, and take the quiz again."
        )
    return TerminalResult(correct, answered, total, unsaved)


def _ask(question: Question, stdin: TextIO, out: TextIO, echo: bool) -> Outcome | None:
    prompt = {
        "multiple_choice": f"Your answer (1-{len(question.choices)}): ",
        "many_choice": "Your answers (every right number, e.g. 1 3): ",
        "numeric": "Your answer (a number): ",
    }[question.type]
    while True:
        out.write(prompt)
        out.flush()
        line = stdin.readline()
        if not line:
            out.write("\n")
            return None
        if echo:
            out.write(line if line.endswith("\n") else line + "\n")
        try:
            return question.grade(_parse(question, line))
        except ValueError as error:
            out.write(f"  {error}; try again.\n")


def _parse(question: Question, line: str) -> int | list[int] | float:
    if question.type == "numeric":
        return parse_number(line)
    tokens = [t for t in re.split(r"[\s,;]+", line.strip()) if t]
    if not tokens:
        raise ValueError("type the number of an option")
    if not all(t.isdigit() for t in tokens):
        raise ValueError(f"{line.strip()!r} is not an option number")
    numbers = [int(t) for t in tokens]
    bad = [n for n in numbers if not 1 <= n <= len(question.choices)]
    if bad:
        raise ValueError(f"there is no option {bad[0]}; choose 1 to {len(question.choices)}")
    if question.type == "multiple_choice":
        if len(numbers) != 1:
            raise ValueError("this question has one right answer: type one number")
        return numbers[0] - 1
    return [n - 1 for n in numbers]


def _report(question: Question, outcome: Outcome, say: Say) -> None:
    """The verdict and the explanations; after a wrong or partly right answer, the right one.

    The terminal gives one try, so a partly right answer (every ticked option right, some
    missing) is called that, not "right so far" as in the widget, where one can tick more.
    Explanations of ticked options carry the option's number and text, as the widget shows.
    """
    headline = outcome.headline
    if outcome.partial:
        missed = f"{outcome.missed} right option{'s' if outcome.missed != 1 else ''}"
        headline = f"Partly right: every option you ticked is right, but you missed {missed}."
    if question.type == "many_choice" and isinstance(outcome.answer, list):
        say(_wrap(headline, indent="  ", hang="  "))
        for index, feedback in zip(outcome.answer, outcome.feedback, strict=True):
            text = question.choices[index].text.rstrip(".")
            say(_wrap(f"{index + 1}. {text}: {feedback}", indent="  ", hang="     "))
    else:
        say(_wrap(f"{headline} " + " ".join(outcome.feedback), indent="  ", hang="  "))
    if not outcome.correct:
        say(_wrap(f"The right answer: {question.right_answer_text()}", indent="  ", hang="  "))


def _save(store: ProgressStore, bank: Bank, question: Question, outcome: Outcome, say: Say) -> bool:
    """Record one answer (False: it could not be written); a ProgressWarning goes to
    `ftlab quiz`, which prints it on stderr."""
    try:
        store.record(
            bank.name,
            question.index,
            question.text,
            outcome.answer,
            outcome.correct,
            options=question.options_key,
        )
    except OSError as error:
        say(f"  (could not save your answer to {store.path}: {error.strerror or error})")
        return False
    return True


def _printer(out: TextIO) -> Say:
    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    return say


def _wrap(text: str, indent: str = "", hang: str = "   ") -> str:
    return textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=hang)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
