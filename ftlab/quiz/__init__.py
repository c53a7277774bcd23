"""Quizzes for the course: jupyterquiz-format banks, a notebook widget, a terminal runner.

`show_quiz` is imported lazily so that `ftlab quiz` in a terminal never loads ipywidgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ftlab.quiz.bank import Bank, BankError, Outcome, Question, list_banks, load_bank, quiz_dir
from ftlab.quiz.progress import ProgressStore, ProgressWarning, progress_path

if TYPE_CHECKING:
    from ftlab.quiz.widget import QuizWidget, show_quiz

__all__ = [
    "Bank",
    "BankError",
    "Outcome",
    "ProgressStore",
    "ProgressWarning",
    "Question",
    "QuizWidget",
    "list_banks",
    "load_bank",
    "progress_path",
    "quiz_dir",
    "show_quiz",
]


def __getattr__(name: str) -> Any:
    if name in ("show_quiz", "QuizWidget"):
        from ftlab.quiz import widget

        return getattr(widget, name)
    raise AttributeError(f"module 'ftlab.quiz' has no attribute {name!r}")
