"""One training job in its own process: `python -m ftlab.server.job_runner JOB_DIR PARENT_PID`.

Reads `JOB_DIR/request.json` (the `TrainConfig` fields), trains, and appends one JSON
line per training event to `JOB_DIR/progress.jsonl`, ending with a `result` or an
`error` line. The server's worker thread reads that file; the file outlives a crash
of either process, so no event is lost. Training stops at the next step once
`JOB_DIR/stop` exists. The process dies with the server (see `lifecycle`).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ftlab.server.lifecycle import die_with_parent

PROGRESS = "progress.jsonl"
REQUEST = "request.json"
STOP = "stop"


def _fields(value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return dict(vars(value))


def main(job_dir: Path) -> int:
    from ftlab.training import InvalidDataError, TrainConfig, train

    request = json.loads((job_dir / REQUEST).read_text())
    progress = open(job_dir / PROGRESS, "a", encoding="utf-8")  # noqa: SIM115 - lives all run

    def write(record: dict[str, Any]) -> None:
        # `at`: when it happened (the server may read the line much later, after a restart).
        progress.write(json.dumps({"at": int(time.time()), **record}, default=str) + "\n")
        progress.flush()

    held: list[dict[str, Any]] = []  # an epoch's last step, waiting for its validation

    def report(record: dict[str, Any]) -> None:
        """Write a training event; an epoch's last step and its validation become one line,
        so the job shows one metrics event per step, as OpenAI's jobs do."""
        record = {**record, "at": int(time.time())}  # a held step keeps its own time
        if held:
            step = held.pop()
            if record["kind"] == "eval" and record["step"] == step["step"]:
                record = {**step, **{k: v for k, v in record.items() if v is not None}}
                record.update(kind="step", at=step["at"])
            else:
                write(step)
        ends_epoch = float(record["epoch"]).is_integer() or record["step"] == record["total_steps"]
        if record["kind"] == "step" and ends_epoch:
            held.append(record)
        else:
            write(record)

    try:
        try:
            result = train(
                TrainConfig(**request),
                callback=lambda event: report(_fields(event)),
                should_stop=(job_dir / STOP).exists,
            )
        finally:
            for step in held:  # no validation came (none asked for, or training failed)
                write(step)
    except InvalidDataError as error:
        write({"kind": "error", "code": "invalid_training_file", "message": str(error)})
        return 1
    except Exception as error:  # noqa: BLE001 - reported to the server, then exit non-zero
        traceback.print_exc()
        write({"kind": "error", "code": None, "message": f"{type(error).__name__}: {error}"})
        return 1
    write({"kind": "result", **_fields(result)})
    return 0


if __name__ == "__main__":
    # Ctrl-C in the server's terminal, or a service manager's SIGTERM, reaches the whole
    # process group: training would die mid-step, and the server could take it for a failed
    # job. The server stops this process itself (the stop file; a kill when it shuts down,
    # and the job resumes when it starts again; SIGKILL if the server dies).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(int(sys.argv[2]))
    sys.exit(main(Path(sys.argv[1])))
