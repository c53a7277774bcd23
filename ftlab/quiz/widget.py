"""The notebook quiz: ipywidgets that a learner (or a test) clicks through.

    from ftlab.quiz import show_quiz
    show_quiz("quick_check")

Each question gets its own box: radio buttons (one right option), tick boxes
(several right options) or a text box (a number; Enter checks it too); a "Check"
button; and an HTML feedback area that says Correct / Not quite and explains the
option(s) chosen. A score line counts the questions whose latest check was right;
choosing another answer after a check takes that verdict away until Check is pressed again.
Answers are saved to the progress file (`ftlab.quiz.progress`), and a new widget
for the same bank (after a kernel restart, say) shows the learner's last answers
again, unless the question or its options have changed since. Checking the same
answer again (Check after Enter, say) shows the feedback but is not a new attempt.

Tests drive it like a learner: `quiz.questions[0].choose(1)`, then
`quiz.questions[0].check_button.click()` (or `.check()`), then read
`quiz.questions[0].feedback.value`. Setting `number.value` is what the browser does
when the learner presses Enter (or leaves the box): it checks the answer.
"""

from __future__ import annotations

import html
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ipywidgets as widgets

from ftlab.quiz.bank import Bank, Outcome, Question, format_number, load_bank, parse_number
from ftlab.quiz.progress import ProgressStore, record_matches

STYLE = """<style>
.ftlab-quiz { max-width: 780px; }
.ftlab-quiz .ftlab-title { font-size: 1.15em; font-weight: 600; }
.ftlab-quiz .ftlab-question {
  border: 1px solid var(--jp-border-color2, #d0d7de); border-radius: 8px;
  padding: 8px 14px 12px 14px; margin: 6px 0;
}
.ftlab-quiz .ftlab-qtext { font-size: 1.05em; line-height: 1.4; }
.ftlab-quiz .widget-radio-box label, .ftlab-quiz .widget-checkbox label {
  white-space: normal; line-height: 1.35; overflow: visible; height: auto;
}
.ftlab-quiz .widget-radio-box label {
  display: flex; align-items: flex-start; gap: 2px; margin: 3px 0;
}
.ftlab-quiz .widget-radio-box label input { order: -1; flex: none; float: none;
  height: 1.35em; margin: 0 4px 0 2px; }
.ftlab-quiz .widget-checkbox { height: auto; min-height: 28px; }
.ftlab-feedback { padding: 8px 12px; border-radius: 4px; line-height: 1.4; }
.ftlab-feedback ul { margin: 4px 0 0 0; padding-left: 20px; }
.ftlab-feedback.ftlab-correct { background: #e6f4ea; border-left: 5px solid #1e8e3e;
  color: #0b3d1b; }
.ftlab-feedback.ftlab-wrong { background: #fdecea; border-left: 5px solid #d93025;
  color: #5c1410; }
.ftlab-feedback.ftlab-note { background: #fff8e1; border-left: 5px solid #f9a825;
  color: #4a3b00; }
.ftlab-quiz .ftlab-score { font-weight: 600; font-size: 1.05em; }
</style>"""


