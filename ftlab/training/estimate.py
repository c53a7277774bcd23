"""How long a training run will take on this machine, measured before it starts.

A step's time grows with the tokens it computes (the shared system prompt once,
plus every row padded to the batch's longest), so a few real steps of the run,
on batches of typical sizes, give the seconds per token, and the run's token
count gives its time. The same CPU can differ several-fold from another (one
with bf16 matrix units, one without), which no table can tell a learner; this
measures their own machine. Nothing is written: the steps update a throwaway
copy of the adapters.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ftlab.models import available_cores, compute_dtype, load_tokenizer, pick_device
from ftlab.training.config import TrainConfig
from ftlab.training.data import (
    TokenizedExample,
    collate,
    epoch_batches,
    tokenize_examples,
)
from ftlab.training.frozen import first_adapted_layer, frozen_outputs
from ftlab.training.loop import (
    check_base_model,
    check_data,
    check_separate_splits,
    new_optimizer,
    resume_point,
    run_length,
    stores_frozen_outputs,
    take_step,
    training_model,
    training_rows,
    validation_loss,
)


def batch_tokens(rows: Sequence[TokenizedExample]) -> int:
    """Tokens one training batch computes: the shared prefix once, rows padded to the longest."""
    batch = collate(rows, pad_id=0)
    return batch.prefix.numel() + batch.input_ids.numel()


def run_batches(lengths: Sequence[int], config: TrainConfig) -> list[list[int]]:
    """The example indices of every step of a run with `config`, in the order `train` takes."""
    _, total, epochs = run_length(config, len(lengths))
    batches: list[list[int]] = []
    for epoch in range(1, epochs + 1):
        batches += epoch_batches(lengths, config.batch_size, config.seed, epoch)
    return batches[:total]


def typical_batches(sizes: Sequence[int], count: int) -> list[int]:
    """Positions of `count` batches spread evenly over the sizes (the 1/2n, 3/2n, ... quantiles)."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    return [order[min(len(order) - 1, int((k + 0.5) * len(order) / count))] for k in range(count)]


@dataclass(frozen=True)
class TimeEstimate:
    """A run's expected time on this machine, from `timed_steps` real steps of it.

    With `resume`, it is the time of what is left: `total_steps` and `computed_tokens`
    count the steps after the last checkpoint only, and `done_steps` the ones before it.
    """

    total_steps: int
    computed_tokens: int  # what every step of the run computes, added up
    timed_steps: int
    seconds_per_token: float  # measured on the timed steps
    frozen_pass_s: float  # the one-off pass through the frozen layers (0 without one)
    validation_s: float  # validation loss after every epoch (0 without a validation file)
    device: str
    dtype: str
    threads: int | None
    done_steps: int = 0  # steps a resumed run has behind it
    busy_load: float | None = None  # the load average before timing, when others used the CPU
    cores: int | None = None

    @property
    def steps_s(self) -> float:
        return self.computed_tokens * self.seconds_per_token

    @property
    def total_s(self) -> float:
        """Steps, frozen pass and validation; loading the model and saving add a few seconds."""
        return self.frozen_pass_s + self.steps_s + self.validation_s

    def summary(self) -> str:
        where = f"{self.device}, {self.dtype}" + (
            f", {self.threads} threads" if self.threads else ""
        )
        if self.done_steps and not self.total_steps:
            return f"0 s: the run is finished ({self.done_steps} steps); resuming trains nothing."
        left = f" (of {self.done_steps + self.total_steps}, resumed)" if self.done_steps else ""
        parts = [f"{self.total_steps} steps{left} {duration(self.steps_s)}"]
        if self.frozen_pass_s:
            parts.append(f"frozen layers once {duration(self.frozen_pass_s)}")
        if self.validation_s:
            parts.append(f"validation {duration(self.validation_s)}")
        busy = ""
        if self.busy_load is not None:
            busy = (
                f"\nOther programs kept the CPU busy while this measured (load average "
                f"{self.busy_load:.1f} on {self.cores} cores), so the timed steps ran slower than "
                "they will on a quiet machine: close them and estimate again for a truer figure."
            )
        return (
            f"about {duration(self.total_s)} on this machine ({where}): {'; '.join(parts)}.\n"
            f"Measured on {self.timed_steps} real steps at "
            f"{1000 * self.seconds_per_token:.1f} ms per token; the run computes "
            f"{self.computed_tokens:,} tokens.{busy}"
        )


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def machine_fields(device: torch.device, load: float | None = None) -> dict:
    """Where a run computes, for the summary: device, arithmetic and (on a CPU) threads, and
    the load average `load` measured before timing when it says other programs were busy."""
    cores = available_cores()
    on_cpu = device.type == "cpu"
    return {
        "device": device.type,
        "dtype": str(compute_dtype(device)).removeprefix("torch."),
        "threads": torch.get_num_threads() if on_cpu else None,
        "busy_load": load if on_cpu and load is not None and load > cores / 2 else None,
        "cores": cores,
    }


