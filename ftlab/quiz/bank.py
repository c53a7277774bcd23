"""Question banks: load, validate and grade quizzes stored as jupyterquiz JSON.

A bank is a JSON list of questions in jupyterquiz's schema, so the same file
also opens in jupyterquiz (`display_quiz("bank.json")`). Three types:

- `multiple_choice`: one right option; each option is
  `{"answer": str, "correct": bool, "feedback": str}`.
- `many_choice`: the same options, the learner ticks every right one.
- `numeric`: answers `{"type": "value", "value": x, ...}`,
  `{"type": "range", "range": [lo, hi], ...}` (lo included, hi excluded, as in
  jupyterquiz) and one `{"type": "default", "feedback": str}`; optional
  `"precision"` (significant digits both sides are rounded to before comparing).

Grading lives here, not in the widget, so the notebook widget and the terminal
runner give exactly the same verdicts and explanations.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ftlab.paths import data_dir

QuestionType = Literal["multiple_choice", "many_choice", "numeric"]
QUESTION_TYPES: tuple[str, ...] = ("multiple_choice", "many_choice", "numeric")
# Keys jupyterquiz understands; anything else is most likely a typo ("feeback").
QUESTION_KEYS = {"question", "type", "answers", "code", "precision", "answer_cols", "points"}
CHOICE_KEYS = {"answer", "correct", "feedback", "code"}
NUMERIC_KEYS = {"type", "value", "range", "correct", "feedback"}
# Spelling for bank titles, which are derived from file names (the schema has no title field).
TITLE_WORDS = {"fine tuning": "fine-tuning", "api": "API", "lora": "LoRA", "rag": "RAG"}


class BankError(ValueError):
    """A question bank is missing, unreadable or does not follow the schema."""


@dataclass(frozen=True)
class Choice:
    text: str
    correct: bool
    feedback: str


@dataclass(frozen=True)
class NumericAnswer:
    kind: Literal["value", "range", "default"]
    feedback: str
    correct: bool = False
    value: float | None = None
    low: float | None = None
    high: float | None = None

    def matches(self, number: float, precision: int | None) -> bool:
        if self.kind == "value":
            assert self.value is not None
            expected = round_significant(self.value, precision)
            return math.isclose(number, expected, rel_tol=1e-9, abs_tol=1e-12)
        if self.kind == "range":
            assert self.low is not None and self.high is not None
            return self.low <= number < self.high
        return False


@dataclass(frozen=True)
class Outcome:
    """The verdict on one answer: right or not, and the explanations to show."""

    correct: bool
    feedback: tuple[str, ...]
    answer: int | list[int] | float  # as stored in the progress file
    partial: bool = False  # many_choice: every ticked option is right, but some are missing
    missed: int = 0  # many_choice: how many right options were not ticked

    @property
    def headline(self) -> str:
        """For the widget, where the learner may tick more and check again."""
        if self.correct:
            return "Correct!"
        return "Right so far." if self.partial else "Not quite."

    @property
    def to_find(self) -> str | None:
        """The widget's nudge after a partly right answer (the terminal gives one try and
        shows the right answer instead)."""
        if not self.partial:
            return None
        return f"You have not ticked every right option yet: {self.missed} more to find."


@dataclass(frozen=True)
class Question:
    index: int
    text: str
    type: QuestionType
    choices: tuple[Choice, ...] = ()
    numeric: tuple[NumericAnswer, ...] = ()
    precision: int | None = None
    code: str | None = None

    @property
    def correct_choices(self) -> list[int]:
        return [i for i, choice in enumerate(self.choices) if choice.correct]

    @property
    def options_key(self) -> str | None:
        """A fingerprint of the option texts in their order (None for a numeric question).

        Saved with each answer: an option index means nothing once the options have been
        reordered or reworded, so a saved answer whose key differs is not restored."""
        if not self.choices:
            return None
        texts = json.dumps([choice.text for choice in self.choices], ensure_ascii=False)
        return hashlib.sha256(texts.encode("utf-8")).hexdigest()[:16]

    def grade(self, answer: int | Iterable[int] | float) -> Outcome:
        """Grade an option index (multiple_choice), indices (many_choice) or a number."""
        if self.type == "multiple_choice":
            if not isinstance(answer, int) or not 0 <= answer < len(self.choices):
                raise ValueError(
                    f"answer must be an option index 0..{len(self.choices) - 1}, got {answer!r}"
                )
            choice = self.choices[answer]
            return Outcome(choice.correct, (choice.feedback,), answer)
        if self.type == "many_choice":
            if isinstance(answer, int | float | str):
                raise ValueError(f"answer must be a collection of option indices, got {answer!r}")
            chosen = sorted(set(answer))
            if not chosen:
                raise ValueError("choose at least one option")
            if chosen[0] < 0 or chosen[-1] >= len(self.choices):
                raise ValueError(
                    f"option indices run from 0 to {len(self.choices) - 1}, got {chosen}"
                )
            right = set(self.correct_choices)
            feedback = tuple(self.choices[i].feedback for i in chosen)
            missed = len(right - set(chosen))
            partial = bool(missed) and right.issuperset(chosen)
            return Outcome(set(chosen) == right, feedback, chosen, partial=partial, missed=missed)
        if not _is_number(answer) or not math.isfinite(answer):  # type: ignore[arg-type]
            raise ValueError(f"answer must be a finite number, got {answer!r}")
        number = round_significant(float(answer), self.precision)
        for option in self.numeric:
            if option.matches(number, self.precision):
                return Outcome(option.correct, (option.feedback,), float(answer))
        default = next(
            (a.feedback for a in self.numeric if a.kind == "default"),
            "That is not the number we are looking for. Try again.",
        )
        return Outcome(False, (default,), float(answer))

    def right_answer_text(self) -> str:
        """The right answer, in words (the terminal runner shows it after a wrong try)."""
        if self.type == "numeric":
            for option in self.numeric:
                if option.correct and option.kind == "value":
                    return format_number(option.value)  # type: ignore[arg-type]
                if option.correct and option.kind == "range":
                    low, high = format_number(option.low), format_number(option.high)  # type: ignore[arg-type]
                    return f"at least {low} and below {high}"
            return "(no right answer given in the bank)"
        return self.answer_text(self.correct_choices)

    def answer_text(self, answer: int | Iterable[int] | float) -> str:
        """An answer as the quiz shows it: option numbers from 1 with their text, or a number
        written as `format_number` writes it. Raises ValueError for an option that does not
        exist (a saved answer to a question whose options have since changed, say)."""
        if self.type == "numeric":
            if not _is_number(answer):
                raise ValueError(f"not a number: {answer!r}")
            return format_number(answer)  # type: ignore[arg-type]
        indices = list(answer) if isinstance(answer, list | tuple) else [answer]
        if not indices or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(self.choices)
            for i in indices
        ):
            raise ValueError(f"no such option(s): {answer!r}")
        if len(indices) == 1:
            return f"{indices[0] + 1}. {self.choices[indices[0]].text}"
        return "; ".join(f"{i + 1}. {self.choices[i].text.rstrip('.')}" for i in indices)


@dataclass(frozen=True)
class Bank:
    name: str
    path: Path
    questions: tuple[Question, ...]

    @property
    def title(self) -> str:
        """A readable title from the file name: '03_local_lora' -> 'Local LoRA'."""
        words = re.sub(r"^\d+_", "", self.name).replace("_", " ").strip()
        for plain, proper in TITLE_WORDS.items():
            words = re.sub(rf"\b{plain}\b", proper, words)
        return words[:1].upper() + words[1:]


def round_significant(number: float, precision: int | None) -> float:
    """Round to `precision` significant digits (jupyterquiz's meaning of "precision")."""
    if precision is None or number == 0 or not math.isfinite(number):
        return number
    return float(f"{number:.{precision}g}")


# A comma may only separate thousands: 1,500 or 12,345,678.5, never 0,85 or 538,6.
THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2}(,\d{3})+(\.\d*)?([eE][+-]?\d+)?")
# Where a dot separates thousands (144.000 in much of Europe), a number reads two ways.
DOT_THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2}\.\d{3}")


