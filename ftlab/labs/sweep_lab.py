"""Lab 2's rules: a sweep that can run, and the diagnosis its loss curves support.

Each function returns plain-English problems (what is wrong, for which run, how to fix
it), which the lab's cells pass to `self_check_all`. The messages give the evidence, not
the expected label, so that the learner still has to read the curves.
"""

from __future__ import annotations

import math
from typing import Any

from ftlab.labs.checks import short

SETTINGS = ("rank", "lr", "epochs")
LABELS = ("underfit", "overfit", "good")
EPOCH_BUDGET = 40  # the text asks for about 35 epochs in all; more makes the sweep slow on a CPU
OVERFIT_RISE = 1.05  # final validation loss more than 5 % above the run's own lowest
UNDERFIT_FACTOR = 2.0  # ... or more than twice the lowest validation loss of the whole sweep
DIVERGED_RISE = 1.2  # final training loss more than a fifth above the first epoch's
NEAR_BEST = 1.1  # a chosen checkpoint within 10 % of the sweep's lowest validation loss

Curves = dict[str, dict[str, list[float]]]  # run name -> {"train": [...], "valid": [...]}


def run_name(settings: dict) -> str:
    """A run's folder name, from its settings: `r16-lr0.005-6ep`."""
    return f"r{settings['rank']}-lr{settings['lr']:g}-{settings['epochs']}ep"


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive(value: object) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and value > 0


def sweep_problems(sweep: object) -> list[str]:
    """What stops `sweep` from running as the lab asks: at least three runs of three settings."""
    example = '[{"rank": 4, "lr": 1e-4, "epochs": 3}, ...]'
    if not isinstance(sweep, list) or not all(isinstance(run, dict) for run in sweep):
        return [f"`sweep` must be a list of dictionaries, like {example}; got {short(sweep)}."]
    problems = []
    for number, run in enumerate(sweep, 1):
        keys = set(run)
        if keys != set(SETTINGS):
            missing, extra = sorted(set(SETTINGS) - keys), sorted(keys - set(SETTINGS))
            problems.append(
                f"Run {number} has the keys {sorted(keys)}: each run needs exactly "
                f"{list(SETTINGS)}"
                + (f" (missing {missing})" if missing else "")
                + (f" (the lab sets {extra} itself: remove them)" if extra else "")
                + "."
            )
            continue
        if not _whole(run["rank"]) or not _whole(run["epochs"]):
            problems.append(
                f"Run {number}: rank and epochs must be whole numbers of 1 or more; got rank "
                f"{run['rank']!r} and epochs {run['epochs']!r}."
            )
        if not _positive(run["lr"]):
            problems.append(
                f"Run {number}: lr must be a positive number such as 1e-4 (not a string); "
                f"got {run['lr']!r}."
            )
    if problems:
        return problems
    names = [run_name(run) for run in sweep]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        problems.append(f"The same settings appear twice: {twice}. Make every run different.")
    if len(sweep) < 3:
        problems.append(
            f"The sweep has {len(sweep)} run(s); design at least 3, so that both under- and "
            "over-fitting can show (see the hints above)."
        )
    epochs = sum(run["epochs"] for run in sweep)
    if epochs > EPOCH_BUDGET:
        problems.append(
            f"The runs add up to {epochs} epochs; keep the total to about 35 (at most "
            f"{EPOCH_BUDGET}) so that the sweep takes minutes, not an hour."
        )
    return problems


def lowest_loss(curves: Curves) -> float:
    """The lowest validation loss of the whole sweep, at any epoch of any run."""
    finite = [loss for c in curves.values() for loss in c["valid"] if math.isfinite(loss)]
    return min(finite, default=math.inf)


def diverged(curve: dict[str, list[float]]) -> bool:
    """The training loss ended clearly higher than in the first epoch, or is not a number: the
    learning rate is too high. A few percent is not enough: an epoch's loss moves that much
    with the batches alone, even in a run that learns nothing."""
    train = curve["train"]
    if any(not math.isfinite(loss) for loss in train):
        return True
    return len(train) >= 2 and train[-1] > DIVERGED_RISE * train[0]