def text_html(text: str) -> str:
    """Escape bank text for HTML and show `backticks` as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def plain_label(text: str) -> str:
    """Bank text for a radio button or tick box, whose labels are plain text: the backticks
    that mark code in the bank would show literally, so they are dropped."""
    return re.sub(r"`([^`]+)`", r"\1", text)


class QuestionWidget(widgets.VBox):
    """One question: its input, a Check button and the feedback area."""

    def __init__(self, question: Question, total: int, quiz: QuizWidget) -> None:
        self.question = question
        self.quiz = quiz
        self.outcome: Outcome | None = None
        self._recorded: Any = None  # the answer last saved: checking it again is no new try
        self._quiet = False  # set while the code (not the learner) fills in an answer
        self.heading = widgets.HTML(
            f'<div class="ftlab-qtext"><b>Question {question.index + 1} of {total}.</b> '
            f"{text_html(question.text)}</div>"
        )
        parts: list[widgets.Widget] = [self.heading]
        if question.code:
            parts.append(widgets.HTML(f"<pre>{html.escape(question.code)}</pre>"))
        self.radio: widgets.RadioButtons | None = None
        self.boxes: list[widgets.Checkbox] = []
        self.number: widgets.Text | None = None
        if question.type == "multiple_choice":
            self.radio = widgets.RadioButtons(
                options=[(plain_label(c.text), i) for i, c in enumerate(question.choices)],
                value=None,
                layout=widgets.Layout(width="auto"),
            )
            self.radio.observe(self._changed, names="value")
            self.input: widgets.Widget = self.radio
        elif question.type == "many_choice":
            self.boxes = [
                widgets.Checkbox(
                    value=False,
                    description=plain_label(c.text),
                    indent=False,
                    layout=widgets.Layout(width="auto"),
                )
                for c in question.choices
            ]
            for box in self.boxes:
                box.observe(self._changed, names="value")
            self.input = widgets.VBox(
                [widgets.HTML("<i>Tick every right option.</i>"), *self.boxes]
            )
        else:
            # Text, not FloatText: people type "144,000" or "3/4", which a number field drops
            # silently, and an empty box must read as "no answer yet", not as 0.
            # continuous_update=False: the value reaches the kernel when the learner presses
            # Enter (or leaves the box), and that checks the answer like the Check button.
            self.number = widgets.Text(
                placeholder="type a number, e.g. 1,500",
                description="Your answer:",
                style={"description_width": "initial"},
                continuous_update=False,
            )
            self.number.observe(self._submitted, names="value")
            self.input = self.number
        self.check_button = widgets.Button(
            description="Check",
            # The tooltip is also what a screen reader names the button by.
            tooltip=f"Check your answer to question {question.index + 1}",
            button_style="primary",
            icon="check",
            layout=widgets.Layout(width="110px"),
        )
        self.check_button.on_click(lambda _button: self.check())
        self.feedback = widgets.HTML("")
        parts += [self.input, self.check_button, self.feedback]
        super().__init__(parts)
        self.add_class("ftlab-question")

    # -- driving it --------------------------------------------------------------------------
    def choose(self, *options: int | str | float) -> None:
        """Select an answer as a learner would.

        multiple_choice: one option, by index or by its exact text; many_choice: every option
        to tick (the others are unticked); numeric: the number (or the text to type).
        """
        if self.question.type == "numeric":
            if len(options) != 1:
                raise ValueError("a numeric question takes exactly one answer")
            value = options[0]
            self._fill_number(value if isinstance(value, str) else format_number(value))
            return
        indices = [self._option_index(option) for option in options]
        if self.radio is not None:
            if len(indices) != 1:
                raise ValueError("a multiple_choice question takes exactly one option")
            self.radio.value = indices[0]
        else:
            for i, box in enumerate(self.boxes):
                box.value = i in indices

    def current_answer(self) -> int | list[int] | float | None:
        """What is selected now (None when nothing is)."""
        if self.radio is not None:
            return self.radio.value
        if self.boxes:
            chosen = [i for i, box in enumerate(self.boxes) if box.value]
            return chosen or None
        assert self.number is not None
        return parse_number(self.number.value) if self.number.value.strip() else None

    def check(self) -> Outcome | None:
        """Grade the current answer, show the feedback, save it; None if nothing is chosen."""
        try:
            answer = self.current_answer()
        except ValueError as error:
            self._show_note(f"{error}.")
            return None
        if answer is None:
            self._show_note(
                "Choose an answer first, then press Check."
                if self.question.type != "numeric"
                else "Type a number first."
            )
            return None
        self.outcome = self.question.grade(answer)
        saved_note = ""
        if answer != self._recorded:
            saved, saved_note = self.quiz.save(self.question, self.outcome)
            if saved:
                self._recorded = answer
        self._show(self.outcome, note=saved_note)
        self.quiz.update_score()
        return self.outcome

    @property
    def feedback_text(self) -> str:
        """The feedback as plain text (what a learner reads)."""
        text = re.sub(r"<li>", "\n- ", self.feedback.value)
        text = re.sub(r"<div[^>]*>", " ", text)
        text = html.unescape(re.sub(r"<[^>]+>", "", text))
        return "\n".join(" ".join(line.split()) for line in text.splitlines()).strip()

    # -- internals --------------------------------------------------------------------------
    def restore(self, record: dict[str, Any]) -> None:
        """Show a saved answer again (after a restart); silently skip one that no longer fits."""
        answer = record.get("last_answer")
        try:
            self.outcome = self.question.grade(answer)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            return
        with self._by_code():
            if self.radio is not None:
                self.radio.value = answer
            elif self.boxes:
                for i, box in enumerate(self.boxes):
                    box.value = i in answer  # type: ignore[operator]
            elif self.number is not None:
                self.number.value = format_number(answer)  # type: ignore[arg-type]
        self._recorded = self.outcome.answer
        attempts = record.get("attempts", 1)
        self._show(
            self.outcome,
            note=f"Your saved answer ({attempts} attempt{'s' if attempts != 1 else ''} so far).",
        )

    def _submitted(self, change: dict[str, Any]) -> None:
        """Enter in the number box (or leaving it) checks the answer, as Check does."""
        if self._quiet:
            return
        if str(change["new"]).strip():
            self.check()
        else:
            self._changed(change)

    def _changed(self, _change: dict[str, Any]) -> None:
        """The learner chose another answer after a check: the verdict on screen (and in the
        score) was for the old one, so it goes until Check is pressed again."""
        if self._quiet or self.outcome is None:
            return
        try:
            answer = self.current_answer()
        except ValueError:
            answer = None
        if answer == self.outcome.answer:
            return
        self.outcome = None
        self._show_note("Your answer has changed: press Check to see whether it is right.")
        self.quiz.update_score()

    @contextmanager
    def _by_code(self) -> Iterator[None]:
        """Fill in an answer without it counting as the learner's change or Enter."""
        before, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = before

    def _fill_number(self, text: str) -> None:
        assert self.number is not None
        with self._by_code():
            self.number.value = text

    def _option_index(self, option: int | str | float) -> int:
        texts = [c.text for c in self.question.choices]
        if isinstance(option, int) and not isinstance(option, bool):
            if not 0 <= option < len(texts):
                raise ValueError(f"option {option} does not exist; options are 0..{len(texts) - 1}")
            return option
        if option in texts:
            return texts.index(option)
        raise ValueError(f"no option {option!r}; the options are {texts}")

    def _show(self, outcome: Outcome, note: str = "") -> None:
        kind = (
            "ftlab-correct"
            if outcome.correct
            else "ftlab-note"
            if outcome.partial
            else "ftlab-wrong"
        )
        if self.question.type == "many_choice" and isinstance(outcome.answer, list):
            items = [
                f"<li><i>{text_html(self.question.choices[i].text.rstrip('.'))}</i>: "
                f"{text_html(fb)}</li>"
                for i, fb in zip(outcome.answer, outcome.feedback, strict=False)
            ]
            if outcome.to_find:
                items.append(f"<li>{text_html(outcome.to_find)}</li>")
            body = f"<ul>{''.join(items)}</ul>"
        else:
            body = " ".join(text_html(fb) for fb in outcome.feedback)
        extra = (
            f'<div style="opacity: 0.75; margin-top: 4px">{html.escape(note)}</div>' if note else ""
        )
        self.feedback.value = (
            f'<div class="ftlab-feedback {kind}"><b>{outcome.headline}</b> {body}{extra}</div>'
        )

    def _show_note(self, message: str) -> None:
        self.feedback.value = f'<div class="ftlab-feedback ftlab-note">{html.escape(message)}</div>'