def parse_number(text: str) -> float:
    """Read a learner's number: "144000", "144,000", "1.5e3", a fraction "3/4" or "85 %"
    (a percent sign is dropped: the questions that want a percentage ask for it).

    A comma is read only as a thousands separator (groups of three digits: 1,234 or
    12,345,678). A decimal comma ("0,85", "538,6") is refused rather than misread as 85 or
    5386: the ValueError asks for a dot. So is "144.000", which is 144 thousand where a dot
    groups thousands and 144 elsewhere: the ValueError asks for one of the two."""
    cleaned = text.strip().replace("_", "").replace(" ", "").removesuffix("%")
    if not cleaned:
        raise ValueError("type a number first")
    if any("," in part and not THOUSANDS.fullmatch(part) for part in cleaned.split("/")):
        raise ValueError(
            f"{text.strip()!r} is not a number here: use a dot for decimals, as in 0.85 "
            "(a comma only separates thousands, as in 1,500)"
        )
    if DOT_THOUSANDS.fullmatch(cleaned):
        whole = cleaned.replace(".", "")
        decimal = cleaned.rstrip("0").rstrip(".") if cleaned.endswith("0") else f"{cleaned}0"
        raise ValueError(
            f"{text.strip()!r} reads two ways: write {whole} (or {format_number(float(whole))}) "
            f"for thousands, or {decimal} for a decimal"
        )
    cleaned = cleaned.replace(",", "")
    try:
        if cleaned.count("/") == 1:
            top, bottom = cleaned.split("/")
            number = float(top) / float(bottom)
        else:
            number = float(cleaned)
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"{text.strip()!r} is not a number (write it like 1500, 1,500 or 3/4)"
        ) from None
    if not math.isfinite(number):
        raise ValueError(f"{text.strip()!r} is not a finite number")
    return number