def load_average() -> float | None:
    """The 1-minute load average (None where the system does not report one)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def estimate_time(config: TrainConfig, timed_steps: int = 3) -> TimeEstimate:
    """Time `timed_steps` steps of the run `config` describes (after one warm-up step) and
    scale them to the whole run, or with `config.resume` to what is left of the run in
    `config.out`. Takes about as long as `timed_steps + 1` steps, plus loading.
    """
    if timed_steps < 1:
        raise ValueError(f"timed_steps must be at least 1, got {timed_steps}")
    load = load_average()  # before this process adds its own threads to it
    check_base_model(config)
    examples = check_data(config.data)
    check_separate_splits(config)
    valid_examples = check_data(config.valid, validation=True) if config.valid else []
    resumed = resume_point(config, Path(config.out)) if config.out else None
    # The steps come from the tokenized rows alone, so a finished run is told so without
    # loading the model.
    rows = training_rows(load_tokenizer(config.model), examples, config)
    every_batch = run_batches([len(r) for r in rows], config)
    done = resumed.step if resumed else 0
    batches = every_batch[done:]
    if not batches:  # a finished run: resuming it trains nothing
        return TimeEstimate(
            total_steps=0,
            computed_tokens=0,
            timed_steps=0,
            seconds_per_token=0.0,
            frozen_pass_s=0.0,
            validation_s=0.0,
            done_steps=done,
            **machine_fields(pick_device()),
        )
    model, tokenizer = training_model(config)
    base = model.get_base_model()
    pad_id = tokenizer.pad_token_id
    _, _, epochs = run_length(config, len(rows))
    sizes = [batch_tokens([rows[i] for i in indices]) for indices in batches]
    # One warm-up step, then the timed ones.
    positions = typical_batches(sizes, 1) + typical_batches(sizes, timed_steps)
    chosen = [batches[position] for position in positions]

    first_adapted = first_adapted_layer(base)
    stored: dict[int, torch.Tensor] = {}
    frozen_pass_s = 0.0
    if stores_frozen_outputs(base, rows, first_adapted):
        needed = sorted({i for indices in chosen for i in indices})
        start = time.perf_counter()
        outputs = frozen_outputs(
            base, [rows[i] for i in needed], first_adapted, pad_id, base.device
        )
        share = sum(len(rows[i]) for i in needed) / sum(map(len, rows))
        frozen_pass_s = (time.perf_counter() - start) / share
        stored = dict(zip(needed, outputs, strict=True))

    optimizer = new_optimizer(model, config)
    seconds = 0.0
    for number, indices in enumerate(chosen):
        states = [stored[i] for i in indices] if stored else None
        start = time.perf_counter()
        take_step(
            model, optimizer, [rows[i] for i in indices], pad_id, config, states, first_adapted
        )
        if number:  # not the warm-up
            seconds += time.perf_counter() - start

    valid = tokenize_examples(tokenizer, valid_examples, config.max_length, "validation")
    epochs_left = epochs - (resumed.epoch if resumed else 0)
    return TimeEstimate(
        total_steps=len(batches),
        computed_tokens=sum(sizes),
        timed_steps=timed_steps,
        seconds_per_token=seconds / sum(sizes[position] for position in positions[1:]),
        frozen_pass_s=frozen_pass_s,
        validation_s=epochs_left * validation_time(model, valid, config.batch_size * 2, pad_id),
        done_steps=done,
        **machine_fields(base.device, load),
    )


def validation_time(model, rows: list[TokenizedExample], batch_size: int, pad_id: int) -> float:
    """Seconds one validation pass over `rows` takes, from timing its first batch (0 if none)."""
    if not rows:
        return 0.0
    sample = rows[:batch_size]
    start = time.perf_counter()
    validation_loss(model, sample, batch_size, pad_id, model.get_base_model().device)
    return (time.perf_counter() - start) * sum(map(len, rows)) / sum(map(len, sample))
