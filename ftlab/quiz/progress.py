"""The learner's quiz record: a small JSON file that survives restarts and crashes.

Default location: `progress.json` in the learner's own data folder,
`platformdirs.user_data_path("ftlab")` (`~/.local/share/ftlab` on Linux,
`~/Library/Application Support/ftlab` on macOS). It is not in ftlab's cache folder
(`FTLAB_HOME`): a cache may be wiped, and a class shares one read-only `FTLAB_HOME`.
`FTLAB_PROGRESS` points it elsewhere (a shared JupyterHub home, a test's temp folder).
Older versions kept it in `FTLAB_HOME`; the first `ProgressStore()` that finds no file at
the new default copies the old one across (see `migrate_old_progress`). Layout:

    {"version": 1, "banks": {"quick_check": {"0": {
        "question": "What does fine-tuning do?", "options": "3f0c9a1d2b4e5f60",
        "attempts": 2, "last_answer": 0, "correct": true, "ever_correct": true,
        "updated": "2026-11-25T20:50:00+00:00"}}}}

`options` (a fingerprint of the option texts, `Question.options_key`; absent for numeric
questions and in files written before it existed) tells whether an option index still
means the option the learner chose: a saved answer whose fingerprint differs from the
bank's is not restored.

Every write goes to a temporary file in the same folder, is fsynced and then
renamed over the old file, so a crash leaves either the old record or the new
one, never half a file. A damaged file is renamed to
`progress.json.corrupt-<timestamp>` (kept for inspection), a warning says so,
and the quiz carries on instead of failing in the learner's notebook (see
`ProgressStore.load` for what is kept). NaN and Infinity are never written:
they are not JSON.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from ftlab.files import fsync_folder
from ftlab.paths import home_path

if TYPE_CHECKING:
    from ftlab.quiz.bank import Question

FORMAT_VERSION = 1
PROGRESS_FILE = "progress.json"
# Warnings point at the first caller outside this package (a notebook cell, say).
_QUIZ_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_answer(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_int(item) for item in value)
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


# What `record` writes in each question record: the meaning and the test of each field.
RECORD_FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "question": ("a string", lambda value: isinstance(value, str)),
    "attempts": ("a whole number above 0", lambda value: _is_int(value) and value > 0),
    "last_answer": ("an option index, a list of them or a finite number", _is_answer),
    "correct": ("true or false", lambda value: isinstance(value, bool)),
    "ever_correct": ("true or false", lambda value: isinstance(value, bool)),
    "updated": ("a string", lambda value: isinstance(value, str)),
}
# Fields a record may have: checked when present, kept when valid.
OPTIONAL_FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "options": ("a string", lambda value: isinstance(value, str)),
}

try:  # POSIX: serialise writers (two notebooks open at once); Windows simply skips it.
    import fcntl
except ImportError:  # pragma: no cover - not on the course's Linux/macOS machines
    fcntl = None  # type: ignore[assignment]


class ProgressWarning(UserWarning):
    """The progress file was unreadable and has been moved aside."""


def default_progress_path() -> Path:
    """The learner's own progress file, in their data folder; FTLAB_HOME does not move it."""
    return platformdirs.user_data_path("ftlab") / PROGRESS_FILE


def old_progress_path() -> Path:
    """Where versions before the move kept it: in ftlab's cache folder (FTLAB_HOME)."""
    return home_path() / PROGRESS_FILE


def progress_path() -> Path:
    """The progress file: $FTLAB_PROGRESS, else `default_progress_path()`."""
    override = os.environ.get("FTLAB_PROGRESS")
    return Path(override).expanduser() if override else default_progress_path()


def record_matches(record: dict[str, Any], question: Question) -> bool:
    """Whether a saved answer was given to this question as it is now: the same text and, in
    records that have a fingerprint of the options (files written before it have none), the
    same options in the same order. An option index means nothing once they have changed."""
    saved = record.get("options")
    return record.get("question") == question.text and (
        saved is None or saved == question.options_key
    )


@dataclass(frozen=True)
class BankSummary:
    bank: str
    answered: int
    correct: int
    attempts: int
    updated: str


