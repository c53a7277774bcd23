"""The learner's quiz record: a small JSON file that survives restarts and crashes.

Default location `ftlab_home()/progress.json`; `FTLAB_PROGRESS` points it
elsewhere (a shared JupyterHub home, a test's temp folder). Layout:

    {"version": 1, "banks": {"quick_check": {"0": {
        "question": "What does fine-tuning do?", "attempts": 2, "last_answer": 0,
        "correct": true, "ever_correct": true, "updated": "2026-11-25T20:50:00+00:00"}}}}

Every write goes to a temporary file in the same folder, is fsynced and then
renamed over the old file, so a crash leaves either the old record or the new
one, never half a file. A file that does not parse is renamed to
`progress.json.corrupt-<timestamp>` (kept for inspection), a warning says so,
and the quiz starts a fresh record instead of failing in the learner's notebook.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ftlab.paths import ftlab_home

FORMAT_VERSION = 1

try:  # POSIX: serialise writers (two notebooks open at once); Windows simply skips it.
    import fcntl
except ImportError:  # pragma: no cover - not on the course's Linux/macOS machines
    fcntl = None  # type: ignore[assignment]


class ProgressWarning(UserWarning):
    """The progress file was unreadable and has been moved aside."""


def progress_path() -> Path:
    """The progress file: $FTLAB_PROGRESS, else `ftlab_home()/progress.json`."""
    override = os.environ.get("FTLAB_PROGRESS")
    return Path(override).expanduser() if override else ftlab_home() / "progress.json"


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
        self.path = Path(path) if path is not None else progress_path()

    def load(self) -> dict[str, Any]:
        """The whole record; a missing file is an empty record, a corrupt one is moved aside."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return _empty()
        except OSError as error:  # e.g. no permission: carry on without the record
            warnings.warn(
                f"cannot read the quiz progress file {self.path} ({error}); "
                "earlier answers are not shown",
                ProgressWarning,
                stacklevel=2,
            )
            return _empty()
        try:
            data = json.loads(text)
            _check_shape(data)
        except (ValueError, TypeError) as error:
            self._set_aside(f"{type(error).__name__}: {error}")
            return _empty()
        return data

    def bank(self, bank: str) -> dict[str, dict[str, Any]]:
        """Per-question records of one bank, keyed by question index as a string."""
        return self.load()["banks"].get(bank, {})

    def record(
        self, bank: str, index: int, question: str, answer: Any, correct: bool
    ) -> dict[str, Any]:
        """Add one attempt at question `index` of `bank` and save at once."""
        with self._locked():
            data = self.load()
            entry = data["banks"].setdefault(bank, {}).get(str(index))
            if entry is None or entry.get("question") != question:
                entry = {"question": question, "attempts": 0, "ever_correct": False}
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

    def summary(self) -> list[BankSummary]:
        """One line per bank the learner has touched, sorted by bank name."""
        rows = []
        for name, questions in sorted(self.load()["banks"].items()):
            entries = list(questions.values())
            rows.append(
                BankSummary(
                    bank=name,
                    answered=len(entries),
                    correct=sum(bool(e.get("correct")) for e in entries),
                    attempts=sum(int(e.get("attempts", 0)) for e in entries),
                    updated=max((e.get("updated", "") for e in entries), default=""),
                )
            )
        return rows

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        _fsync_dir(self.path.parent)

    def _set_aside(self, reason: str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        counter = 1
        while target.exists():
            counter += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{counter}")
        try:
            os.replace(self.path, target)
            where = f"moved it to {target}"
        except OSError as error:
            where = f"could not move it aside ({error}); it will be overwritten"
        warnings.warn(
            f"quiz progress file {self.path} was unreadable ({reason}); {where} and "
            "started a fresh record",
            ProgressWarning,
            stacklevel=3,
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _empty() -> dict[str, Any]:
    return {"version": FORMAT_VERSION, "banks": {}}


def _check_shape(data: Any) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("banks"), dict):
        raise ValueError('expected a JSON object with a "banks" object')
    for name, questions in data["banks"].items():
        if not isinstance(questions, dict) or not all(
            isinstance(entry, dict) for entry in questions.values()
        ):
            raise ValueError(f"bank {name!r} is not an object of question records")


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); harmless to skip where unsupported."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
