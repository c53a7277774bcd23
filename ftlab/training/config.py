"""The settings of a LoRA run, with defaults tuned on the course's support data."""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ftlab.models import DEFAULT_MODEL
from ftlab.validation.stats import TRAIN_MAX_LENGTH

# Settings a resumed run may change; any other difference would mix two runs in one folder.
# micro_batch_size only changes how much memory a step takes, not the update. The data and
# output paths may change when the course folder is moved or renamed: the loop compares the
# data files by content (SHA-256) instead, so an edited file is still refused.
RESUMABLE_CHANGES = frozenset({"resume", "micro_batch_size", "data", "valid", "out"})
WHOLE_SETTINGS = (
    "epochs",
    "rank",
    "batch_size",
    "micro_batch_size",
    "max_steps",
    "seed",
    "adapted_layers",
    "max_length",
    "log_every",
)
OPTIONAL_SETTINGS = frozenset({"micro_batch_size", "max_steps", "adapted_layers"})  # None: auto
REAL_SETTINGS = ("lr", "alpha", "dropout", "warmup_ratio", "weight_decay")


@dataclass
class TrainConfig:
    """Everything that defines a run; saved to `DIR/config.json` and checked on `--resume`.

    Defaults (chosen on the support data's validation split and probes; see
    docs/measurements.md): LoRA on every linear layer, rank 16, alpha 32, lr 3e-3 with
    warm-up and linear decay, batch 16, 2 epochs. Only assistant tokens are learned.
    """

    data: str
    out: str
    valid: str | None = None
    model: str = DEFAULT_MODEL
    epochs: int = 2
    lr: float = 3e-3
    rank: int = 16
    alpha: float = 32.0
    batch_size: int = 16
    # Rows per forward pass (None: automatic, whole batches unless their rows are long; see
    # training.loss.PART_TOKENS). Smaller needs less memory and gives the same update
    # (gradients are accumulated), a little more slowly.
    micro_batch_size: int | None = None
    max_steps: int | None = None
    seed: int = 0
    resume: bool = False
    target_modules: str | list[str] = "all-linear"
    # LoRA on the top N decoder layers only (None: every layer). The layers below have
    # nothing to learn, so training runs them once and reuses their output every epoch:
    # 15 of 30 trained about 1.5x faster, and scored a little lower over three seeds
    # (docs/measurements.md, "How the defaults were chosen").
    adapted_layers: int | None = None
    dropout: float = 0.0
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_length: int = TRAIN_MAX_LENGTH
    log_every: int = 1  # steps per logged row; its loss is the mean over those steps

    def __post_init__(self) -> None:
        self.data, self.out = str(self.data), str(self.out)
        self.valid = None if self.valid is None else str(self.valid)
        self.model = str(self.model)
        problems = self._type_problems()
        if problems:  # the checks below compare numbers
            raise ValueError("Invalid training settings: " + "; ".join(problems))
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1, got {self.epochs}")
        if not 0 < self.lr < math.inf:
            problems.append(f"lr must be a positive number, got {self.lr}")
        if self.rank < 1:
            problems.append(f"rank must be at least 1, got {self.rank}")
        if not 0 < self.alpha < math.inf:
            problems.append(f"alpha must be a positive number, got {self.alpha}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be at least 1, got {self.batch_size}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            problems.append(
                f"micro_batch_size must be at least 1 (or None for automatic), "
                f"got {self.micro_batch_size}"
            )
        if self.adapted_layers is not None and self.adapted_layers < 1:
            problems.append(
                f"adapted_layers must be at least 1 (or None, 'all' on the command line, "
                f"for every layer), "
                f"got {self.adapted_layers}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be at least 1 (or None for all), got {self.max_steps}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_length < 1:
            problems.append(f"max_length must be at least 1, got {self.max_length}")
        if self.log_every < 1:
            problems.append(f"log_every must be at least 1, got {self.log_every}")
        if not 0 <= self.seed < 2**64:
            problems.append(f"seed must be from 0 to 2**64 - 1, got {self.seed}")
        if problems:
            raise ValueError("Invalid training settings: " + "; ".join(problems))

    def _type_problems(self) -> list[str]:
        """Whole numbers and real numbers where the settings need them (a float epoch count
        failed deep inside training, a string rate with a bare TypeError). Numpy's numbers,
        as a sweep with `np.arange` makes them, pass and become plain ones, so that the
        config can be written as JSON."""
        problems = []
        for name in WHOLE_SETTINGS:
            value = getattr(self, name)
            if value is None and name in OPTIONAL_SETTINGS:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                problems.append(f"{name} must be a whole number, got {value!r}")
            else:
                setattr(self, name, int(value))
        for name in REAL_SETTINGS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                problems.append(f"{name} must be a number, got {value!r}")
            else:
                setattr(self, name, float(value))
        return problems

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown training settings {unknown}; known ones are {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text())["config"])

    def differences(self, other: TrainConfig) -> list[str]:
        """Settings that differ from `other`, except those a resumed run may change."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{name}: {theirs[name]!r} -> {mine[name]!r}"
            for name in mine
            if name not in RESUMABLE_CHANGES and mine[name] != theirs[name]
        ]
