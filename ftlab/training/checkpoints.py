"""Saving adapters and epoch checkpoints safely, and finding the one to resume from.

Everything is written to a temporary folder next to its destination (`.NAME.tmp-*`),
flushed to the disk (fsync) and then renamed into place, so a folder under its real
name is always complete. Replacing an existing folder takes two renames: the old one
aside to `.NAME.old`, then the new one in. A crash between the two leaves neither
folder under the name, only `.NAME.old`; `remove_stale_staging`, which runs when
training starts, puts that one back (and deletes it when the new folder made it in),
and deletes unfinished temporary folders. So a crash or Ctrl-C never leaves a
half-written checkpoint that looks complete, and the previous one stays usable (in
that one narrow case, once the next run has started).

A new run in the folder of an earlier one sets the earlier run aside (`RunReplacement`)
and deletes it only once the new run has saved a checkpoint or its adapter, so a run
stopped before then leaves the earlier one as it was.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from pickle import UnpicklingError

import torch

from ftlab.files import fsync_folder, fsync_tree, remove_path
from ftlab.models import ADAPTER_SIDECAR
from ftlab.paths import cannot_write_in
from ftlab.training.run_lock import RunFolderLock

TRAINER_STATE = "trainer_state.pt"
CHECKPOINT_NAME = re.compile(r"^epoch-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    epoch: int
    path: Path


# What a save leaves behind when it is interrupted: `.NAME.tmp-XXXX` (a folder still
# being written) or `.NAME.old` (the folder it was replacing; see the module docstring).
LEFTOVER = re.compile(r"^\.(?P<name>.+?)\.(?:old|tmp-.+)$")


def _replace_folder(staging: Path, target: Path) -> None:
    """Move a finished staging folder to `target`, replacing an older one there.

    The staging folder's files are flushed to the disk first, so that after a power cut
    the renamed folder holds the data, not empty files.
    """
    fsync_tree(staging)  # (skipped where the file system cannot sync)
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        fsync_folder(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)
        fsync_folder(target.parent)


def save_adapter(model, folder: Path, base_model: str, extra: dict | None = None) -> Path:
    """Write a standard PEFT adapter folder, plus the sidecar naming its base model.

    PEFT records the base model's cache path, which differs between machines;
    the sidecar records the name `ftlab.models.load_model` resolves instead.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        sidecar = {"base_model": base_model, **(extra or {})}
        (staging / ADAPTER_SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
        _replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def save_checkpoint(
    model,
    optimizer,
    folder: Path,
    base_model: str,
    step: int,
    epoch: int,
    progress: dict | None = None,
) -> Path:
    """An epoch checkpoint: a loadable adapter folder that also holds the optimiser state.

    The trainer state also holds the random number generators' states (the CPU's, and the
    GPU's when the model is on one) and `progress`, the run's counters to carry over on
    resume (`trained_tokens`, `elapsed_s`).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        save_adapter(model, staging / "adapter", base_model, {"step": step, "epoch": epoch})
        for item in (staging / "adapter").iterdir():
            item.rename(staging / item.name)
        (staging / "adapter").rmdir()
        state = {
            "step": step,
            "epoch": epoch,
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            **(progress or {}),
        }
        device = next(model.parameters()).device
        if device.type == "cuda":  # dropout on the GPU draws from the GPU's generator
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        torch.save(state, staging / TRAINER_STATE)
        _replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def damaged(path: Path, error: Exception) -> ValueError:
    """The error for a checkpoint or run record that cannot be read back."""
    if path.name == "config.json":  # the run's record of its settings, not a checkpoint
        return ValueError(
            f"{path}, the record of the run's settings, is damaged ({error}), so --resume "
            "cannot check that it continues the same run.\n"
            "Fix: start the run again without --resume (resume=False); or, if you are sure "
            "the settings and data are the ones this run used, delete that file and resume "
            "from the last checkpoint."
        )
    return ValueError(
        f"{path} is damaged, so the run cannot resume from it ({error}).\n"
        "Fix: delete that checkpoint folder to resume from the one before it, or start the "
        "run again without --resume (resume=False)."
    )


def is_training_run(out: Path) -> bool:
    """True if `out` holds the config.json that `train` writes, or an adapter it saved."""
    saved = [out / "adapter", *(out / "checkpoints").glob("epoch-*")]
    if any((folder / ADAPTER_SIDECAR).is_file() for folder in saved):
        return True
    try:
        record = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict) and isinstance(record.get("config"), dict) and "resolved" in record
    )


def check_output_folder(out: Path) -> None:
    """Refuse an output path that is a file, or a folder holding things `train` did not write.

    A new run replaces `adapter/` and `checkpoints/`, so pointing `out` at an
    unrelated folder would silently delete someone's files.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"The output path {out} is a file. Fix: pass a folder for the run.")
    why = cannot_write_in(out)
    if why:
        raise ValueError(
            f"Cannot write the run to {out}: {why}.\nFix: choose a folder you can write to."
        )
    if not out.is_dir() or is_training_run(out):
        return
    found = sorted(item.name for item in out.iterdir() if not item.name.startswith("."))
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise ValueError(
            f"The output folder {out} already holds files that were not written by a training "
            f"run ({shown}); a run would replace adapter/ and checkpoints/ there.\n"
            "Fix: choose a new or empty folder for the run's output."
        )


def list_checkpoints(out: Path) -> list[Checkpoint]:
    """Complete epoch checkpoints under `out/checkpoints`, oldest first."""
    found = []
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    for folder in root.iterdir():
        match = CHECKPOINT_NAME.match(folder.name)
        if not match or not (folder / TRAINER_STATE).is_file():
            continue
        try:
            step = int(json.loads((folder / ADAPTER_SIDECAR).read_text())["step"])
        except (OSError, KeyError, TypeError, ValueError) as error:
            raise damaged(folder, error) from error
        found.append(Checkpoint(step, int(match.group(1)), folder))
    return sorted(found, key=lambda c: c.epoch)


def load_trainer_state(checkpoint: Checkpoint) -> tuple[dict, dict]:
    """A checkpoint's adapter weights and trainer state (step, optimiser, random state, and
    in checkpoints saved since ftlab recorded them, `trained_tokens` and `elapsed_s`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(checkpoint.path / "adapter_model.safetensors")
        state = torch.load(checkpoint.path / TRAINER_STATE, map_location="cpu", weights_only=False)
    except (EOFError, OSError, RuntimeError, ValueError, SafetensorError, UnpicklingError) as error:
        raise damaged(checkpoint.path, error) from error
    return weights, state


# What a run writes in its folder; `RunReplacement` moves these, and nothing else.
RUN_OUTPUTS = ("adapter", "checkpoints", "metrics.jsonl", "loss.png", "config.json")
REPLACED_RUN = ".replaced-run"
# Markers in REPLACED_RUN: every output of the earlier run was moved in; the earlier run is
# being put back (so a crash part-way through `undo` is finished at the next start).
_SET_ASIDE_COMPLETE, _UNDOING = "complete", "undoing"


class RunReplacement:
    """An earlier run in `out`, set aside while a new (not resumed) run starts in its place.

    Deleting the earlier run's adapter and checkpoints when the new run starts would leave
    neither run after a Ctrl-C or a crash in the new run's first epoch. So `begin` moves
    (renames, never copies) the earlier run's files into `out/.replaced-run`; `commit`
    deletes them once the new run has saved a checkpoint or its adapter; until then `undo`
    puts them back, and after a crash `remove_stale_staging` does, when training next starts.
    Each step can be interrupted (a second Ctrl-C, a crash) and finished later: `commit`
    renames the folder away in one step before deleting it, and `undo` records that it has
    begun, deletes the new run's files, and only then moves the earlier run's back.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.pending = False  # an earlier run is set aside and not yet deleted

    @property
    def folder(self) -> Path:
        return self.out / REPLACED_RUN

    @property
    def doomed(self) -> Path:
        """Where `commit` moves the folder before deleting it."""
        return self.out / f"{REPLACED_RUN}.delete"

    def begin(self) -> None:
        found = [name for name in RUN_OUTPUTS if (self.out / name).exists()]
        if not found:
            return
        remove_path(self.folder)  # (remove_stale_staging has already dealt with an older one)
        self.folder.mkdir()
        self.pending = True
        for name in found:
            (self.out / name).rename(self.folder / name)
        (self.folder / _SET_ASIDE_COMPLETE).touch()
        fsync_folder(self.folder)
        fsync_folder(self.out)

    def commit(self) -> None:
        if not self.pending:
            return
        self.folder.rename(self.doomed)  # one step: never half a folder to put back
        self.pending = False
        fsync_folder(self.out)
        shutil.rmtree(self.doomed, ignore_errors=True)

    def undo(self) -> None:
        """Put the earlier run back, deleting what the new run wrote in its place."""
        self.pending = False  # whatever happens next, never twice at once
        if not self.folder.is_dir():  # committed already
            return
        (self.folder / _UNDOING).touch()
        fsync_folder(self.folder)
        # After a crash part-way through `begin`, what is still in `out` is the earlier
        # run's own: only a complete set-aside means that the rest is the new run's.
        if (self.folder / _SET_ASIDE_COMPLETE).exists():
            for name in RUN_OUTPUTS:
                remove_path(self.out / name)
            fsync_folder(self.out)
            (self.folder / _SET_ASIDE_COMPLETE).unlink()  # from here on, `out` holds only
            fsync_folder(self.folder)  # what was put back
        for name in RUN_OUTPUTS:
            if (self.folder / name).exists():
                (self.folder / name).rename(self.out / name)
        fsync_folder(self.out)
        shutil.rmtree(self.folder, ignore_errors=True)


def _recover_replaced_run(out: Path) -> bool:
    """After a crash: finish a commit or an undo, or put back an earlier run set aside by a
    new run that saved nothing (and delete it if the new run saved a checkpoint). True when
    an earlier run was put back."""
    replacement = RunReplacement(out)
    shutil.rmtree(replacement.doomed, ignore_errors=True)
    folder = replacement.folder
    if not folder.is_dir():
        return False
    replacement.pending = True
    saved = (out / "adapter").is_dir() or any((out / "checkpoints").glob("epoch-*"))
    complete = (folder / _SET_ASIDE_COMPLETE).exists()
    if saved and complete and not (folder / _UNDOING).exists():
        replacement.commit()
        return False
    replacement.undo()
    return True


def remove_stale_staging(out: Path) -> bool:
    """Clean up after a crash in the middle of a save (see the module docstring).

    Deletes unfinished temporary folders; a folder set aside to be replaced
    (`.adapter.old`, `.epoch-N.old`) is put back if its replacement never arrived,
    and deleted otherwise. Only the names that saves use are touched. Last, an earlier
    run set aside by a new run (`RunReplacement`) is put back if the new run saved nothing
    (then True is returned).
    """
    for root, ours in ((out, re.compile(r"^adapter$")), (out / "checkpoints", CHECKPOINT_NAME)):
        if not root.is_dir():
            continue
        for item in list(root.iterdir()):
            match = LEFTOVER.match(item.name)
            if match is None or not ours.match(match.group("name")) or not item.is_dir():
                continue
            target = root / match.group("name")
            if item.name.endswith(".old") and not target.exists():
                item.rename(target)  # the crash came between the two renames
            else:
                shutil.rmtree(item, ignore_errors=True)
    return _recover_replaced_run(out)


def restore_interrupted_run(out: Path) -> bool:
    """Put back the earlier run that a new run, ended before it saved anything (a crash, a
    killed kernel), left set aside in `out` (`RunReplacement`); what the next `train` in
    `out` would do first, so that loading the folder's adapter finds it. True when it put
    one back (False: the new run had saved a checkpoint, so the earlier one was deleted).
    Raises RunFolderBusyError, changing nothing, while a run is training there, in this
    process too (a training callback that loads the run's folder, say)."""
    with RunFolderLock(out, reentrant=False):
        return remove_stale_staging(out)
