"""How the room is doing: one row per learner of a workshop's shared server.

The instructor's view. For every learner in the server's keys file it asks the server, with that
learner's own key (the only way the API lets anyone see a learner's work), for their files and
fine-tuning jobs (leaving out the one notebook 04 makes fail on purpose), and, where the
learners' quiz records are readable from here (a JupyterHub's home folders), reads their quiz
scores without changing those files.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftlab.api_jobs import FINAL_STATUSES, is_demo
from ftlab.quiz.progress import ProgressStore
from ftlab.server.auth import load_keys

STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")


@dataclass
class LearnerRow:
    """What one learner has done so far; `problem` says why some of it could not be read."""

    name: str
    files: int | None = None
    jobs: dict[str, int] = field(default_factory=dict)
    last_job: str | None = None  # "succeeded 3 min ago", "running"
    last_job_at: int | None = None  # when it finished (or, unfinished, was created): Unix time
    unfinished_jobs: list[str] = field(default_factory=list)  # ids, to cancel a runaway one
    models: list[str] = field(default_factory=list)
    quiz_right: int | None = None
    quiz_answered: int | None = None
    quiz_problem: str | None = None  # why the quiz record could not be read (all or part)
    quiz_file_found: bool | None = None  # None: not asked (no --progress)
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ago(seconds: float) -> str:
    minutes = int(seconds // 60)
    return "just now" if minutes < 1 else f"{minutes} min ago" if minutes < 120 else "earlier"


def _server_part(row: LearnerRow, base_url: str, key: str, timeout: float) -> None:
    from openai import APIConnectionError, APIStatusError, APITimeoutError, OpenAI

    api = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout)
    try:
        row.files = sum(1 for _ in api.files.list(purpose="fine-tune"))
        jobs = list(api.fine_tuning.jobs.list(limit=100))  # newest first; the SDK pages on
        jobs = [job for job in jobs if not is_demo(job)]  # notebook 04's failure on purpose
        models = [m.id for m in api.models.list() if m.id.startswith("ft:")]
    except APITimeoutError:
        row.problem = f"no answer within {timeout:g} s (a busy server: try --timeout 120)"
        return
    except APIConnectionError as error:
        raise ConnectionError(
            f"cannot reach the server at {base_url} ({error}). Fix: check the address (the "
            "one `ftlab serve` printed, ending in /v1) and that the server is running."
        ) from error
    except APIStatusError as error:
        if error.status_code in (401, 403):
            row.problem = f"the server refused this learner's key ({error.status_code})"
            return
        if error.status_code != 404:  # this learner's requests failed: the others may not
            row.problem = f"the server answered {error.status_code} for this learner's data"
            return
        # Not a learner's problem: another program answers there, or the address lacks /v1.
        raise ConnectionError(
            f"the server at {base_url} answered {error.status_code} to a request of the "
            "fine-tuning API, so it is not the course's server, or the address is incomplete. "
            "Fix: pass the address `ftlab serve` printed, ending in /v1."
        ) from error
    counts = Counter(job.status for job in jobs)
    row.jobs = {status: counts[status] for status in STATUSES if counts[status]}
    row.unfinished_jobs = [job.id for job in jobs if job.status not in FINAL_STATUSES]
    if jobs:
        last = jobs[0]
        finished = row.last_job_at = last.finished_at or last.created_at
        row.last_job = (
            f"{last.status} {_ago(time.time() - finished)}"
            if last.status in FINAL_STATUSES
            else last.status
        )
    row.models = models  # the learner's fine-tuned models still on the server


def _quiz_part(row: LearnerRow, progress: Path) -> None:
    summary, row.quiz_problem = ProgressStore(progress).inspect()
    row.quiz_file_found = summary is not None or row.quiz_problem is not None
    if summary is not None:
        row.quiz_right = sum(bank.correct for bank in summary)
        row.quiz_answered = sum(bank.answered for bank in summary)


def room_report(
    base_url: str, keys_file: str | Path, progress: str | None = None, timeout: float = 30.0
) -> list[LearnerRow]:
    """One row per learner of `keys_file`, in its order.

    `progress` is where each learner's quiz record lies, with `{name}` for the learner's name
    (`/home/{name}/ftlab-progress.json`); None leaves the quiz columns empty. Raises
    KeysFileError for a bad keys file and ConnectionError when the server cannot be reached."""
    if not base_url.startswith(("http://", "https://")):
        raise ConnectionError(
            f"{base_url} is not an address the room can ask: it must start with http:// or "
            "https://. Fix: pass the address `ftlab serve` printed, e.g. http://HOST:8000/v1."
        )
    rows = []
    for key, name in load_keys(keys_file).items():
        row = LearnerRow(name)
        _server_part(row, base_url, key, timeout)
        if progress:
            _quiz_part(row, Path(progress.replace("{name}", name)).expanduser())
        rows.append(row)
    return rows


def format_room(rows: list[LearnerRow]) -> str:
    """The report as a plain-text table for a terminal."""
    header = ("learner", "files", "jobs", "last job", "models", "quiz right/answered")
    lines = []
    for row in rows:
        jobs = ", ".join(f"{n} {status}" for status, n in row.jobs.items()) or "-"
        quiz = "-" if row.quiz_answered is None else f"{row.quiz_right}/{row.quiz_answered}"
        if row.quiz_problem:
            quiz = "unreadable" if row.quiz_answered is None else f"{quiz} (damaged file)"
        cells = (
            row.name,
            "-" if row.files is None else str(row.files),
            jobs if row.problem is None else row.problem,
            row.last_job or "-",
            str(len(row.models)),
            quiz,
        )
        lines.append(cells)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines, strict=True)]
    table = [header, *lines]
    out = ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) for cells in table]
    done = sum(1 for row in rows if row.models)
    out.append(f"\n{done} of {len(rows)} learners have a fine-tuned model.")
    if unfinished := [
        f"{row.name} {', '.join(row.unfinished_jobs)}" for row in rows if row.unfinished_jobs
    ]:
        out.append("Jobs not finished (to cancel one, see the README): " + "; ".join(unfinished))
    asked = [row for row in rows if row.quiz_file_found is not None]
    if asked and not any(row.quiz_file_found for row in asked):
        out.append(
            f"No learner has a quiz record at --progress's place yet ({len(asked)} looked for): "
            "if they have answered quizzes, the pattern is wrong (on The Littlest JupyterHub, "
            "homes are /home/jupyter-{name})."
        )
    out += [f"{row.name}'s quiz record: {row.quiz_problem}" for row in rows if row.quiz_problem]
    return "\n".join(line.rstrip() for line in out)
