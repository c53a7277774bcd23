"""What `train` reports while it runs, and what it returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

EventKind = Literal["prepare", "start", "step", "eval", "checkpoint", "end"]


@dataclass(frozen=True)
class TrainEvent:
    """One progress report passed to `train`'s callback (fields are None where they do not apply).

    `epoch` is fractional on step events (1.5 = half-way through the second epoch).
    """

    kind: EventKind
    step: int
    total_steps: int
    epoch: float
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    learning_rate: float | None = None
    checkpoint_dir: Path | None = None
    trained_tokens: int | None = None
    elapsed_s: float | None = None
    # "prepare" events: tokens the frozen layers have run, of how many (see training.frozen).
    prepared: int | None = None
    to_prepare: int | None = None

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if self.checkpoint_dir is not None:
            values["checkpoint_dir"] = str(self.checkpoint_dir)
        return values


@dataclass
class TrainResult:
    """What a run produced. `adapter_dir` is DIR/adapter after a complete run; after a stop
    (`stopped=True`) it is the last epoch checkpoint, or None if no epoch finished.

    `kept_earlier_run`: the run stopped before saving anything, in the folder of an earlier
    run, and put that run back as it was (the paths then name the earlier run's files)."""

    adapter_dir: Path | None
    checkpoints: list[tuple[int, int, Path]]
    metrics_path: Path
    config_path: Path
    plot_path: Path
    trained_tokens: int
    total_steps: int
    final_train_loss: float | None
    final_valid_loss: float | None
    stopped: bool
    elapsed_s: float = 0.0
    kept_earlier_run: bool = False