class ProgressStore:
    """Read and update the progress file; every `record` is one atomic rewrite."""

    def __init__(self, path: Path | str | None = None) -> None:
        """`path` defaults to `progress_path()`; at the default location (no FTLAB_PROGRESS)
        a record left in the old location is copied across first."""
        self.path = Path(path) if path is not None else progress_path()
        self._lock_held = False
        if path is None and not os.environ.get("FTLAB_PROGRESS"):
            self.migrate_old_progress(old_progress_path())

    def migrate_old_progress(self, old: Path) -> bool:
        """Copy the record at `old` to `self.path` if there is none there yet; True if copied.

        Done once: afterwards a file exists at the new place. The copy is written to a
        temporary file and renamed into place under the writers' lock, so a notebook saving
        an answer at the same moment is never overwritten, and a crash leaves no half file.
        The old file is left as it was. A file someone else owns is not copied: that is a
        class's shared FTLAB_HOME, whose one record mixes every learner's answers.
        """
        try:
            if not old.is_file() or self.path.exists() or not _owned_by_me(old):
                return False
        except OSError:  # a folder we may not look into: nothing we could copy
            return False
        try:
            with self._locked():
                if self.path.exists():  # another notebook got there first
                    return False
                self._write_bytes(old.read_bytes())
        except OSError as error:
            self._warn(f"could not take over your earlier answers from {old} ({error})")
            return False
        return True

    def load(self) -> dict[str, Any]:
        """The whole record: empty when there is no file; a damaged file is repaired first.

        A file that is not UTF-8 or not JSON, or whose top level is wrong, is moved aside
        whole and a fresh record starts. A file in which only some question records are
        damaged (a hand edit, a field of the wrong type) is moved aside too, but its valid
        records are written back, so one bad entry does not wipe the learner's other
        answers; the original stays in the `.corrupt-` file. The repair runs under the
        writers' lock on a fresh read, so it cannot move aside an answer that another
        notebook saved in the meantime.
        """
        data, problem = self._read()
        if problem is None:
            return data
        try:
            with self._locked():
                data, problem = self._read()
                if problem is not None:
                    self._repair(data, problem)
        except OSError as error:  # cannot even take the lock (a read-only folder, say)
            self._warn(f"{problem}; could not repair it ({error})")
        return data

    def bank(self, bank: str) -> dict[str, dict[str, Any]]:
        """Per-question records of one bank, keyed by question index as a string."""
        return self.load()["banks"].get(bank, {})

    def record(
        self,
        bank: str,
        index: int,
        question: str,
        answer: Any,
        correct: bool,
        options: str | None = None,
    ) -> dict[str, Any]:
        """Add one attempt at question `index` of `bank` and save at once.

        `options` is the question's `options_key`: when the saved one differs (the options
        were reordered or reworded), the earlier attempts were at another question and the
        record starts again, as it does when the question's text changed."""
        with self._locked():
            data = self.load()
            entry = data["banks"].setdefault(bank, {}).get(str(index))
            saved_options = None if entry is None else entry.get("options")
            if (
                entry is None
                or entry.get("question") != question
                or (saved_options is not None and options is not None and saved_options != options)
            ):
                entry = {"question": question, "attempts": 0, "ever_correct": False}
            entry.pop("options", None)
            if options is not None:
                entry["options"] = options
            entry.update(
                attempts=entry["attempts"] + 1,
                last_answer=answer,
                correct=bool(correct),
                ever_correct=bool(entry.get("ever_correct") or correct),
                updated=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            data["banks"][bank][str(index)] = entry
            self._write(data)
        return entry

    def forget(self, bank: str) -> int:
        """Delete every record of one bank (to take that quiz afresh); the number deleted.
        Under the writers' lock, as one atomic write: another bank's answer saved at the same
        moment stays."""
        with self._locked():
            data = self.load()
            records = data["banks"].pop(bank, {})
            if records:
                self._write(data)
        return len(records)

    def summary(self) -> list[BankSummary]:
        """One line per bank the learner has touched, sorted by bank name."""
        return _summarise(self.load())

    def inspect(self) -> tuple[list[BankSummary] | None, str | None]:
        """The summary and what is wrong with the file (None when nothing is), read once and
        changing nothing, even in a damaged file (its valid records count): for reading other
        people's records, such as a class's. The summary is None when there is no file (the
        learner has answered nothing yet) or it cannot be read (which is a problem)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError as error:  # a private home folder, say
            return None, f"cannot read {self.path} ({error.strerror or error})"
        data, problem = _parse(raw)
        return _summarise(data), problem

    def _read(self) -> tuple[dict[str, Any], str | None]:
        """What is valid in the file, and what is wrong with it (None when nothing is)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return _empty(), None
        except OSError as error:  # e.g. no permission: carry on without the record
            self._warn(f"cannot be read ({error}); earlier answers are not shown")
            return _empty(), None
        return _parse(raw)

    def _write(self, data: dict[str, Any]) -> None:
        text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n"
        self._write_bytes(text.encode("utf-8"))

    def _write_bytes(self, content: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        fsync_folder(self.path.parent)

    def _repair(self, data: dict[str, Any], problem: str) -> None:
        """Move the damaged file aside and write back the valid records in `data`."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        counter = 1
        while target.exists():
            counter += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{counter}")
        try:
            os.replace(self.path, target)
        except OSError as error:
            self._warn(f"{problem}; could not move it aside ({error}), so it will be overwritten")
            return
        kept = sum(len(questions) for questions in data["banks"].values())
        outcome = f"kept its {kept} valid record(s)" if kept else "started a fresh record"
        try:
            if kept:
                self._write(data)
        except OSError as error:
            outcome = f"could not write back its {kept} valid record(s) ({error})"
        self._warn(f"{problem}; moved it to {target} and {outcome}")

    def _warn(self, message: str) -> None:
        warnings.warn(
            f"quiz progress file {self.path} {message}",
            ProgressWarning,
            stacklevel=_caller_stacklevel(),
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Re-entrant: `record` holds the lock while `load` repairs, and a second flock on
        # the same file from this process would wait for itself.
        if fcntl is None or self._lock_held:
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._lock_held = True
            try:
                yield
            finally:
                self._lock_held = False
                fcntl.flock(lock, fcntl.LOCK_UN)


def _caller_stacklevel() -> int:
    """The `stacklevel` that makes a warning raised in this package point at its caller.

    Counted for a `warnings.warn` made by the function that calls this one: the widget, the
    terminal runner and the store reach `_warn` through different numbers of frames."""
    frame = sys._getframe(1)  # the function about to call warnings.warn: stacklevel 1
    level = 1
    while frame.f_back is not None and (
        os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _QUIZ_PACKAGE
    ):
        frame = frame.f_back
        level += 1
    return level


def _owned_by_me(path: Path) -> bool:
    getuid = getattr(os, "getuid", None)
    return getuid is None or path.stat().st_uid == getuid()


def _empty() -> dict[str, Any]:
    return {"version": FORMAT_VERSION, "banks": {}}


def _valid_records(data: Any) -> tuple[dict[str, Any], str | None]:
    """The record rebuilt from its valid question records, and what the damaged ones were.

    Only the fields `record` writes are kept, so nothing unchecked (a NaN under an unknown
    key, say) can reach the writer. Raises ValueError when the top level is wrong: then
    there is nothing to keep.
    """
    if not isinstance(data, dict) or not isinstance(data.get("banks"), dict):
        raise ValueError('expected a JSON object with a "banks" object')
    banks: dict[str, dict[str, Any]] = {}
    damaged = []
    for name, questions in data["banks"].items():
        if not isinstance(questions, dict):
            damaged.append(f"bank {name!r} is not an object of question records")
            continue
        kept = {}
        for key, entry in questions.items():
            problem = _record_problem(key, entry)
            if problem:
                damaged.append(f"bank {name!r}, record {key!r}: {problem}")
            else:
                kept[key] = {
                    field: entry[field]
                    for field in (*RECORD_FIELDS, *OPTIONAL_FIELDS)
                    if field in entry
                }
        if kept:
            banks[name] = kept
    record = {"version": FORMAT_VERSION, "banks": banks}
    if not damaged:
        return record, None
    listed = "; ".join(damaged[:3]) + ("; ..." if len(damaged) > 3 else "")
    return record, f"had {len(damaged)} damaged record(s) ({listed})"


def _record_problem(key: str, entry: Any) -> str | None:
    if not (key.isascii() and key.isdigit()):
        return "the key is not a question number"
    if not isinstance(entry, dict):
        return "not an object"
    for field, (meaning, valid) in RECORD_FIELDS.items():
        if field not in entry:
            return f'no "{field}"'
        if not valid(entry[field]):
            return f'"{field}" is {entry[field]!r}, not {meaning}'
    for field, (meaning, valid) in OPTIONAL_FIELDS.items():
        if field in entry and not valid(entry[field]):
            return f'"{field}" is {entry[field]!r}, not {meaning}'
    return None


def _parse(raw: bytes) -> tuple[dict[str, Any], str | None]:
    """The valid records in a progress file's bytes, and what is wrong (None when nothing is)."""
    try:
        return _valid_records(json.loads(raw.decode("utf-8")))
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        return _empty(), f"was unreadable ({type(error).__name__}: {error})"


def _summarise(data: dict[str, Any]) -> list[BankSummary]:
    """One line per bank in a progress record, sorted by bank name."""
    rows = []
    for name, questions in sorted(data["banks"].items()):
        entries = list(questions.values())
        rows.append(
            BankSummary(
                bank=name,
                answered=len(entries),
                correct=sum(e["correct"] for e in entries),
                attempts=sum(e["attempts"] for e in entries),
                updated=max((e["updated"] for e in entries), default=""),
            )
        )
    return rows