def format_number(number: float) -> str:
    return f"{number:,.0f}" if float(number).is_integer() else f"{number:,}"


def quiz_dir() -> Path:
    """Where the course's banks live: `data/quizzes/` (FTLAB_DATA moves `data/`)."""
    return data_dir() / "quizzes"


def list_banks(folder: Path | None = None) -> list[str]:
    """Names of the banks available (file names without `.json`), sorted."""
    folder = folder or quiz_dir()
    return sorted(path.stem for path in folder.glob("*.json")) if folder.is_dir() else []


def bank_path(name: str, folder: Path | None = None) -> Path:
    """Resolve a bank name ("quick_check") or a path to a `.json` file."""
    candidate = Path(name)
    if candidate.suffix == ".json" and candidate.is_file():
        return candidate
    path = (folder or quiz_dir()) / f"{name.removesuffix('.json')}.json"
    if not path.is_file():
        available = ", ".join(list_banks(folder)) or "none"
        raise BankError(f"no quiz bank named {name!r} in {path.parent} (available: {available})")
    return path


def load_bank(name: str | Path, folder: Path | None = None) -> Bank:
    """Load and validate a bank by name or path; BankError says what is wrong and where."""
    path = bank_path(str(name), folder)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise BankError(
            f"{path}: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise BankError(f"{path}: cannot read the file: {error}") from error
    return parse_bank(data, path)


def parse_bank(data: Any, path: Path) -> Bank:
    if not isinstance(data, list) or not data:
        raise BankError(
            f"{path}: a bank must be a non-empty JSON list of questions "
            f"(jupyterquiz format), got {type(data).__name__}"
        )
    questions = tuple(_parse_question(item, i, path) for i, item in enumerate(data))
    return Bank(name=path.stem, path=path, questions=questions)


def _parse_question(item: Any, index: int, path: Path) -> Question:
    where = f"{path}: question {index}"

    def fail(problem: str) -> BankError:
        return BankError(f"{where}: {problem}")

    if not isinstance(item, dict):
        raise fail(f"must be a JSON object, got {type(item).__name__}")
    text = item.get("question")
    if not isinstance(text, str) or not text.strip():
        raise fail('"question" must be a non-empty string')
    where = f"{where} ({_short(text)})"
    unknown = sorted(set(item) - QUESTION_KEYS)
    if unknown:
        raise fail(f"unknown key(s) {unknown}; allowed: {sorted(QUESTION_KEYS)}")
    kind = item.get("type")
    if kind not in QUESTION_TYPES:
        raise fail(f'"type" must be one of {list(QUESTION_TYPES)}, got {kind!r}')
    answers = item.get("answers")
    if not isinstance(answers, list) or not answers:
        raise fail('"answers" must be a non-empty list')
    code = item.get("code")
    if code is not None and not isinstance(code, str):
        raise fail('"code" must be a string')
    if kind == "numeric":
        precision = item.get("precision")
        if precision is not None and (not isinstance(precision, int) or precision < 1):
            raise fail(f'"precision" must be a positive whole number, got {precision!r}')
        numeric = tuple(_parse_numeric(a, j, fail) for j, a in enumerate(answers))
        if not any(a.correct for a in numeric):
            raise fail("no answer is marked correct")
        if sum(a.kind == "default" for a in numeric) != 1:
            raise fail('needs exactly one {"type": "default", "feedback": ...} answer')
        return Question(index, text, kind, numeric=numeric, precision=precision, code=code)
    choices = tuple(_parse_choice(a, j, fail) for j, a in enumerate(answers))
    right = sum(choice.correct for choice in choices)
    if len(choices) < 2:
        raise fail("a choice question needs at least two options")
    if kind == "multiple_choice" and right != 1:
        raise fail(f"a multiple_choice question needs exactly one correct option, has {right}")
    if kind == "many_choice" and right < 1:
        raise fail("a many_choice question needs at least one correct option")
    return Question(index, text, kind, choices=choices, code=code)


def _parse_choice(item: Any, index: int, fail: Callable[[str], BankError]) -> Choice:
    if not isinstance(item, dict):
        raise fail(f"answer {index} must be a JSON object")
    unknown = sorted(set(item) - CHOICE_KEYS)
    if unknown:
        raise fail(f"answer {index}: unknown key(s) {unknown}; allowed: {sorted(CHOICE_KEYS)}")
    text, correct, feedback = item.get("answer"), item.get("correct"), item.get("feedback")
    if not isinstance(text, str) or not text.strip():
        raise fail(f'answer {index}: "answer" must be a non-empty string')
    if not isinstance(correct, bool):
        raise fail(f'answer {index} ({_short(text)}): "correct" must be true or false')
    if not isinstance(feedback, str) or not feedback.strip():
        raise fail(
            f'answer {index} ({_short(text)}): "feedback" must explain why this option '
            "is right or wrong"
        )
    return Choice(text, correct, feedback)


def _parse_numeric(item: Any, index: int, fail: Callable[[str], BankError]) -> NumericAnswer:
    if not isinstance(item, dict):
        raise fail(f"answer {index} must be a JSON object")
    unknown = sorted(set(item) - NUMERIC_KEYS)
    if unknown:
        raise fail(f"answer {index}: unknown key(s) {unknown}; allowed: {sorted(NUMERIC_KEYS)}")
    kind, feedback = item.get("type"), item.get("feedback")
    if not isinstance(feedback, str) or not feedback.strip():
        raise fail(f'answer {index}: "feedback" must be a non-empty string')
    if kind == "default":
        return NumericAnswer("default", feedback)
    correct = item.get("correct")
    if not isinstance(correct, bool):
        raise fail(f'answer {index}: "correct" must be true or false')
    if kind == "value":
        value = item.get("value")
        if not _is_number(value):
            raise fail(f'answer {index}: "value" must be a number, got {value!r}')
        return NumericAnswer("value", feedback, correct, value=float(value))
    if kind == "range":
        bounds = item.get("range")
        if (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(_is_number(b) for b in bounds)
            or bounds[0] >= bounds[1]
        ):
            raise fail(
                f'answer {index}: "range" must be [low, high] with low < high, got {bounds!r}'
            )
        return NumericAnswer(
            "range", feedback, correct, low=float(bounds[0]), high=float(bounds[1])
        )
    raise fail(f'answer {index}: "type" must be "value", "range" or "default", got {kind!r}')


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _short(text: str, limit: int = 50) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
