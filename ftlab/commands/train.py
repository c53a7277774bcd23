"""`ftlab train`: LoRA fine-tuning on a chat JSONL file (the code of `ftlab.training.train`)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from ftlab.commands import positive_int, positive_number
from ftlab.models import DEFAULT_MODEL, ModelNotFoundError
from ftlab.training import InvalidDataError, ProgressBar, TrainConfig, TrainEvent, train
from ftlab.training.checkpoints import is_training_run, remove_stale_staging
from ftlab.training.data import steps_per_epoch
from ftlab.training.estimate import estimate_time
from ftlab.training.loop import KEPT_EARLIER_RUN, resume_point
from ftlab.training.run_lock import RunFolderLock
from ftlab.validation.checker import UnreadableFileError

DEFAULTS = TrainConfig(data="", out="")
# Fewer optimiser steps than this rarely teach a task (the defaults were chosen on about
# 1,000 examples); aim a suggestion at SUGGESTED_STEPS.
FEW_STEPS, SUGGESTED_STEPS, SMALL_BATCH, MAX_SUGGESTED_EPOCHS = 10, 20, 8, 10


def few_steps_note(data: str | Path, config: TrainConfig) -> str | None:
    """A note for a run on so few examples that it makes only a handful of update steps, with
    settings that make more; None otherwise, or when --max-steps sets the length on purpose."""
    try:
        with open(data, "rb") as handle:
            examples = sum(1 for line in handle if line.strip())
    except OSError:
        return None  # training says what is wrong with the file
    per_epoch = steps_per_epoch(examples, config.batch_size)
    if not examples or config.max_steps is not None or per_epoch * config.epochs >= FEW_STEPS:
        return None
    batch = min(SMALL_BATCH, config.batch_size)
    epochs = max(
        config.epochs,
        min(MAX_SUGGESTED_EPOCHS, -(-SUGGESTED_STEPS // steps_per_epoch(examples, batch))),
    )
    return (
        f"note: {examples} examples at batch {config.batch_size} make only "
        f"{per_epoch * config.epochs} training steps ({config.epochs} epochs), which rarely "
        "teach a task: the defaults were chosen on about 1,000 examples. For this file, "
        f"--epochs {epochs} --batch-size {batch} makes "
        f"{steps_per_epoch(examples, batch) * epochs} steps; more examples help most. Check "
        "the result on examples it was not trained on (ftlab eval)."
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model with LoRA on a chat JSONL file",
        description="Fine-tune with LoRA (only assistant tokens are learned). Writes the adapter, "
        "epoch checkpoints, metrics.jsonl, config.json and loss.png to --out. Ctrl-C stops "
        "cleanly; --resume continues from the last epoch checkpoint.",
    )
    parser.add_argument("--data", required=True, help="training file (chat JSONL)")
    parser.add_argument("--valid", help="validation file: its loss is reported every epoch")
    parser.add_argument("--out", help="output folder (required unless --estimate)")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="base model: the built-in %(default)s (the default), a model folder, or a "
        "Hugging Face hub id (downloaded only because you named it)",
    )
    for flag, kind, what in (
        ("--epochs", positive_int, "passes over the training file"),
        ("--lr", positive_number, "peak learning rate"),
        ("--rank", positive_int, "LoRA rank"),
        ("--alpha", positive_number, "LoRA alpha"),
        ("--batch-size", positive_int, "examples per optimiser step"),
    ):
        default = getattr(DEFAULTS, flag[2:].replace("-", "_"))
        parser.add_argument(flag, type=kind, default=default, help=f"{what} (default: {default})")
    parser.add_argument(
        "--micro-batch-size",
        type=positive_int,
        help="rows per forward pass, to save memory; the update is the same (default: the "
        "whole batch, or even parts when its rows are long)",
    )
    parser.add_argument(
        "--adapted-layers",
        type=_layers,
        default=DEFAULTS.adapted_layers,
        help="LoRA on the top N decoder layers only, or 'all' "
        f"(default: {DEFAULTS.adapted_layers or 'all'}); the "
        "frozen layers below run once, not every step",
    )
    parser.add_argument(
        "--max-length",
        type=positive_int,
        default=DEFAULTS.max_length,
        help="longest example in tokens; longer ones are refused, not cut, and so are those "
        "past the model's context whatever this says (default: %(default)s)",
    )
    parser.add_argument("--max-steps", type=positive_int, help="stop after this many steps in all")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="default: %(default)s")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument(
        "--estimate",
        action="store_true",
        help="do not train: time a few real steps of this run and print how long the whole "
        "run would take on this machine (--out is not needed); with --resume and --out, how "
        "long the rest of that run would take",
    )
    parser.set_defaults(handler=run)


def _with_notes(data: str, config: TrainConfig) -> Callable[[TrainEvent], None]:
    """The progress bar, and the few-steps note once training starts: by then the data has
    passed its checks, so the note never counts the lines of a file about to be refused."""
    bar = ProgressBar()

    def callback(event: TrainEvent) -> None:
        if event.kind == "start" and (note := few_steps_note(data, config)):
            print(note, file=sys.stderr)
        bar(event)

    return callback


def _inside(filename: object, folder: str) -> bool:
    """True if an OSError's `filename` lies in the run's output `folder`."""
    if not isinstance(filename, str | Path):
        return False
    return Path(filename).resolve().is_relative_to(Path(folder).resolve())


def _layers(text: str) -> int | None:
    """`--adapted-layers`: a positive whole number, or "all"."""
    if text.strip().lower() == "all":
        return None
    return positive_int(text)


class _StopOnInterrupt:
    """The first Ctrl-C asks training to stop after the current step; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nstopping after this step; --resume continues from the last epoch's checkpoint "
            "(Ctrl-C again to abort at once) ...",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> int:
    if not args.out and (args.resume or not args.estimate):
        print(
            "error: --out is required (the folder for the adapter and checkpoints)", file=sys.stderr
        )
        return 2
    try:
        config = TrainConfig(
            data=args.data,
            out=args.out or "",
            valid=args.valid,
            model=args.model,
            epochs=args.epochs,
            lr=args.lr,
            rank=args.rank,
            alpha=args.alpha,
            batch_size=args.batch_size,
            micro_batch_size=args.micro_batch_size,
            adapted_layers=args.adapted_layers,
            max_steps=args.max_steps,
            max_length=args.max_length,
            seed=args.seed,
            resume=args.resume,
        )
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    stop = _StopOnInterrupt()  # an estimate has nothing to save: Ctrl-C ends it at once
    previous = signal.signal(signal.SIGINT, signal.default_int_handler if args.estimate else stop)
    lock = RunFolderLock(args.out or ".")  # held from the folder's first check (see run_lock)
    try:
        if not args.estimate and Path(args.out).is_dir():  # (an estimate writes nothing)
            lock.acquire()
            remove_stale_staging(Path(args.out))  # a run a crash left set aside is back first
        # Settings that differ from the run's are refused here, before any note about it.
        # (A missing data file is left to `train`, whose message says how to fix it.)
        # (And an --out that is a file is left to `train` too: no note before its error.)
        nothing_to_resume = (
            args.resume
            and Path(args.data).is_file()
            and not Path(args.out).is_file()
            and resume_point(config, Path(args.out)) is None
        )
        if args.estimate:
            if nothing_to_resume:
                print(f"note: no checkpoint in {args.out}: estimating a whole new run")
            print("timing a few steps of this run (nothing is saved) ...", file=sys.stderr)
            print(f"estimated time: {estimate_time(config).summary()}")
            return 0
        if nothing_to_resume:
            print(f"note: no checkpoint in {args.out} to resume from; starting a new run")
        if not args.resume and is_training_run(Path(args.out)):
            print(
                f"note: {args.out} holds an earlier run: once the data and settings pass their "
                "checks, this run replaces it, deleting it when this run first saves a "
                "checkpoint or its adapter; stopped before then, it puts the earlier run back "
                "(add --resume to continue that run instead, or pass another --out to keep both)",
                file=sys.stderr,
            )
        result = train(
            config, callback=_with_notes(args.data, config), should_stop=lambda: stop.requested
        )
    except InvalidDataError as error:
        print(error, file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        if args.estimate:
            raise
        if notes := getattr(error, "__notes__", None):  # the earlier run was put back
            print(f"\naborted. {notes[0]}", file=sys.stderr)
            return 130
        print(
            "\naborted; the last epoch checkpoint, if one was saved, is still usable: "
            "run the same command with --resume to continue",
            file=sys.stderr,
        )
        return 130
    except (ValueError, ModelNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a file that cannot be read, or the run that cannot be written
        if isinstance(error, UnreadableFileError) or not _inside(error.filename, args.out):
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(
            f"error: cannot write the run to {args.out}: {error.strerror or error} "
            f"({error.filename}).\nFix: choose a folder you can write to, on a disk with free "
            "space (--out).",
            file=sys.stderr,
        )
        return 1
    finally:
        lock.release()
        signal.signal(signal.SIGINT, previous)
    if result.stopped and result.kept_earlier_run:
        print(f"stopped. {KEPT_EARLIER_RUN.format(out=args.out)}")
        return 130
    if result.stopped:
        where = result.adapter_dir or "no checkpoint yet"
        print(
            f"stopped; last usable adapter: {where}\n"
            "to continue, run the same command with --resume (a run is saved once an epoch: "
            "the steps done since that checkpoint are done again)"
        )
        return 130
    if result.final_train_loss is not None:
        losses = f"final training loss {result.final_train_loss:.4f}"
    else:  # a finished run resumed: its losses come from its metrics.jsonl, which is gone
        losses = "no training loss to report (the run had already finished; metrics.jsonl has none)"
    if result.final_valid_loss is not None:
        losses += f", validation loss {result.final_valid_loss:.4f}"
    print(
        f"done: {result.total_steps} steps, {result.trained_tokens} tokens in "
        f"{result.elapsed_s:.1f} s; {losses}\nadapter: {result.adapter_dir}\n"
        f"metrics: {result.metrics_path}\nplot: {result.plot_path}"
    )
    return 0