def observed(curve: dict[str, list[float]], lowest_any: float) -> str:
    """The diagnosis the numbers support, with the thresholds the lab states."""
    valid, train = curve["valid"], curve["train"]
    best = valid.index(min(valid))
    learned = valid[best] <= UNDERFIT_FACTOR * lowest_any  # it did reach a low loss at some point
    if learned and valid[-1] > OVERFIT_RISE * valid[best] and train[-1] < train[best]:
        return "overfit"
    return "underfit" if valid[-1] > UNDERFIT_FACTOR * lowest_any else "good"


def _evidence(name: str, curve: dict[str, list[float]], lowest_any: float) -> str:
    valid, train = curve["valid"], curve["train"]
    best = valid.index(min(valid))
    return (
        f"its validation loss ended at {valid[-1]:.3f}, its lowest was {valid[best]:.3f} at "
        f"epoch {best + 1} and the sweep's lowest is {lowest_any:.3f}; its training loss went "
        f"from {train[0]:.3f} to {train[-1]:.3f}"
    )


def diagnosis_problems(diagnosis: object, curves: Curves) -> list[str]:
    """Labels missing, unknown or not supported by the run's numbers (with the numbers)."""
    if not isinstance(diagnosis, dict):
        return [
            'Set `diagnosis` to a dictionary of run name to label, like {"r4-lr0.0001-3ep": '
            f'"underfit"}}; got {short(diagnosis)}.'
        ]
    runs = {name: c for name, c in curves.items() if c["valid"]}
    lowest_any = lowest_loss(runs)
    problems = []
    for name, curve in runs.items():
        if diverged(curve):
            train = curve["train"]
            went = (
                f"rose from {train[0]:.3f} to {train[-1]:.3f}"
                if all(math.isfinite(loss) for loss in train)
                else "stopped being a number (NaN)"
            )
            problems.append(
                f"{name} diverged: its training loss {went}, so its learning rate is far too "
                "high for this data. "
                "Lower it (or remove the run) in section 1 and run sections 1 to 4 again."
            )
    for name, label in diagnosis.items():
        if name not in runs:
            problems.append(f"There is no run named {short(name)}; the runs are {sorted(runs)}.")
        elif label not in LABELS:
            problems.append(f"{name}: {short(label)} is not a label; use one of {list(LABELS)}.")
        elif not diverged(runs[name]) and observed(runs[name], lowest_any) != label:
            problems.append(
                f"{name}: you wrote {label!r}, but {_evidence(name, runs[name], lowest_any)}. "
                "Compare these numbers with the definitions above."
            )
    problems += [f"{name} has no label in `diagnosis`." for name in runs if name not in diagnosis]
    if not problems:
        for needed in ("underfit", "overfit"):
            if needed not in diagnosis.values():
                problems.append(
                    f"No run is labelled {needed!r}: the sweep needs one of each, so add a run "
                    "that shows it (see the hints in section 1) and run sections 1 to 4 again."
                )
    return problems


def picked_loss(chosen: object, curves: Curves) -> float | None:
    """The validation loss of the chosen run and epoch, or None if there is no such checkpoint."""
    if not isinstance(chosen, dict) or not _whole(chosen.get("epoch")):
        return None
    run: Any = chosen.get("run")
    valid = curves[run]["valid"] if isinstance(run, str) and run in curves else []
    return valid[chosen["epoch"] - 1] if chosen["epoch"] <= len(valid) else None


def choice_problems(chosen: object, curves: Curves) -> list[str]:
    """Why `chosen` is not a checkpoint near the sweep's lowest validation loss, if it is not."""
    shape = '{"run": "run name", "epoch": 1}'
    if not isinstance(chosen, dict) or set(chosen) != {"run", "epoch"}:
        return [f"Set `chosen` to a dictionary like {shape}; got {short(chosen)}."]
    picked = picked_loss(chosen, curves)
    if picked is None:
        return [
            f"{chosen} names no checkpoint: use a run name from the table {sorted(curves)} and "
            "a whole epoch number from 1 to that run's number of epochs."
        ]
    lowest_any = lowest_loss(curves)
    if not math.isfinite(picked):
        return [
            f"{chosen['run']} at epoch {chosen['epoch']} has no usable validation loss (not a "
            "number: that run diverged): choose a checkpoint of a run that learned."
        ]
    if picked > NEAR_BEST * lowest_any:
        return [
            f"{chosen['run']} at epoch {chosen['epoch']} has validation loss {picked:.3f}, more "
            f"than 10 % above the sweep's lowest ({lowest_any:.3f}): choose the run and epoch "
            "with the lowest validation loss, or one within 10 % of it."
        ]
    return []
