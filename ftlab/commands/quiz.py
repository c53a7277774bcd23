"""`ftlab quiz`: take a course quiz in the terminal, list the quizzes, show your record."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftlab.quiz.bank import Question
    from ftlab.quiz.progress import ProgressStore


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quiz",
        help="take a quiz in the terminal, list the quizzes, show your progress",
        description="Take one of the course's quizzes in the terminal. Answers are read from "
        "stdin, so they can be piped in. Your answers are saved to the same progress "
        "file the notebook quizzes use, in your own data folder ($FTLAB_PROGRESS to move "
        "it); --progress shows where.",
    )
    parser.add_argument("name", nargs="?", help="the quiz to take, e.g. quick_check (see --list)")
    parser.add_argument("--list", action="store_true", help="list the available quizzes")
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show your quiz record (with NAME: question by question)",
    )
    parser.add_argument("--no-save", action="store_true", help="do not record the answers")
    parser.add_argument(
        "--reset",
        action="store_true",
        help="forget your saved answers to quiz NAME, to take it afresh",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ftlab.quiz.bank import BankError, list_banks, load_bank, quiz_dir
    from ftlab.quiz.progress import ProgressStore

    if args.list:
        if args.name or args.progress or args.reset:  # what a learner meant is not ignored
            print(
                "ftlab quiz: --list takes no quiz name and no --progress; use one of "
                "`ftlab quiz --list`, `ftlab quiz --progress [NAME]` or `ftlab quiz NAME`",
                file=sys.stderr,
            )
            return 2
        return _list(list_banks(), quiz_dir())
    if args.reset:
        return _reset(ProgressStore(), args.name, args.progress)
    if args.progress:
        return _progress(ProgressStore(), args.name)
    if not args.name:
        print(
            "ftlab quiz: name a quiz to take, e.g. `ftlab quiz quick_check` "
            f"(available: {', '.join(list_banks()) or 'none'})",
            file=sys.stderr,
        )
        return 2
    try:
        bank = load_bank(args.name)
    except BankError as error:
        print(f"ftlab quiz: {error}", file=sys.stderr)
        return 2
    from ftlab.quiz.terminal import run_terminal

    result = run_terminal(bank, None if args.no_save else ProgressStore())
    return 0 if result.finished and not result.unsaved else 1


def _reset(store: ProgressStore, name: str | None, progress: bool) -> int:
    from ftlab.quiz.bank import BankError, bank_path

    if not name or progress:
        print(
            "ftlab quiz: --reset needs the name of one quiz, e.g. `ftlab quiz --reset "
            "quick_check` (`ftlab quiz --progress` lists the quizzes you have answered)",
            file=sys.stderr,
        )
        return 2
    try:
        name = bank_path(name).stem  # a path to a bank file is recorded under its stem
    except BankError as error:
        if not store.bank(name):  # a bank since removed can still be forgotten
            print(f"ftlab quiz: {error}", file=sys.stderr)
            return 2
    forgotten = store.forget(name)
    if forgotten:
        print(f"Forgot your {forgotten} saved answer(s) to {name} in {store.path}.")
    else:
        print(f"Nothing saved for {name} in {store.path}: nothing to forget.")
    return 0


def _list(names: list[str], folder: Path) -> int:
    from ftlab.quiz.bank import BankError, load_bank

    if not names:
        print(f"no quizzes in {folder}")
        return 1
    status = 0
    for name in names:
        try:
            bank = load_bank(name)
            count = len(bank.questions)
            print(f"{name:<28} {count} question{'s' if count != 1 else ''}  ({bank.title})")
        except BankError as error:
            print(f"{name:<28} BROKEN: {error}")
            status = 1
    return status


def _progress(store: ProgressStore, name: str | None) -> int:
    from ftlab.quiz.bank import BankError, bank_path

    path = None
    if name:
        try:
            path = bank_path(name)
            name = path.stem  # a path to a bank file is recorded under its stem
        except BankError as error:
            if not store.bank(name):  # the records of a bank since removed are still shown
                print(f"ftlab quiz: {error}", file=sys.stderr)
                return 2
    print(f"Quiz progress ({store.path})")
    return _bank_progress(store, name, path) if name else _summary(store)


def _bank_progress(store: ProgressStore, name: str, path: Path | None) -> int:
    from ftlab.quiz.bank import BankError, load_bank

    records = store.bank(name)
    if not records:
        print(f"  nothing recorded for {name!r} yet")
        return 0
    questions: tuple[Question, ...] | None = None
    if path is not None:
        try:
            questions = load_bank(path).questions
        except BankError:  # a broken bank: its records are still shown, without the options
            pass
    for key, entry in sorted(records.items(), key=lambda item: int(item[0])):
        index = int(key)
        mark = "right" if entry["correct"] else "wrong"
        print(
            f"  Q{index + 1}: {mark:<5} after {entry['attempts']} attempt(s): {entry['question']}"
        )
        question = questions[index] if questions and index < len(questions) else None
        gone = "the quiz is no longer here" if questions is None else "the quiz has changed since"
        print(f"      last answer: {_answer_text(entry, question, gone)}")
    return 0


def _answer_text(entry: dict[str, Any], question: Question | None, gone: str) -> str:
    """The saved answer as the quiz shows it: option numbers from 1 with their text, numbers
    as the quiz writes them. Without the question as it was answered, only the numbers."""
    from ftlab.quiz.bank import format_number
    from ftlab.quiz.progress import record_matches

    answer = entry["last_answer"]
    if question is not None and record_matches(entry, question):
        try:
            return question.answer_text(answer)
        except ValueError:  # the type of question changed: fall through
            pass
    if isinstance(answer, float):
        return format_number(answer)
    numbers = answer if isinstance(answer, list) else [answer]
    options = ", ".join(str(number + 1) for number in numbers)
    return f"option{'s' if len(numbers) != 1 else ''} {options} ({gone})"


def _summary(store: ProgressStore) -> int:
    from ftlab.quiz.bank import BankError, list_banks, load_bank

    summaries = {row.bank: row for row in store.summary()}
    names = sorted(set(list_banks()) | set(summaries))
    print(f"  {'quiz':<28} {'right':>7} {'answered':>9} {'attempts':>9}  last activity")
    for bank_name in names:
        try:
            total = len(load_bank(bank_name).questions)
        except BankError:
            total = 0
        row = summaries.get(bank_name)
        of = f"/{total}" if total else ""
        if row is None:
            print(f"  {bank_name:<28} {'-':>7} {'0' + of:>9} {0:>9}  never")
            continue
        print(
            f"  {bank_name:<28} {f'{row.correct}{of}':>7} {f'{row.answered}{of}':>9} "
            f"{row.attempts:>9}  {row.updated[:16].replace('T', ' ')} UTC"
        )
    return 0