class QuizWidget(widgets.VBox):
    """A whole bank: a title, one QuestionWidget per question and the score line."""

    def __init__(self, bank: Bank, store: ProgressStore | None) -> None:
        self.bank = bank
        self.store = store
        self.heading = widgets.HTML(
            f'{STYLE}<div class="ftlab-title">Quiz: {html.escape(bank.title)}</div>'
        )
        self.questions = [QuestionWidget(q, len(bank.questions), self) for q in bank.questions]
        self.score = widgets.HTML()
        records: dict[str, dict[str, Any]] = {}
        if store is not None:
            records = store.bank(bank.name)  # warns (and moves the file aside) if corrupt
        for widget in self.questions:
            record = records.get(str(widget.question.index))
            if record and record_matches(record, widget.question):
                widget.restore(record)
        super().__init__([self.heading, *self.questions, self.score])
        self.add_class("ftlab-quiz")
        self.update_score()

    @property
    def correct(self) -> int:
        return sum(bool(q.outcome and q.outcome.correct) for q in self.questions)

    def update_score(self) -> None:
        self.score.value = (
            f'<div class="ftlab-score">Score: {self.correct} / {len(self.questions)}</div>'
        )

    def save(self, question: Question, outcome: Outcome) -> tuple[bool, str]:
        """Record an attempt: whether it was saved, and a note for the learner if it could not
        be saved cleanly."""
        if self.store is None:
            return False, ""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self.store.record(
                    self.bank.name,
                    question.index,
                    question.text,
                    outcome.answer,
                    outcome.correct,
                    options=question.options_key,
                )
            except OSError as error:
                return False, f"(Your answer could not be saved: {error}.)"
        return True, " ".join(str(w.message) for w in caught)


def show_quiz(
    bank_name: str, progress: bool = True, progress_file: str | None = None
) -> QuizWidget:
    """Build the quiz for a bank in `data/quizzes/` (or a path to a bank file).

    Leave it as the last line of a cell to display it. `progress=False` keeps no record;
    `progress_file` overrides where the record is kept (default: see ftlab.quiz.progress).
    """
    bank = load_bank(bank_name)
    store = ProgressStore(progress_file) if progress else None
    return QuizWidget(bank, store)
